"""``rewardsql rm``: the process reward model. ``rm train`` is here; the SQL plugin adds
``rm label`` (step labels by execution) to the same group."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rewardsql.errors import ConfigError
from rewardsql.training.options import CpuMath, cpu_math_or_exit

app = typer.Typer(help="The process reward model (PRM): train it on step labels.",
                  no_args_is_help=True)


@app.command("train")
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="PRM config (JSON or YAML).")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="KEY=VALUE settings that override the file (key=v, +key=v, ~key), "
                            "e.g. label_type=soft lora.r=8.", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate the config and its data, print the "
                                             "resolved settings, do not train."),
    ] = False,
    cpu_math: CpuMath = "native",
) -> None:
    """Train a PRM: cross-entropy over the "+"/"-" logits at each step tag (hard or soft)."""
    threads = cpu_math_or_exit(cpu_math)  # before anything imports torch
    from rewardsql.training.prm.config import PRMConfig
    from rewardsql.training.sft.config import check_paths

    try:
        settings = PRMConfig.from_file(config, overrides or ())
        notes = check_paths(settings, source=config)
        if dry_run:
            _print_dry_run(settings, notes)
            return
    except ConfigError as exc:
        raise exc.at(source=config) from None
    from rewardsql.training.prm.trainer import run_prm

    if threads:
        import torch

        torch.set_num_threads(threads)
    result = run_prm(settings)
    typer.echo(json.dumps(result.to_dict(), indent=2))


def _print_dry_run(settings, notes: list[str]) -> None:
    from rewardsql.training.prm.data import check_record
    from rewardsql.training.sft.data import read_rows
    from rewardsql.training.sft.train import attention_implementation, bf16_supported

    for key in ("train_file", "eval_file"):
        path = getattr(settings, key)
        if path:
            rows = read_rows(path, key=key)
            steps = positives = 0
            for i, row in enumerate(rows, 1):
                _, _, targets = check_record(row, settings, f"{path}, example {i}")
                steps += len(targets)
                positives += sum(t >= 0.5 for t in targets)
            notes.insert(0, f"{key}: {len(rows)} examples, {steps} steps, {positives} \"+\"")
    typer.echo(json.dumps(settings.to_dict(), indent=2))
    try:
        attn = attention_implementation(settings.flash_attention)
    except Exception as exc:  # reported, not fatal: the run may be meant for another machine
        attn = f"unavailable here ({exc})"
    typer.echo(f"attention: {attn}")
    if settings.bf16 and not bf16_supported():
        notes.append("bf16 is not supported on this machine: a run here trains in float32")
    if settings.deepspeed is not None:
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            notes.append("deepspeed is not installed here: pip install rewardsql[deepspeed]")
    notes.append(f"the tokenizer must encode {settings.step_tag!r} and each of "
                 f"{list(settings.candidate_tokens)} to one token (checked when training)")
    for note in notes:
        typer.echo(f"note: {note}")
    typer.echo("dry run: config is valid; nothing was trained")
