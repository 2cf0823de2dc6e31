"""Process advantage: a response's advantage from the mean of its distinct step rewards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from rewardsql_advantages._common import (
    DEFAULT_EPSILON,
    EPSILON_KEY,
    check_rewards,
    config_value,
    group_index,
    group_stats,
    stat_dtype,
    zeros_pair,
)


def compute_grpo_process_advantage_avg_unique(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor | None = None,
    index: Any = None,
    epsilon: float | None = None,
    config: Any = None,
    *,
    eos_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO over the mean of each response's distinct non-zero step rewards.

    a_i is the mean of the distinct non-zero values of row i (0 when there are none); within a
    group adv_i = (a_i - mean) / (std + epsilon). Each non-zero reward r becomes
    ``(r - 1 if r > 1 else r) * adv_i`` when adv_i > 0 and ``(1 - r) * adv_i`` otherwise; all
    other positions are 0. The mask is not consulted (accepted for verl's calling convention).

    Args:
        token_level_rewards: (B, T) float rewards; non-zero entries are step/outcome rewards.
        response_mask: unused; ``eos_mask`` is the published code's name for it.
        index: B group ids (numpy object array of uids, list, or tensor).
        epsilon: added to the std; default ``config["epsilon"]`` or 1e-6.
        config: verl's algorithm config, a dict, or None.
        **kwargs: anything else verl passes; ignored.

    Returns:
        ``(advantages, returns)``, the same (B, T) tensor twice, in the rewards' dtype and device.
    """
    import torch  # on use: loading the plugin (every CLI start) stays light
    del response_mask, eos_mask, kwargs  # the mask is not part of this variant's definition
    rewards = check_rewards(token_level_rewards)
    eps = config_value(config, EPSILON_KEY, epsilon, DEFAULT_EPSILON)
    groups = group_index(index, rewards.shape[0], rewards.device)
    if rewards.numel() == 0:
        return zeros_pair(rewards)
    with torch.no_grad():
        r = rewards.to(stat_dtype(rewards.dtype))
        avg, has_negative = _mean_of_distinct_nonzero(r)
        stats = group_stats(avg, groups)
        adv = torch.where(stats.size > 1, stats.centered / (stats.std + eps), 0.0)
        return _spread(r, adv, has_negative, rewards.dtype)


def _mean_of_distinct_nonzero(r: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Per row, the mean of its distinct non-zero values (0.0 for an all-zero row).

    Every distinct non-zero value of a row starts at least one run of equal values, so only the
    run starts are gathered: about one per step in both the sparse and the filled layout. Those
    few are then de-duplicated exactly by sorting on (row, value). Also says whether any reward
    is negative, which selects the output kernel.
    """
    import torch  # on use: loading the plugin (every CLI start) stays light
    batch = r.shape[0]
    rows, values = _run_starts(r)
    order = torch.argsort(values, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]  # by row, then by value
    rows, values = rows[order], values[order]
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = (rows[1:] != rows[:-1]) | (values[1:] != values[:-1])
    rows, values = rows[first], values[first]
    # a few values per row: accumulate in float64 so the mean is rounded once, whatever the order
    wide = values.double()
    total = wide.new_zeros(batch).index_add_(0, rows, wide)
    count = wide.new_zeros(batch).index_add_(0, rows, torch.ones_like(wide))
    has_negative = bool((values < 0).any())
    return (total / count.clamp_min(1)).to(r.dtype), has_negative


def _run_starts(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, values)`` of every non-zero entry that differs from its left neighbour.

    One comparison pass over the flattened batch marks changes (the first column is redone per
    row, since its left neighbour is the previous row's last token). The marks are mostly
    False, so ``nonzero`` runs on them viewed as 64-bit words (8x fewer elements) and only the
    few non-zero words are expanded back to positions.
    """
    import torch  # on use: loading the plugin (every CLI start) stays light
    batch, width = r.shape
    flat = r.reshape(-1)
    n = flat.numel()
    changed = torch.zeros(-(-n // 8) * 8, dtype=torch.bool, device=r.device)
    if n > 1:
        torch.ne(flat[1:], flat[:-1], out=changed[1:n])
    changed[:n].view(batch, width)[:, 0] = True
    words = changed.view(torch.int64).nonzero().squeeze(1)
    hits = changed.view(-1, 8)[words].nonzero()
    positions = words[hits[:, 0]] * 8 + hits[:, 1]
    values = flat[positions]
    keep = values != 0
    return positions[keep] // width, values[keep]


def _spread(
    r: torch.Tensor, adv: torch.Tensor, has_negative: bool, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """A[i, t] from each non-zero reward and the row's advantage.

    Both branches are ``(r - k(r)) * b_i`` with ``b_i = adv_i`` and ``k = [r > 1]`` for
    adv_i > 0, and ``b_i = -adv_i`` and ``k = [r != 0]`` otherwise, which is 0 wherever r is 0.
    With no negative reward, ``[r != 0] = [r > 0]``, so k = [r > thr_i] with a per-row threshold
    (1 or 0), computed in place in the output as sign(max(r - thr, 0)): float passes only, no
    bool or casting temporaries (r - thr > 0 exactly when r > thr).
    """
    import torch  # on use: loading the plugin (every CLI start) stays light
    positive = adv > 0
    scale = torch.where(positive, adv, -adv).unsqueeze(1)
    out = torch.empty(r.shape, dtype=r.dtype, device=r.device)
    if has_negative:
        k = torch.where(positive.unsqueeze(1), r > 1, r != 0)
        torch.sub(r, k.to(r.dtype), out=out)
    else:
        torch.sub(r, positive.to(r.dtype).unsqueeze(1), out=out).clamp_(min=0).sign_()
        torch.sub(r, out, out=out)
    out = out.mul_(scale).to(out_dtype)
    return out, out
