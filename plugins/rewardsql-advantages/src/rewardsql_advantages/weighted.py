"""Weighted GRPO: outcome GRPO whose advantage shrinks towards the worst response of the group."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from rewardsql_advantages._common import (
    DEFAULT_WEIGHT_FACTOR,
    WEIGHT_FACTOR_KEY,
    Groups,
    config_value,
    group_stats,
    read_inputs,
    stat_dtype,
    zeros_pair,
)


def compute_weighted_grpo_advantage(
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
    """GRPO on the summed reward, scaled by a weight that grows with the score within its group.

    s_i = sum_t R[i, t]; per group A_i = (s_i - mean) / (std + epsilon) * w_i with
    w_i = wf + (1 - wf) * (s_i - min) / (max - min) (w_i = 1 when max == min), broadcast over
    the response mask. Groups of one sample get zeros.

    Args:
        token_level_rewards: (B, T) float rewards.
        response_mask: (B, T) mask of response tokens (``eos_mask`` is accepted too).
        index: B group ids (numpy object array of uids, list, or tensor).
        weight_factor: weight of the worst response; default ``config["weight_factor"]`` or 0.5.
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
        scores = rewards.sum(dim=-1, dtype=stat_dtype(rewards.dtype))
        scalar, _ = weighted_scalars(scores, groups, wf, eps)
        out = torch.empty(rewards.shape, dtype=rewards.dtype, device=rewards.device)
        torch.mul(scalar.unsqueeze(1), mask, out=out)
        return out, out


def weighted_scalars(scores: torch.Tensor, groups: Groups, wf: float, eps: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's weighted-GRPO advantage from its score, and whether its group's scores
    differ (where they do not, or in a group of one, the advantage is 0)."""
    import torch  # on use: loading the plugin (every CLI start) stays light
    stats = group_stats(scores, groups)
    spread = stats.high - stats.low
    weight = torch.where(spread > 0, wf + (1 - wf) * (scores - stats.low) / spread, 1.0)
    scalar = torch.where(stats.size > 1, stats.centered / (stats.std + eps) * weight, 0.0)
    return scalar, spread > 0
