"""Outcome GRPO where the outcomes of a group differ; PURE's min-form step credit where they tie.

A group whose responses are all right (or all wrong) gives outcome GRPO no gradient: the dense
rewards of a PRM are needed there, and only there. Where the verifier already ranks a group, a
PRM that shares the policy's blind spots can only blur that ranking (the demo's sum-form runs
lost a little dev accuracy to outcome-only GRPO that way). So each group gets one of two
advantages: ``grpo_weighted``'s on its outcomes when they differ (the same numbers outcome-only
GRPO with ``grpo_weighted`` computes), ``grpo_min_form``'s on its step rewards when they tie.

It reads the same token-reward layout as ``grpo_min_form`` (``sql_prm`` with
``process_placement: step_end``, ``outcome_placement: all_tokens``): every token carries the
outcome part, each step's last token adds the step's score.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from rewardsql_advantages._common import (
    DEFAULT_WEIGHT_FACTOR,
    WEIGHT_FACTOR_KEY,
    config_value,
    read_inputs,
    stat_dtype,
    zeros_pair,
)
from rewardsql_advantages.min_form import REWARD_LAYOUT, min_form_advantages
from rewardsql_advantages.weighted import weighted_scalars


def compute_grpo_process_fallback_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor | None = None,
    index: Any = None,
    weight_factor: float | None = None,
    epsilon: float | None = None,
    config: Any = None,
    *,
    eos_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outcome GRPO on groups whose outcomes differ, min-form process credit on groups whose
    outcomes are all equal.

    c_i = min of R[i] over its valid tokens (mask > 0), the outcome part; 0 for a row without a
    valid token. Per group of n >= 2 samples:
    - if the c_i differ: ``grpo_weighted`` on c, A[i, t] = (c_i - mean) / (std + epsilon) * w_i
      with w_i = wf + (1 - wf) * (c_i - min) / (max - min), on valid tokens;
    - if they are all equal: ``grpo_min_form``'s advantages of the group's rows (a token's
      return is the smallest step reward from its step on, standardised over the group's step
      rewards; zeros when they are all equal too).
    Groups of one sample get zeros.

    Args:
        token_level_rewards: (B, T) float rewards in ``sql_prm``'s step_end + all_tokens layout.
        response_mask: (B, T) mask of response tokens (``eos_mask`` is accepted too).
        index: B group ids (numpy object array of uids, list, or tensor).
        weight_factor: weight of the worst response of a group whose outcomes differ; default
            ``config["weight_factor"]`` or 0.5.
        epsilon: added to the std; default ``config["epsilon"]`` or 1e-6.
        config: verl's algorithm config, a dict, or None.
        **kwargs: anything else verl passes; ignored.

    Returns:
        ``(advantages, returns)``, the same (B, T) tensor twice, in the rewards' dtype and device.
    """
    import torch  # on use: loading the plugin (every CLI start) stays light
    del kwargs
    rewards, mask, eps, groups = read_inputs(token_level_rewards, response_mask, eos_mask, index,
                                             epsilon, config)
    wf = config_value(config, WEIGHT_FACTOR_KEY, weight_factor, DEFAULT_WEIGHT_FACTOR)
    if rewards.numel() == 0:
        return zeros_pair(rewards)
    with torch.no_grad():
        r = rewards.to(stat_dtype(rewards.dtype))
        valid = mask > 0 if mask.dtype != torch.bool else mask
        outcome = torch.where(valid, r, float("inf")).amin(dim=1)
        outcome = torch.where(torch.isinf(outcome), 0.0, outcome)
        scalar, differ = weighted_scalars(outcome, groups, wf, eps)
        by_outcome = scalar.unsqueeze(1) * valid
        by_steps = min_form_advantages(r, mask, groups, eps)
        out = torch.where(differ.unsqueeze(1), by_outcome, by_steps).to(rewards.dtype)
        return out, out


compute_grpo_process_fallback_advantage.reward_layout = REWARD_LAYOUT  # type: ignore[attr-defined]
