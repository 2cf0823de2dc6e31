"""``rewardsql export``: a checkpoint of verl's actor as a Hugging Face model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export(
    checkpoint: Annotated[Path, typer.Option(
        "--checkpoint",
        help="A `rewardsql train` output directory (its newest checkpoint), OUT/global_step_N, "
             "or OUT/global_step_N/actor.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o",
        help="The model directory to write; default OUT/hf_model for the newest checkpoint "
             "(as train writes it), OUT/hf_model_step_N for global_step_N. An earlier export "
             "there is replaced; any other directory is refused.")] = None,
) -> None:
    """Merge a verl FSDP checkpoint of the actor into a Hugging Face model directory (bfloat16)
    with verl's own model merger, for `rerank --policy`, `rm label --policy` or transformers.
    `rewardsql train` does this for the last checkpoint when it ends (unless --no-export).
    """
    from rewardsql.training.export import default_output, export_checkpoint, find_checkpoint

    found = find_checkpoint(checkpoint)
    newest = found.run_dir == checkpoint.expanduser().resolve()
    target = export_checkpoint(found, output or default_output(found, newest=newest))
    typer.echo(f"exported {found.actor_dir} ({found.describe()}) to {target}")
    typer.echo(f"  a Hugging Face model directory: rerank --policy {target}, "
               f"rm label --policy {target}")
