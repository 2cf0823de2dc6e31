"""``rewardsql train``: GRPO/PPO on verl 0.9.1 (or the local engine) from one config file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rewardsql.cli.options import CpuMath, cpu_math_or_exit

HELP = (
    "Train a policy with RL: compose verl 0.9.1's config from CONFIG (older verl and seed keys "
    "are translated), apply KEY=VALUE overrides (Hydra syntax: key=v, +new.key=v, ~key), check "
    "it, then launch verl on Ray or the local engine. --dry-run checks everything and writes "
    "OUT/resolved_config.yaml without starting anything."
)


def _one(option: str, value: object, alias_value: object) -> object:
    if value is not None and alias_value is not None and value != alias_value:
        typer.echo(f"error: {option} given twice with different values", err=True)
        raise typer.Exit(2)
    return value if value is not None else alias_value


def train(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(metavar="[KEY=VALUE]...", help="Config overrides in Hydra syntax."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Trainer YAML (verl or seed shape).")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="Checkpoints and resolved config.")
    ] = None,
    algorithm: Annotated[
        str | None,
        typer.Option(help="verl estimator: grpo, gae (ppo), rloo, reinforce_plus_plus, ..."),
    ] = None,
    data_path: Annotated[
        Path | None,
        typer.Option(help="A directory with train.parquet and val.parquet, or one parquet file."),
    ] = None,
    core_algos: Annotated[
        list[str] | None,
        typer.Option(help="Module path or .py file imported first, in every process "
                          "(repeatable)."),
    ] = None,
    core_function: Annotated[
        str | None,
        typer.Option(help="A registered advantage estimator (name or alias); sets "
                          "algorithm.adv_estimator."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Sets trainer.total_epochs.")] = None,
    engine: Annotated[str, typer.Option(help="verl (Ray, GPUs) or local (one machine).")] = "verl",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check everything, write the config, start nothing.")
    ] = False,
    cpu_math: CpuMath = "native",
    # The seed's spellings, kept working but out of the help.
    output_dir_alias: Annotated[Path | None, typer.Option("--output_dir", hidden=True)] = None,
    data_path_alias: Annotated[Path | None, typer.Option("--data_path", hidden=True)] = None,
    core_algos_alias: Annotated[list[str] | None, typer.Option("--core_algos", hidden=True)] = None,
    core_function_alias: Annotated[str | None, typer.Option("--core_function", hidden=True)] = None,
) -> None:
    if cpu_math == "reproducible" and engine != "local":
        typer.echo("error: --cpu-math reproducible is for --engine local (verl's workers compute "
                   "on GPUs)", err=True)
        raise typer.Exit(2)
    threads = cpu_math_or_exit(cpu_math)  # before anything imports torch
    from rewardsql.config import ConfigError
    from rewardsql.train import LaunchError, TrainOptions, build_plan, launch

    out = _one("--output-dir", output_dir, output_dir_alias)
    if out is None:
        typer.echo("error: --output-dir is required", err=True)
        raise typer.Exit(2)
    options = TrainOptions(
        output_dir=Path(out),
        config=config,
        algorithm=algorithm,
        data_path=_one("--data-path", data_path, data_path_alias),
        core_algos=[*(core_algos or []), *(core_algos_alias or [])],
        core_function=_one("--core-function", core_function, core_function_alias),
        epochs=epochs,
        engine=engine,
        overrides=list(overrides or []),
    )
    try:
        if engine == "verl" and not dry_run:
            launch.require_gpu()  # at once: nothing else matters without a GPU
        plan = build_plan(options)
        for line in plan.warnings:
            typer.echo(f"warning: {line}", err=True)
        if dry_run:
            path = launch.dry_run(plan)
            typer.echo(launch.summary(plan))
            for line in plan.notes:
                typer.echo(f"note: {line}")
            typer.echo(f"dry run: config is valid; wrote {path}")
            return
        typer.echo(launch.summary(plan))
        if engine == "local":
            _set_up_torch(threads)
            launch.run_local(plan)
        else:
            launch.run_verl(plan)
    except (ConfigError, LaunchError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:  # a model or file the engine could not load
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


def _set_up_torch(threads: int) -> None:
    import torch

    from rewardsql.cpu_math import cpu_math_label, describe_cpu_math

    if threads:
        torch.set_num_threads(threads)
    typer.echo(f"CPU math:       {cpu_math_label(describe_cpu_math())}, "
               f"{torch.get_num_threads()} torch threads")


def register(root: typer.Typer) -> None:
    """Mount ``rewardsql train`` as a top-level command."""
    root.command(
        "train", help=HELP, short_help="RL training (GRPO, PPO, ...) on verl or the local engine.",
        no_args_is_help=True,
    )(train)
