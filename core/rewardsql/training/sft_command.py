"""``rewardsql sft``: supervised fine-tuning from a JSON/YAML config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rewardsql.errors import ConfigError
from rewardsql.training.options import CpuMath, cpu_math_or_exit


def sft(
    config: Annotated[Path, typer.Option("--config", "-c", help="SFT config (JSON or YAML).")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="KEY=VALUE settings that override the file (key=v, +key=v, ~key), "
                            "e.g. learning_rate=2e-5 lora.r=8.", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate the config and its files, print the "
                                             "resolved settings, do not train."),
    ] = False,
    cpu_math: CpuMath = "native",
) -> None:
    """Supervised fine-tuning with transformers: loss on response tokens only, resumable."""
    threads = cpu_math_or_exit(cpu_math)  # before anything imports torch
    from rewardsql.training.sft.config import SFTConfig, check_paths

    try:
        settings = SFTConfig.from_file(config, overrides or ())
        notes = check_paths(settings, source=config)
    except ConfigError as exc:
        raise exc.at(source=config) from None
    if dry_run:
        _print_dry_run(settings, notes)
        return
    from rewardsql.training.sft.train import run_sft

    if threads:
        import torch

        torch.set_num_threads(threads)
    result = run_sft(settings)
    typer.echo(json.dumps(result.to_dict(), indent=2))


def _print_dry_run(settings, notes: list[str]) -> None:
    from rewardsql.training.sft.data import read_rows, to_chat
    from rewardsql.training.sft.train import attention_implementation, bf16_supported

    for key in ("train_file", "eval_file"):
        path = getattr(settings, key)
        if path:
            rows = read_rows(path, key=key)
            for i, row in enumerate(rows):
                to_chat(row, f"{path}, example {i}")
            notes.insert(0, f"{key}: {len(rows)} examples")
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
    for note in notes:
        typer.echo(f"note: {note}")
    typer.echo("dry run: config is valid; nothing was trained")
