"""The local GRPO engine: one process, CPU or one GPU, verl's config keys and loss functions.

``rewardsql train --engine local`` and ``rewardsql demo`` call :func:`run_local`. Each step:
sample ``rollout.n`` responses per prompt, score them with the reward plugin (one
``score_batch`` call), compute advantages with the estimator plugin (verl's calling convention),
compute old and reference log-probs, and update the policy with verl's PPO loss.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rewardsql.errors import ConfigError
from rewardsql.io import atomic_directory, atomic_write_json
from rewardsql.rewards import RewardResult
from rewardsql.training.environment import describe_environment
from rewardsql.training.local import checkpoint as ckpt
from rewardsql.training.local.data import (
    Prompt,
    batch_indices,
    drawn_prompts,
    read_rows,
    tokenize_prompts,
)
from rewardsql.training.local.evaluate import (
    EvalResult,
    accuracy_of,
    evaluate,
    extra_means,
    requests_for,
    status_counts,
    valid_responses,
)
from rewardsql.training.local.metrics import MetricsWriter, truncate_after
from rewardsql.training.local.rollout import (
    Rollout,
    batched_log_probs,
    concat_rollouts,
    generate,
    pad_id,
)
from rewardsql.training.local.scoring import RewardSource, token_level_rewards
from rewardsql.training.local.settings import Settings, read_settings
from rewardsql.training.local.update import (
    actor_config,
    compute_advantages,
    ppo_update,
    resolve_estimator,
)
from rewardsql.training.pretrained import from_pretrained

logger = logging.getLogger(__name__)

DEV_FILE = "dev.jsonl"
#: The run's config and, for each start (the first and every resume), its environment.
RUN_FILE = "run.json"


@dataclass
class LocalRunResult:
    """What a local run did. ``dev_history`` holds (step, dev accuracy) pairs, step 0 being the
    evaluation before training (``trainer.val_before_train``). ``trained_prompts``: indices into
    data.train_files of the prompts the run sampled, in the order drawn (resumed runs included)."""

    output_dir: Path
    global_step: int
    total_steps: int
    resumed_from: Path | None
    dev_history: list[tuple[int, float]] = field(default_factory=list)
    final_model_dir: Path | None = None
    metrics_path: Path | None = None
    seconds: float = 0.0
    trained_prompts: list[int] = field(default_factory=list)

    @property
    def final_dev_accuracy(self) -> float | None:
        return self.dev_history[-1][1] if self.dev_history else None


def select_device(settings: Settings) -> torch.device:
    """``trainer.device: cpu`` forces the CPU; otherwise the GPU when there is one."""
    if settings.device != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    if settings.device not in ("cpu", "cuda"):
        raise ConfigError(f"expected cpu or cuda, got {settings.device!r}", key="trainer.device")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_tokenizer(settings: Settings) -> Any:
    from transformers import AutoTokenizer

    key = "actor_rollout_ref.model." + ("tokenizer_path" if settings.tokenizer_path else "path")
    tokenizer = from_pretrained(AutoTokenizer, settings.tokenizer_path or settings.model_path,
                                key=key, trust_remote_code=settings.trust_remote_code)
    if settings.custom_chat_template:
        tokenizer.chat_template = settings.custom_chat_template
    if tokenizer.chat_template is None:
        raise ConfigError("the tokenizer has no chat template (set "
                          "actor_rollout_ref.model.custom_chat_template)",
                          key="actor_rollout_ref.model.path")
    return tokenizer


def load_model(path: str | Path, settings: Settings, device: torch.device) -> Any:
    from transformers import AutoModelForCausalLM

    # float32 weights: the local engine is for small models, and fp32 keeps CPU runs exact
    model = from_pretrained(AutoModelForCausalLM, path, key="actor_rollout_ref.model.path",
                            dtype=torch.float32, trust_remote_code=settings.trust_remote_code)
    return model.to(device)


def load_prompts(settings: Settings, tokenizer: Any, *, val: bool) -> list[Prompt]:
    key = "data.val_files" if val else "data.train_files"
    files = settings.val_files if val else settings.train_files
    return tokenize_prompts(
        read_rows(files, key=key), tokenizer, prompt_key=settings.prompt_key,
        reward_fn_key=settings.reward_fn_key, max_prompt_length=settings.max_prompt_length,
        truncation=settings.truncation, filter_overlong=settings.filter_overlong_prompts,
        max_samples=settings.val_max_samples if val else settings.train_max_samples,
        chat_template_kwargs=settings.apply_chat_template_kwargs, key=key)


def make_scheduler(optimizer: torch.optim.Optimizer, settings: Settings, total_steps: int) -> Any:
    from verl.utils.torch_functional import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
    )

    warmup = settings.lr_warmup_steps
    if warmup is None or warmup < 0:
        warmup = int(settings.lr_warmup_steps_ratio * total_steps)
    if settings.lr_scheduler_type == "cosine":
        return get_cosine_schedule_with_warmup(
            optimizer, num_warmup_steps=warmup, num_training_steps=total_steps,
            min_lr_ratio=settings.min_lr_ratio, num_cycles=settings.num_cycles)
    return get_constant_schedule_with_warmup(optimizer, num_warmup_steps=warmup)


def _eval(model: Any, tokenizer: Any, prompts: list[Prompt], reward: RewardSource,
          settings: Settings) -> EvalResult:
    return evaluate(model, tokenizer, prompts, reward, max_new_tokens=settings.response_length,
                    batch_size=settings.val_batch_size or settings.log_prob_micro_batch_size,
                    do_sample=settings.val_do_sample, temperature=settings.val_temperature,
                    top_p=settings.val_top_p, top_k=settings.val_top_k)


def evaluate_model(config: Any, model_path: str | Path | None = None, *,
                   prompt_indices: Sequence[int] | None = None) -> EvalResult:
    """Greedy dev evaluation of ``model_path`` (default: the config's model) on data.val_files
    (only the prompts at ``prompt_indices`` when given), scored with the config's reward plugin.
    """
    settings = read_settings(config)
    if not settings.val_files:
        raise ConfigError("required key is missing", key="data.val_files")
    device = select_device(settings)
    tokenizer = load_tokenizer(settings)
    model = load_model(model_path or settings.model_path, settings, device)
    prompts = load_prompts(settings, tokenizer, val=True)
    if prompt_indices is not None:
        prompts = [prompts[i] for i in prompt_indices]
    reward = RewardSource(settings, tokenizer)
    try:
        return _eval(model, tokenizer, prompts, reward, settings)
    finally:
        reward.close()


def run_local(config: Any, output_dir: Path) -> LocalRunResult:
    """Train with GRPO (or any estimator) in this process; see the module docstring.

    Args:
        config: verl 0.9.1 PPO-trainer-shaped config (DictConfig, or a plain dict with only the
            keys that differ from verl's defaults).
        output_dir: where ``run.json``, ``metrics.jsonl``, ``dev.jsonl``, ``tensorboard/``,
            ``checkpoints/`` and ``final_model/`` go.

    Raises:
        ConfigError: a missing, unknown, mistyped or unsupported key (named in the message).
    """
    started = time.perf_counter()
    settings = read_settings(config)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = select_device(settings)
    seed_everything(settings.rollout_seed)

    tokenizer = load_tokenizer(settings)
    train_prompts = load_prompts(settings, tokenizer, val=False)
    val_prompts = load_prompts(settings, tokenizer, val=True) if settings.val_files else []
    per_epoch = len(train_prompts) // settings.train_batch_size
    total_steps = settings.total_training_steps or per_epoch * settings.total_epochs
    batch_indices(len(train_prompts), settings.train_batch_size, 0, seed=settings.seed,
                  shuffle=settings.shuffle)  # fails early when there is not one batch

    estimator = resolve_estimator(settings.adv_estimator)
    from omegaconf import OmegaConf

    algorithm = OmegaConf.create(settings.algorithm)
    loss_config = actor_config(settings)

    model = load_model(settings.model_path, settings, device)
    ref_model = None
    if settings.use_kl_loss:
        ref_model = load_model(settings.model_path, settings, device).eval()
        ref_model.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=settings.betas,
                                  weight_decay=settings.weight_decay)
    scheduler = make_scheduler(optimizer, settings, total_steps)
    engine_rng = np.random.default_rng(settings.seed)

    ckpt_root = output_dir / "checkpoints"
    # metrics.jsonl and TensorBoard always (trainer.logger's wandb/mlflow are verl-engine only)
    metrics = MetricsWriter(output_dir)
    state = ckpt.TrainerState(global_step=0, epoch=0, batch_in_epoch=0, dev_history=[])
    resumed_from = _find_resume(settings, ckpt_root)
    if resumed_from is not None:
        weights = load_model(resumed_from / "model", settings, device)
        model.load_state_dict(weights.state_dict())
        del weights
        state = ckpt.load_training_state(resumed_from, optimizer=optimizer, scheduler=scheduler,
                                         engine_rng=engine_rng)
        metrics.truncate_after(state.global_step)
        _truncate_dev(output_dir, state.global_step)
        logger.info("resumed from %s (step %d)", resumed_from, state.global_step)
    else:
        metrics.reset()
        (output_dir / DEV_FILE).unlink(missing_ok=True)
    record_start(output_dir / RUN_FILE, settings.raw, device=device.type,
                 step=state.global_step, resumed_from=resumed_from)

    reward = RewardSource(settings, tokenizer)
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=state.global_step, desc="GRPO", unit="step",
               disable=None)
    try:
        if resumed_from is None and settings.val_before_train and val_prompts:
            _dev_eval(0, model, tokenizer, val_prompts, reward, settings, state, metrics,
                      output_dir)
        while state.global_step < total_steps:
            record = _train_step(
                state, model=model, ref_model=ref_model, tokenizer=tokenizer,
                prompts=train_prompts, reward=reward, estimator=estimator, algorithm=algorithm,
                loss_config=loss_config, optimizer=optimizer, scheduler=scheduler,
                engine_rng=engine_rng, settings=settings)
            step = state.global_step
            last = step == total_steps
            record["dev/accuracy"] = None
            due = settings.test_freq > 0 and step % settings.test_freq == 0
            if val_prompts and (last or due):
                record["dev/accuracy"] = _dev_eval(step, model, tokenizer, val_prompts, reward,
                                                   settings, state, metrics, output_dir)
            metrics.write(record)
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward/mean']:.3f}",
                            acc=_fmt(record["accuracy"]), dev=_fmt(record["dev/accuracy"]))
            if settings.save_freq > 0 and (last or step % settings.save_freq == 0):
                ckpt.save_checkpoint(ckpt_root, state, model=model, tokenizer=tokenizer,
                                     optimizer=optimizer, scheduler=scheduler,
                                     engine_rng=engine_rng, keep=settings.max_ckpt_to_keep)
        final_dir = output_dir / "final_model"
        with atomic_directory(final_dir) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    finally:
        bar.close()
        reward.close()
        metrics.close()
    return LocalRunResult(
        output_dir=output_dir, global_step=state.global_step, total_steps=total_steps,
        resumed_from=resumed_from,
        dev_history=[(int(s), float(a)) for s, a in state.dev_history],
        final_model_dir=final_dir, metrics_path=metrics.path,
        seconds=time.perf_counter() - started,
        trained_prompts=drawn_prompts(len(train_prompts), settings.train_batch_size,
                                      state.batches_drawn, seed=settings.seed,
                                      shuffle=settings.shuffle))


def record_start(path: Path, config: dict[str, Any], *, device: str, step: int,
                 resumed_from: Path | None) -> None:
    """Write ``run.json``: the config (plain, as ``Settings.raw``) and the starts of this run,
    this one last.

    A resumed run keeps the earlier starts, so a run continued on another machine, torch or
    CPU arithmetic says so; a fresh run replaces the file.
    """
    starts: list[Any] = []
    if resumed_from is not None:
        try:
            starts = json.loads(path.read_text(encoding="utf-8"))["starts"]
        except (OSError, ValueError, KeyError, TypeError):
            starts = []  # written by an older rewardsql, or lost: the new start still counts
    starts.append({"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "step": step, "resumed_from": str(resumed_from) if resumed_from else None,
                   "environment": describe_environment(device)})
    atomic_write_json(path, {"config": config, "starts": starts})


def on_policy(settings: Settings) -> bool:
    """One optimizer step per batch: the update's first forward pass gives the old log-probs."""
    return settings.ppo_epochs == 1 and settings.ppo_mini_batch_size >= settings.train_batch_size


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _find_resume(settings: Settings, root: Path) -> Path | None:
    if settings.resume_mode == "disable":
        return None
    if settings.resume_mode == "resume_path":
        path = Path(str(settings.resume_from_path)).expanduser()
        if not (path / "trainer_state.json").is_file():
            raise ConfigError(f"not a local-engine checkpoint: {path}",
                              key="trainer.resume_from_path")
        return path
    return ckpt.latest_checkpoint(root)


def _truncate_dev(output_dir: Path, step: int) -> None:
    truncate_after(output_dir / DEV_FILE, step)


def _dev_eval(step: int, model: Any, tokenizer: Any, prompts: list[Prompt], reward: RewardSource,
              settings: Settings, state: ckpt.TrainerState, metrics: MetricsWriter,
              output_dir: Path) -> float:
    import json

    result = _eval(model, tokenizer, prompts, reward, settings)
    state.dev_history.append([step, result.accuracy])
    line = {"step": step, "dev/accuracy": result.accuracy, "dev/reward_mean": result.reward_mean,
            "dev/count": result.count, **{f"dev/status/{k}": v for k, v in result.statuses.items()},
            "dev/per_prompt": result.per_prompt}
    with (output_dir / DEV_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
    if metrics.writer is not None:
        metrics.writer.add_scalar("dev/accuracy", result.accuracy, step)
    return result.accuracy


@dataclass
class _Sampled:
    """The groups one step trains on, and what it took to find them."""

    prompts: list[Prompt]  # one entry per response: n consecutive copies of each prompt
    uids: np.ndarray
    rollout: Rollout
    results: list[RewardResult]
    epoch: int
    batch_in_epoch: int
    t_gen: float = 0.0
    gen_batches: int = 1
    all_results: list[RewardResult] = field(default_factory=list)  # every response sampled
    all_uids: list[str] = field(default_factory=list)


def group_metric(result: RewardResult, metric: str) -> float:
    """The value dynamic sampling compares within a group: ``reward`` (verl's canonical metric,
    the summed reward of the response) or a key of the reward's ``extra`` (``acc``, ...)."""
    if metric in ("reward", "score"):
        return float(sum(result.token_rewards)) if result.token_rewards is not None else float(
            result.score)
    if metric not in result.extra:
        raise ConfigError(f"the reward reports no {metric!r} (it reports "
                          f"{', '.join(sorted(result.extra)) or 'nothing'} besides the score)",
                          key="algorithm.filter_groups.metric")
    return float(result.extra[metric])


def varied_groups(uids: Sequence[str], values: Sequence[float]) -> list[str]:
    """The uids, in order of first appearance, whose values are not all equal."""
    groups: dict[str, list[float]] = {}
    for uid, value in zip(uids, values, strict=True):
        groups.setdefault(uid, []).append(value)
    return [uid for uid, vals in groups.items() if max(vals) != min(vals)]


def _sample(state: ckpt.TrainerState, *, model: Any, tokenizer: Any, prompts: list[Prompt],
            reward: RewardSource, settings: Settings) -> _Sampled:
    """Sample n responses for the next prompt batch and score them. With
    ``algorithm.filter_groups.enable`` (DAPO's dynamic sampling) keep drawing batches and keep
    only groups whose metric differs, until there are ``train_batch_size`` of them: a group of
    equal rewards has zero GRPO advantage and only dilutes the update. The search stops after
    ``max_num_gen_batches`` batches (when positive) or one epoch of prompts; the step then trains
    on the groups found (on the last batch as drawn when none were).
    """
    per_epoch = len(prompts) // settings.train_batch_size
    limit = settings.max_num_gen_batches if settings.max_num_gen_batches > 0 else per_epoch
    kept: list[_Sampled] = []
    n_kept = 0
    all_results: list[RewardResult] = []
    all_uids: list[str] = []
    t_gen = 0.0
    drawn = 0
    while True:
        drawn += 1
        epoch, batch_in_epoch, idx = batch_indices(
            len(prompts), settings.train_batch_size, state.batches_drawn, seed=settings.seed,
            shuffle=settings.shuffle)
        # n consecutive copies of each prompt (verl's repeat(interleave=True)); one uid per prompt
        batch = [prompts[i] for i in idx for _ in range(settings.n)]
        uids = np.array([f"{state.batches_drawn}-{i}" for i in idx for _ in range(settings.n)],
                        dtype=object)
        state.batches_drawn += 1
        t0 = time.perf_counter()
        rollout = generate(model, tokenizer, [p.input_ids for p in batch],
                           max_new_tokens=settings.response_length, do_sample=settings.do_sample,
                           temperature=settings.temperature, top_p=settings.top_p,
                           top_k=settings.top_k, batch_size=settings.log_prob_micro_batch_size)
        t_gen += time.perf_counter() - t0
        results = reward.score(requests_for(batch, valid_responses(rollout), tokenizer))
        out = _Sampled(batch, uids, rollout, results, epoch, batch_in_epoch)
        all_results += results
        all_uids += uids.tolist()
        if not settings.filter_groups:
            break
        wanted = set(varied_groups(uids.tolist(), [group_metric(r, settings.filter_groups_metric)
                                                   for r in results])
                     [:settings.train_batch_size - n_kept])
        rows = [i for i, uid in enumerate(uids.tolist()) if uid in wanted]
        if rows:
            kept.append(_Sampled([batch[i] for i in rows], uids[rows], rollout.select(rows),
                                 [results[i] for i in rows], epoch, batch_in_epoch))
            n_kept += len(wanted)
        if n_kept == settings.train_batch_size or drawn >= limit:
            break
    if settings.filter_groups and kept:
        out = _Sampled(
            [p for k in kept for p in k.prompts], np.concatenate([k.uids for k in kept]),
            concat_rollouts([k.rollout for k in kept], pad_id(tokenizer)),
            [r for k in kept for r in k.results], out.epoch, out.batch_in_epoch)
    elif settings.filter_groups:
        logger.warning("dynamic sampling found no group with differing rewards in %d batches; "
                       "training on the last batch as drawn", drawn)
    out.t_gen, out.gen_batches = t_gen, drawn
    out.all_results, out.all_uids = all_results, all_uids
    return out


def _train_step(state: ckpt.TrainerState, *, model: Any, ref_model: Any, tokenizer: Any,
                prompts: list[Prompt], reward: RewardSource, estimator: Any, algorithm: Any,
                loss_config: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
                engine_rng: np.random.Generator, settings: Settings) -> dict[str, Any]:
    t0 = time.perf_counter()
    sampled = _sample(state, model=model, tokenizer=tokenizer, prompts=prompts, reward=reward,
                      settings=settings)
    rollout = sampled.rollout
    # the outcome weight (rewardsql.section; the original RewardSQL's verifier.reward_coef)
    rewards = token_level_rewards(sampled.results, rollout.response_mask) * settings.outcome_weight

    old_log_probs = None
    if not on_policy(settings):
        old_log_probs = batched_log_probs(model, rollout, temperature=settings.temperature,
                                          batch_size=settings.log_prob_micro_batch_size)
    ref_log_probs = None
    if ref_model is not None:
        ref_log_probs = batched_log_probs(ref_model, rollout, temperature=settings.temperature,
                                          batch_size=settings.log_prob_micro_batch_size)
    advantages, _ = compute_advantages(
        settings.adv_estimator, estimator, token_level_rewards=rewards,
        response_mask=rollout.response_mask, uids=sampled.uids, algorithm=algorithm)
    advantages = advantages.detach().to(rollout.response_mask.device, torch.float32)
    lr = optimizer.param_groups[0]["lr"]
    loss_metrics = ppo_update(model, optimizer, rollout, old_log_probs=old_log_probs,
                              ref_log_probs=ref_log_probs, advantages=advantages,
                              config=loss_config, settings=settings, rng=engine_rng)
    scheduler.step()
    state.global_step += 1
    state.epoch, state.batch_in_epoch = sampled.epoch, sampled.batch_in_epoch + 1
    step_s = time.perf_counter() - t0
    return _step_record(state, sampled, advantages, loss_metrics, lr, step_s, settings)


def _step_record(state: ckpt.TrainerState, sampled: _Sampled, advantages: torch.Tensor,
                 loss_metrics: dict[str, float], lr: float, step_s: float, settings: Settings
                 ) -> dict[str, Any]:
    """One line of metrics.jsonl. Reward, accuracy, statuses and the means of the reward's
    numeric ``extra`` cover every response sampled in the step (with dynamic sampling, also
    those of the groups left out); the rest covers the batch trained on."""
    results = sampled.all_results
    scores = torch.tensor([r.score for r in results], dtype=torch.float32)
    rollout = sampled.rollout
    mask = rollout.response_mask.bool()
    lengths = rollout.response_mask.sum(-1).float()
    valid_adv = advantages[mask]
    n_groups = len(set(sampled.all_uids))
    varied = len(varied_groups(sampled.all_uids, scores.tolist())) / max(n_groups, 1)
    record: dict[str, Any] = {
        "step": state.global_step,
        "epoch": sampled.epoch,
        "reward/mean": scores.mean().item(),
        "reward/std": scores.std().item() if len(scores) > 1 else 0.0,
        "accuracy": accuracy_of(results),
        "reward/groups_with_variance": varied,
        "advantage/mean": valid_adv.mean().item() if valid_adv.numel() else 0.0,
        "advantage/std": valid_adv.std().item() if valid_adv.numel() > 1 else 0.0,
        "actor/kl_loss": loss_metrics.get("actor/kl_loss"),
        "actor/entropy": loss_metrics.get("actor/entropy"),
        "actor/pg_loss": loss_metrics.get("actor/pg_loss"),
        "actor/loss": loss_metrics.get("actor/loss"),
        "actor/grad_norm": loss_metrics.get("actor/grad_norm"),
        "actor/pg_clipfrac": loss_metrics.get("actor/pg_clipfrac"),
        "actor/ppo_kl": loss_metrics.get("actor/ppo_kl"),
        "actor/lr": lr,
        "response_length/mean": lengths.mean().item(),
        "response_length/clip_ratio": (lengths >= settings.response_length).float().mean().item(),
        "perf/tokens_per_s": float(lengths.sum().item() / step_s) if step_s > 0 else None,
        "perf/step_s": step_s,
        "perf/generate_s": sampled.t_gen,
    }
    if settings.filter_groups:
        record["filter_groups/gen_batches"] = sampled.gen_batches
        record["filter_groups/kept_groups"] = len(set(sampled.uids.tolist()))
    for status, count in sorted(status_counts(results).items()):
        record[f"status/{status}"] = count
    for key, mean in extra_means(results).items():
        # the reward's own metrics (sql_prm's prm_status_*, prm_steps, ...) by the names verl
        # reports; a name the engine uses itself keeps the engine's value
        record.setdefault(key, mean)
    return record
