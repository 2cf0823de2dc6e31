"""``rewardsql train``: GRPO/PPO on verl 0.9.1 (or the local engine) from one config file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rewardsql.errors import ConfigError, LaunchError
from rewardsql.training.options import CpuMath, cpu_math_or_exit


def _one(option: str, value: object, alias_value: object) -> object:
    if value is not None and alias_value is not None and value != alias_value:
        raise ConfigError("given twice with different values", source=option)
    return value if value is not None else alias_value


def train(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(metavar="[KEY=VALUE]...", help="Config overrides: key=v, +new.key=v, ~key."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Trainer YAML (verl or original RewardSQL keys)."),
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="Checkpoints and resolved config.")
    ] = None,
    algorithm: Annotated[
        str | None,
        typer.Option(help="grpo, ppo (gae; needs critic.model.path), rloo, "
                          "reinforce_plus_plus, ...: the estimator suited to it is used."),
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
        typer.Option(help="A registered advantage estimator (name or alias), or a plain "
                          "function of a --core-algos module; sets algorithm.adv_estimator."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Sets trainer.total_epochs.")] = None,
    engine: Annotated[str, typer.Option(help="verl (Ray, GPUs) or local (one machine).")] = "verl",
    device: Annotated[
        str | None,
        typer.Option(help="Sets trainer.device: cuda, or cpu (with --engine verl: verl's real "
                          "trainer on the CPU, needs rewardsql[verl-cpu]; small runs only)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check everything, write the config, start nothing.")
    ] = False,
    export: Annotated[
        bool, typer.Option("--export/--no-export",
                           help="With --engine verl: when training ends, merge the last "
                                "checkpoint into a Hugging Face model directory, OUT/hf_model "
                                "(verl's model merger; `rewardsql export` does it for any "
                                "checkpoint). The local engine always writes OUT/final_model.")
    ] = True,
    cpu_math: CpuMath = "native",
    # The original RewardSQL's spellings, kept working but out of the help.
    output_dir_alias: Annotated[Path | None, typer.Option("--output_dir", hidden=True)] = None,
    data_path_alias: Annotated[Path | None, typer.Option("--data_path", hidden=True)] = None,
    core_algos_alias: Annotated[list[str] | None, typer.Option("--core_algos", hidden=True)] = None,
    core_function_alias: Annotated[str | None, typer.Option("--core_function", hidden=True)] = None,
) -> None:
    """Train a policy with RL: compose verl 0.9.1's config from CONFIG (older verl keys and the
    original RewardSQL's are translated), apply KEY=VALUE overrides (key=v, +new.key=v, ~key),
    check it, then launch verl on Ray or the local engine. --dry-run checks everything and writes
    OUT/resolved_config.yaml without starting anything.
    """
    if cpu_math == "reproducible" and engine != "local":
        raise ConfigError("--cpu-math reproducible is for --engine local (verl's workers compute "
                          "on GPUs)")
    threads = cpu_math_or_exit(cpu_math)  # before anything imports torch
    from rewardsql.training.launcher import TrainOptions, build_plan, launch
    from rewardsql.training.launcher.plan import validate_with_verl

    out = _one("--output-dir", output_dir, output_dir_alias)
    if out is None:
        raise ConfigError("--output-dir is required")
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
        device=device,
        export=export,
    )
    if device not in (None, "cpu", "cuda"):
        raise ConfigError(f"expected cpu or cuda, got {device!r}", source="--device")
    launching_verl = engine == "verl" and not dry_run
    if launching_verl and device != "cpu":
        # before the plan imports verl: with the switch set, `import verl` sets up the CPU
        launch.refuse_cpu_switch()
    # Config and usage errors first (exit 2), whatever the engine and the machine: only a valid
    # config is worth a look for a GPU or vLLM's CPU build (exit 1).
    plan = build_plan(options)
    for line in plan.warnings:
        typer.echo(f"warning: {line}", err=True)
    if launching_verl:
        validate_with_verl(plan.config)  # as --dry-run does
        launch.require_device(device)
    path = launch.dry_run(plan) if dry_run else None
    typer.echo(launch.summary(plan))
    for line in plan.notes:  # e.g. which path the rewards take
        typer.echo(f"note: {line}")
    if path is not None:
        typer.echo(f"dry run: config is valid; wrote {path}")
        return
    try:
        if engine == "local":
            _set_up_torch(threads)
            result = launch.run_local(plan)
            typer.echo(f"final model: {result.final_model_dir} (a Hugging Face model directory)")
            return
        launch.run_verl(plan)
    except OSError as exc:  # a model or file the engine could not load
        raise LaunchError(f"{type(exc).__name__}: {exc}") from None
    if not launch.exports_final_model(plan.config, plan.options):
        return
    exported = launch.export_final_model(plan)
    if exported is None:
        typer.echo(f"warning: no checkpoint was saved (trainer.save_freq="
                   f"{plan.config.trainer.save_freq}), so no model was exported", err=True)
    else:
        checkpoint, path = exported
        typer.echo(f"final model: {path} (a Hugging Face model directory, {checkpoint.describe()} "
                   "merged by verl's model merger)")


def _set_up_torch(threads: int) -> None:
    import torch

    from rewardsql.training.cpu_math import cpu_math_label, describe_cpu_math

    if threads:
        torch.set_num_threads(threads)
    typer.echo(f"CPU math:       {cpu_math_label(describe_cpu_math())}, "
               f"{torch.get_num_threads()} torch threads")
