"""Advantages and the PPO update, with verl's own functions.

Advantage estimators are called exactly as verl 0.9.1's ``compute_advantage`` calls them; the
policy loss, KL penalty, entropy and aggregation are verl's ``core_algos`` functions, combined as
verl's ``ppo_loss`` combines them (``verl/workers/utils/losses.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rewardsql.api import get_advantage_estimator
from rewardsql.errors import ConfigError, UnknownComponentError
from rewardsql.training.local.rollout import Rollout, forward_log_probs


def resolve_estimator(name: str) -> Callable[..., Any]:
    """A rewardsql estimator plugin by name or alias, else one of verl's built-in estimators."""
    from verl.trainer.ppo import core_algos

    if name == "grpo":  # hard-wired in verl's trainer, never looked up in a registry
        return core_algos.compute_grpo_outcome_advantage
    try:
        return get_advantage_estimator(name)
    except UnknownComponentError:
        pass
    try:
        return core_algos.get_adv_estimator_fn(name)
    except ValueError:
        raise ConfigError(
            f"unknown advantage estimator {name!r}: not a rewardsql plugin (see `rewardsql "
            "plugins list`) nor one of verl's", key="algorithm.adv_estimator") from None


def compute_advantages(name: str, fn: Callable[..., Any], *, token_level_rewards: torch.Tensor,
                       response_mask: torch.Tensor, uids: np.ndarray, algorithm: Any
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), calling ``fn`` with the keywords verl's trainer uses.

    ``algorithm`` is the config's algorithm section as a DictConfig: verl hands the estimator
    ``config.algorithm`` itself, so user keys (``+algorithm.weight_factor=0.7``) reach it.
    """
    if name == "grpo":
        return fn(token_level_rewards=token_level_rewards, response_mask=response_mask,
                  index=uids, norm_adv_by_std_in_grpo=algorithm.get("norm_adv_by_std_in_grpo",
                                                                    True))
    return fn(token_level_rewards=token_level_rewards, response_mask=response_mask,
              config=algorithm, index=uids)


def actor_config(settings: Any) -> Any:
    """verl's ActorConfig with the loss settings, as verl's policy-loss functions expect it."""
    from verl.workers.config import ActorConfig, PolicyLossConfig

    section = settings.actor_section
    policy_loss = {k: v for k, v in (section.get("policy_loss") or {}).items()
                   if k not in ("_target_", "rollout_correction")}
    known = ("clip_ratio", "clip_ratio_low", "clip_ratio_high", "clip_ratio_c",
             "loss_scale_factor", "tau_pos", "tau_neg")
    values = {k: section[k] for k in known if section.get(k) is not None}
    mini = settings.ppo_mini_batch_size * settings.n
    return ActorConfig(
        strategy="fsdp", rollout_n=settings.n, ppo_mini_batch_size=mini,
        ppo_micro_batch_size_per_gpu=settings.ppo_micro_batch_size or mini,
        loss_agg_mode=settings.loss_agg_mode, entropy_coeff=settings.entropy_coeff,
        use_kl_loss=settings.use_kl_loss, kl_loss_coef=settings.kl_loss_coef,
        kl_loss_type=settings.kl_loss_type, ppo_epochs=settings.ppo_epochs,
        policy_loss=PolicyLossConfig(**policy_loss), **values,
    )


def ppo_update(model: Any, optimizer: torch.optim.Optimizer, rollout: Rollout, *,
               old_log_probs: torch.Tensor | None, ref_log_probs: torch.Tensor | None,
               advantages: torch.Tensor, config: Any, settings: Any,
               rng: np.random.Generator) -> dict[str, float]:
    """ppo_epochs passes over the batch in mini-batches of ppo_mini_batch_size * n responses,
    accumulating micro-batches, one clipped optimizer step per mini-batch; returns the means of
    the loss metrics.

    ``old_log_probs=None`` is only for a single optimizer step per batch (one mini-batch, one
    epoch): the policy is then still the rollout policy, and the log-probs of the update's own
    forward pass (detached) are the old log-probs, without a separate forward pass.
    """
    from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn, kl_penalty

    policy_loss_fn = get_policy_loss_fn(config.policy_loss.get("loss_mode", "vanilla"))
    size = len(rollout)
    mini = min(settings.ppo_mini_batch_size * settings.n, size)
    micro = settings.ppo_micro_batch_size or mini
    params = [p for p in model.parameters() if p.requires_grad]
    if old_log_probs is None and (settings.ppo_epochs > 1 or mini < size):
        raise ValueError("old_log_probs are needed when a batch makes several optimizer steps")
    sums: dict[str, float] = {}
    updates = 0
    model.train()
    for _ in range(settings.ppo_epochs):
        order = rng.permutation(size) if settings.actor_shuffle else np.arange(size)
        for start in range(0, size, mini):
            batch = order[start:start + mini]
            mask = rollout.response_mask[batch].bool()
            # normalise over the whole mini-batch, so micro-batching does not change the loss
            config.global_batch_info.update(
                dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=len(batch),
                loss_scale_factor=config.loss_scale_factor)
            optimizer.zero_grad(set_to_none=True)
            step: dict[str, float] = {}
            for m in range(0, len(batch), micro):
                idx = torch.as_tensor(batch[m:m + micro])
                part = rollout.select(idx)
                response_mask = part.response_mask.bool()
                log_prob, entropy = forward_log_probs(model, part, temperature=settings.temperature,
                                                      with_entropy=True)
                old = log_prob.detach() if old_log_probs is None else old_log_probs[idx]
                pg_loss, pg_metrics = policy_loss_fn(
                    old_log_prob=old, log_prob=log_prob,
                    advantages=advantages[idx], response_mask=response_mask,
                    loss_agg_mode=config.loss_agg_mode, config=config, rollout_is_weights=None)
                entropy_loss = agg_loss(loss_mat=entropy, loss_mask=response_mask,
                                        loss_agg_mode=config.loss_agg_mode,
                                        **config.global_batch_info)
                loss = pg_loss - config.entropy_coeff * entropy_loss
                if config.use_kl_loss:
                    assert ref_log_probs is not None
                    kld = kl_penalty(logprob=log_prob, ref_logprob=ref_log_probs[idx],
                                     kl_penalty=config.kl_loss_type)
                    kl_loss = agg_loss(loss_mat=kld, loss_mask=response_mask,
                                       loss_agg_mode=config.loss_agg_mode,
                                       **config.global_batch_info)
                    loss = loss + kl_loss * config.kl_loss_coef
                    _add(step, "actor/kl_loss", kl_loss.item())
                loss.backward()
                weight = len(idx) / len(batch)  # clip fractions are micro-batch means
                for key, value in pg_metrics.items():
                    _add(step, key, float(value) * weight)
                _add(step, "actor/pg_loss", pg_loss.item())
                _add(step, "actor/entropy", entropy_loss.item())
                _add(step, "actor/loss", loss.item())
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=settings.grad_clip)
            finite = bool(torch.isfinite(grad_norm))
            if finite:
                optimizer.step()
            # as verl does: a non-finite gradient skips the update, training goes on
            step["actor/skipped_updates"] = 0.0 if finite else 1.0
            optimizer.zero_grad(set_to_none=True)
            step["actor/grad_norm"] = float(grad_norm)
            for key, value in step.items():
                _add(sums, key, value)
            updates += 1
    return {key: value / updates for key, value in sums.items()}


def _add(target: dict[str, float], key: str, value: float) -> None:
    target[key] = target.get(key, 0.0) + value
