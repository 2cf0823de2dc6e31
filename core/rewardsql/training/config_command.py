"""One shape for the commands that train from a config file with overrides: ``rewardsql sft``
and ``rewardsql rm train``.

Each takes ``--config FILE``, ``KEY=VALUE`` overrides, ``--dry-run`` and ``--cpu-math``; sets the
CPU math before torch is imported, reads and checks the config (a bad one is a ConfigError placed
at the file), and either prints what a dry run checks or trains and prints the result as JSON.
:func:`config_command` makes such a command from what differs: the config's name, the override
example, how to read the config, count the data and train.
"""

# No ``from __future__ import annotations`` here: typer reads each parameter's help from its
# ``Annotated`` type, and that help is built from config_command's arguments, so the annotations
# must be evaluated where the command is defined.

import importlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from rewardsql.errors import ConfigError
from rewardsql.training.options import CpuMath, cpu_math_or_exit


@dataclass(frozen=True)
class DryRunReport:
    """What a dry run prints besides the settings: a data summary per file and closing notes.

    ``describe(rows, path)`` checks every row of a data file (raising ConfigError on a bad one)
    and returns what follows ``"<key>: "`` in its summary note; ``closing`` are notes printed
    last, after the machine's.
    """

    describe: Callable[[list[dict[str, Any]], str], str]
    closing: tuple[str, ...] = ()


def config_command(
    *,
    name: str,
    override_example: str,
    checked: str,
    doc: str,
    config_class: str,
    dry_run: Callable[[Any], DryRunReport],
    trainer: str,
) -> Callable[..., None]:
    """A typer command that trains from a config file with overrides.

    ``name`` names the config in ``--config``'s help ("SFT"), ``override_example`` the overrides'
    example ("learning_rate=2e-5 lora.r=8"), ``checked`` what a dry run validates besides the
    config ("files"). ``config_class`` names the config class
    (``"module:Class"``, an SFTConfig or a subclass), ``trainer`` the function that trains on
    its settings and returns a result with ``to_dict()`` (``"module:function"``);
    ``dry_run(settings)`` says what a dry run reports about the settings. Both are imported,
    and ``dry_run`` imports what it needs, only when the command runs: it sets the CPU math
    before anything imports torch. ``doc`` is the command's help.
    """

    def command(
        config: Annotated[Path, typer.Option("--config", "-c",
                                             help=f"{name} config (JSON or YAML).")],
        overrides: Annotated[
            list[str] | None,
            typer.Argument(help="KEY=VALUE settings that override the file (key=v, +key=v, "
                                f"~key), e.g. {override_example}.", show_default=False),
        ] = None,
        dry_run_only: Annotated[
            bool, typer.Option("--dry-run", help=f"Validate the config and its {checked}, print "
                                                 "the resolved settings, do not train."),
        ] = False,
        cpu_math: CpuMath = "native",
    ) -> None:
        threads = cpu_math_or_exit(cpu_math)  # before anything imports torch
        from rewardsql.training.sft.config import check_paths

        try:
            settings = _resolve(config_class).from_file(config, overrides or ())
            notes = check_paths(settings, source=config)
            if dry_run_only:
                print_dry_run(settings, notes, dry_run(settings))
                return
        except ConfigError as exc:
            raise exc.at(source=config) from None
        if threads:
            import torch

            torch.set_num_threads(threads)
        result = _resolve(trainer)(settings)
        typer.echo(json.dumps(result.to_dict(), indent=2))

    command.__doc__ = doc
    return command


def _resolve(reference: str) -> Any:
    """The object ``"module:name"`` names."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def print_dry_run(settings: Any, notes: list[str], report: DryRunReport) -> None:
    """Check the data files, print the resolved settings, the attention kernel and the notes
    (data summaries first, then path notes, then what this machine lacks, then the closing
    notes)."""
    from rewardsql.training.sft.data import read_rows
    from rewardsql.training.sft.train import attention_implementation, bf16_supported

    for key in ("train_file", "eval_file"):
        path = getattr(settings, key)
        if path:
            notes.insert(0, f"{key}: {report.describe(read_rows(path, key=key), path)}")
    typer.echo(json.dumps(settings.to_dict(), indent=2))
    try:
        attn = attention_implementation(settings.flash_attention)
    except Exception as exc:  # reported, not fatal: the run may be meant for another machine
        attn = f"unavailable here ({exc})"
    typer.echo(f"attention: {attn}")
    if settings.bf16 and not bf16_supported():
        notes.append("bf16 is not supported on this machine: a run here trains in float32")
    if settings.deepspeed is not None and importlib.util.find_spec("deepspeed") is None:
        notes.append("deepspeed is not installed here: pip install rewardsql[deepspeed]")
    notes.extend(report.closing)
    for note in notes:
        typer.echo(f"note: {note}")
    typer.echo("dry run: config is valid; nothing was trained")
