"""Running a :class:`~rewardsql.training.launcher.plan.TrainPlan`: dry run, verl on Ray, or the
local engine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rewardsql.errors import LaunchError, RewardSQLError
from rewardsql.io import atomic_write_text
from rewardsql.section import OUTCOME_WEIGHT_KEY, PROCESS_WEIGHT_KEY
from rewardsql.training.export import HF_MODEL, Checkpoint, export_checkpoint, latest_checkpoint
from rewardsql.training.launcher.plan import (
    TrainPlan,
    _select,
    exports_final_model,
    validate_with_verl,
)
from rewardsql.training.launcher.ray_failures import reported_ray_failures

RESOLVED_CONFIG = "resolved_config.yaml"
#: The local engine's trained policy, a Hugging Face directory (rewardsql.training.local.local).
LOCAL_FINAL_MODEL = "final_model"


def summary(plan: TrainPlan) -> str:
    """A short human summary of what would be trained, on what, and how."""
    c = plan.config

    def data_line(key: str) -> str:
        files = plan.data.get(key)
        if files:
            return ", ".join(f"{f.path} ({f.rows} rows)" for f in files)
        return str(_select(c, key))

    function = plan.reward_function.describe() if plan.reward_function else "verl default"
    def num(key: str) -> str:
        value = _select(c, key)
        return f"{value:g}" if isinstance(value, (int, float)) else str(value)

    lines = [
        f"model:          {_select(c, 'actor_rollout_ref.model.path')}",
        f"train data:     {data_line('data.train_files')}",
        f"val data:       {data_line('data.val_files')}",
        f"estimator:      {plan.estimator.describe()}",
        f"reward manager: {plan.reward_manager.describe()}",
        f"reward fn:      {function}",
        f"reward weights: process {num(PROCESS_WEIGHT_KEY)}, outcome {num(OUTCOME_WEIGHT_KEY)}",
        f"batch:          {_select(c, 'data.train_batch_size')} prompts x "
        f"{_select(c, 'actor_rollout_ref.rollout.n')} responses, mini-batch "
        f"{_select(c, 'actor_rollout_ref.actor.ppo_mini_batch_size')}, lengths "
        f"{_select(c, 'data.max_prompt_length')}+{_select(c, 'data.max_response_length')}",
        f"optimizer:      lr {num('actor_rollout_ref.actor.optim.lr')}, kl loss "
        f"{_select(c, 'actor_rollout_ref.actor.use_kl_loss')} "
        f"({_select(c, 'actor_rollout_ref.actor.kl_loss_type')} "
        f"{num('actor_rollout_ref.actor.kl_loss_coef')})",
        f"epochs:         {_select(c, 'trainer.total_epochs')}",
        (f"GPUs:           {_select(c, 'trainer.nnodes')} node(s) x "
         f"{_select(c, 'trainer.n_gpus_per_node')}, rollout "
         f"{_select(c, 'actor_rollout_ref.rollout.name')}") if plan.options.engine == "verl"
        and plan.options.device != "cpu"
        else f"device:         {_select(c, 'trainer.device')}",
        f"output:         {_select(c, 'trainer.default_local_dir')}",
        f"final model:    {final_model(plan)}",
        f"engine:         {plan.options.engine}",
    ]
    if plan.env_vars:
        lines.append("ray env:        " + " ".join(f"{k}={v}" for k, v in plan.env_vars.items()))
    return "\n".join(lines)


def final_model(plan: TrainPlan) -> str:
    """Where the trained policy ends up as a Hugging Face directory, for the summary."""
    out = Path(str(_select(plan.config, "trainer.default_local_dir")))
    if plan.options.engine == "local":
        return f"{out / LOCAL_FINAL_MODEL} (the local engine saves it when training ends)"
    save_freq = _select(plan.config, "trainer.save_freq")
    if not isinstance(save_freq, int) or save_freq <= 0:
        return f"none (trainer.save_freq={save_freq}: verl saves no checkpoint)"
    if exports_final_model(plan.config, plan.options):
        return (f"{out / HF_MODEL} (the last checkpoint, merged by verl's model merger when "
                "training ends)")
    why = ("--no-export" if not plan.options.export
           else f"strategy {_select(plan.config, 'actor_rollout_ref.actor.strategy')}")
    return f"not exported ({why}); `rewardsql export --checkpoint {out}` makes {out / HF_MODEL}"


def export_final_model(plan: TrainPlan) -> tuple[Checkpoint, Path] | None:
    """After a verl run: its last checkpoint (verl's tracker file) merged into ``OUT/hf_model``;
    the checkpoint and the directory, or None when the run saved no checkpoint (none in ``OUT``,
    or ``trainer.save_freq`` <= 0: a checkpoint of an earlier run there is not this run's
    model).

    Raises:
        LaunchError: the checkpoint cannot be exported (the run's training is kept: the message
            says how to export it again).
    """
    out = Path(str(_select(plan.config, "trainer.default_local_dir")))
    save_freq = _select(plan.config, "trainer.save_freq")
    if not isinstance(save_freq, int) or save_freq <= 0:
        return None
    try:
        found = latest_checkpoint(out)
        if found is None:
            return None
        return found, export_checkpoint(found, out / HF_MODEL)
    except RewardSQLError as exc:  # a config error here is the run's own output: run time
        raise LaunchError(f"training finished, and its last checkpoint was not exported: {exc} "
                          f"(retry with `rewardsql export --checkpoint {out}`)") from None


def resolved_yaml(plan: TrainPlan) -> str:
    """The composed config as YAML, interpolations resolved (a valid ``--config`` again)."""
    from omegaconf import OmegaConf

    header = (
        "# Composed by `rewardsql train`: verl 0.9.1 defaults + the user's config + options.\n"
        "# Feed it back with `rewardsql train --config THIS_FILE ...`.\n"
    )
    return header + OmegaConf.to_yaml(plan.config, resolve=True)


def write_resolved_config(plan: TrainPlan) -> Path:
    """Write ``OUT/resolved_config.yaml`` atomically; return its path."""
    path = plan.options.output_dir.expanduser() / RESOLVED_CONFIG
    atomic_write_text(path, resolved_yaml(plan))
    return path


def dry_run(plan: TrainPlan) -> Path:
    """The engine's own validation, then the resolved config written out. No Ray, no GPU."""
    if plan.options.engine == "local":
        validate_local(plan)
    else:
        validate_with_verl(plan.config)
    return write_resolved_config(plan)


def validate_local(plan: TrainPlan) -> None:
    """The local engine reads the config into its settings, failing on what it cannot honour."""
    try:
        from rewardsql.training.local.settings import read_settings
    except ImportError as exc:
        raise LaunchError(_no_local_engine(exc)) from None
    read_settings(plan.config)


def _no_local_engine(exc: ImportError) -> str:
    return (f"the local engine is not available in this installation (cannot import "
            f"rewardsql.training.local: {exc}); use --engine verl on a GPU machine")


def require_gpu() -> None:
    """Stop before Ray starts when this machine has no CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        raise LaunchError(
            "verl needs CUDA GPUs and this machine has none (torch.cuda.is_available() is "
            "False), so Ray was not started. To train on this machine use `--engine local`; to "
            "check the config without training use `--dry-run`.")


def require_device(device: str | None) -> None:
    """Stop before Ray starts when verl cannot run on ``device`` here: ``cpu`` needs
    rewardsql[verl-cpu]; anything else needs a CUDA GPU and must not carry the CPU switch."""
    from rewardsql.training import verl_cpu

    if device == "cpu":
        verl_cpu.check_versions(companions=True)
        return
    refuse_cpu_switch()
    require_gpu()


def refuse_cpu_switch() -> None:
    """Stop a run on GPUs whose environment carries the switch of verl on the CPU."""
    from rewardsql.training import verl_cpu

    if verl_cpu.enabled():
        raise LaunchError(f"{verl_cpu.SWITCH}=1 is set in the environment: it is for "
                          "`--device cpu` only; unset it to train on GPUs")


def run_verl(plan: TrainPlan) -> None:
    """Train with verl's PPO trainer on Ray, as ``python -m verl.trainer.main_ppo`` would.

    With ``--device cpu`` on the CPU (:mod:`rewardsql.training.verl_cpu`), under its watchdog.
    A failure in one of verl's Ray workers is a :class:`LaunchError` of one line
    (:mod:`.ray_failures`).
    """
    from rewardsql.training import verl_cpu

    on_cpu = plan.options.device == "cpu"
    require_device(plan.options.device)
    if on_cpu:
        os.environ.update(plan.env_vars)
        verl_cpu.install()  # here too: this process may have imported verl before the switch
    from verl.utils.device import auto_set_device

    auto_set_device(plan.config)  # as verl's main() does, before its validation
    validate_with_verl(plan.config)
    write_resolved_config(plan)
    # Ray actors get the variables named in the runtime env (set in the config); the launching
    # process gets them too, so every process sees the same modules.
    os.environ.update(plan.env_vars)
    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo

    if plan.config.trainer.use_v1:
        runner = TaskRunnerV1
    else:
        from verl.trainer.main_ppo_v0 import TaskRunner as runner
    # a worker's exception: one line naming it (inside guarded_run, which shuts Ray down)
    failures = reported_ray_failures(plan.options.output_dir.expanduser().resolve())
    if on_cpu:
        with verl_cpu.guarded_run(), failures:
            run_ppo(plan.config, task_runner_class=runner)
    else:
        with failures:
            run_ppo(plan.config, task_runner_class=runner)


def run_local(plan: TrainPlan) -> Any:
    """Hand the composed config to the single-machine engine (:mod:`rewardsql.training.local`)."""
    try:
        from rewardsql.training.local.local import run_local as engine_run_local
    except ImportError as exc:
        raise LaunchError(_no_local_engine(exc)) from None
    write_resolved_config(plan)
    return engine_run_local(plan.config, plan.options.output_dir.expanduser().resolve())

