"""PURE's min-form credit assignment (Cheng et al., NeurIPS 2025, arXiv 2504.15275), GRPO-style.

PURE: a token's value is the minimum of the process rewards of its step and every later step
(``V(s_t) = min_{t' >= t} r_t'``), not their sum. A sum rewards piling up high-scoring steps
(a PRM scores steps inaccurately, so the policy learns to hack it); a minimum caps a state's
value at the worst step still to come, as best-of-N with a PRM's "min" does. The outcome
(verifiable) reward is added to every token's value, as PURE adds it to the return.

verl calls an estimator with the token rewards only, so the step scores are read back from them.
That works for one layout of ``sql_prm`` (``process_placement: step_end``,
``outcome_placement: all_tokens``): every token of a response carries the outcome part c_i and
each step's last token carries c_i + its score (>= 0). :data:`REWARD_LAYOUT` declares that
layout; the launcher and the local engine refuse other placements (one line naming the key).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from rewardsql_advantages._common import (
    Groups,
    read_inputs,
    stat_dtype,
    zeros_pair,
)

#: The token-reward layout this estimator decodes, as the settings of the reward manager that
#: writes it (``rewardsql.reward_manager``): attached to the function as ``reward_layout``, where
#: the training wing's checks look for it. ``fill`` puts a step's score on all of its tokens
#: (steps and outcome can no longer be told apart); ``last_token`` puts the outcome on the last
#: token only (where the last step usually ends too).
REWARD_LAYOUT = {"process_placement": "step_end", "outcome_placement": "all_tokens"}


def compute_grpo_min_form_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor | None = None,
    index: Any = None,
    epsilon: float | None = None,
    config: Any = None,
    *,
    eos_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO with PURE's min-form credit: a token's return is the minimum reward of its step and
    the later steps, standardised over every step reward of its group.

    Valid tokens are those with mask > 0. For a row i with at least one valid token:
    c_i = min of R[i] over its valid tokens (the outcome part); its step ends are the valid
    tokens with R[i, t] > c_i, and R at a step end is its step reward (outcome part + score).
    G[i, t] = min of R[i, e] over the step ends e >= t; a token after the last step end belongs
    to the last step; a row with no step end counts as one step of reward c_i over all its
    tokens. Per group of n >= 2 samples, with mu and sigma (unbiased) the mean and std of the
    group's step rewards (one value per step end, c_i for a row without one, at least two):
    A[i, t] = (G[i, t] - mu) / (sigma + epsilon) on valid tokens, 0 elsewhere.

    Args:
        token_level_rewards: (B, T) float rewards in ``sql_prm``'s step_end + all_tokens layout.
        response_mask: (B, T) mask of response tokens (``eos_mask`` is accepted too).
        index: B group ids (numpy object array of uids, list, or tensor).
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
    if rewards.numel() == 0:
        return zeros_pair(rewards)
    with torch.no_grad():
        r = rewards.to(stat_dtype(rewards.dtype))
        out = min_form_advantages(r, mask, groups, eps).to(rewards.dtype)
        return out, out


compute_grpo_min_form_advantage.reward_layout = REWARD_LAYOUT  # type: ignore[attr-defined]


def min_form_advantages(r: torch.Tensor, mask: torch.Tensor, groups: Groups,
                        eps: float) -> torch.Tensor:
    """``grpo_min_form``'s advantages of already checked inputs, in ``r``'s dtype (also
    ``grpo_process_fallback``'s in tied groups).

    A row's returns are constant from one step end to the next, so only a few passes go over
    the batch (the outcome part, the step-end marks, the output) and the rest runs on the list
    of step ends, a few per response: their suffix minima, the group statistics and one value
    per segment of tokens, spread over the segment by a running sum along the row (exact up to
    float rounding of that sum: within an ulp or so).
    """
    import torch  # on use: loading the plugin (every CLI start) stays light
    batch, width = r.shape
    size = batch * width
    invalid = mask <= 0 if mask.dtype != torch.bool else ~mask
    out = torch.empty((batch, width), dtype=r.dtype, device=r.device)  # reused for the output
    torch.where(invalid, torch.tensor(float("inf"), dtype=r.dtype, device=r.device), r, out=out)
    outcome = out.amin(dim=1)  # c_i; +inf for a row with no valid token
    has_valid = outcome < float("inf")
    # the step ends, marked in a buffer padded to whole 64-bit words (see _marked)
    marks = torch.zeros(-(-size // 8) * 8, dtype=torch.bool, device=r.device)
    torch.gt(r, outcome.unsqueeze(1), out=marks[:size].view(batch, width))
    marks[:size].view(batch, width).masked_fill_(invalid, False)
    pos = _marked(marks)  # flat positions (row * width + t) of the step ends, in order
    rows = pos // width
    values = r[rows, pos % width]  # step rewards
    count = torch.bincount(rows, minlength=batch)
    has_step = count > 0
    returns = _suffix_min(values, rows, count)  # G at each step end

    # group statistics over the multiset of step rewards (c_i once for a row with no step end),
    # shifted by the group's smallest so that a group of equal values gives exact zeros
    g, n_groups = groups
    lonely = has_valid & ~has_step  # rows that count as one step of reward c_i
    inf = float("inf")
    row_low = torch.where(lonely, outcome, inf).scatter_reduce(0, rows, values, "amin")
    low = r.new_full((n_groups,), inf).scatter_reduce(0, g, row_low, "amin")
    low = torch.where(torch.isinf(low), 0.0, low)  # groups without a valid token: no statistics
    step_g = g[rows]
    shifted = values - low[step_g]
    lonely_shift = torch.where(lonely, outcome - low[g], 0.0)
    n = r.new_zeros(n_groups).index_add_(0, g, count.to(r.dtype) + lonely.to(r.dtype))
    total = r.new_zeros(n_groups).index_add_(0, g, lonely_shift).index_add_(0, step_g, shifted)
    mean = total / n.clamp_min(1)
    dev = shifted - mean[step_g]
    lonely_dev = torch.where(lonely, lonely_shift - mean[g], 0.0)
    var = r.new_zeros(n_groups).index_add_(0, g, lonely_dev.square())
    var.index_add_(0, step_g, dev.square()).div_((n - 1).clamp_min(1))
    members = torch.bincount(g, minlength=n_groups)
    scored = (members > 1) & (n > 1)  # a group of one, or with one value: zeros
    scale = torch.where(scored, 1.0 / (var.sqrt() + eps), 0.0)

    # segments: each step end closes one; a row's last token closes the tail after its last step
    # end (the last step's return) or, in a row without steps, the whole row (c_i). Each
    # segment's first token gets the difference from the previous segment of its row, and a
    # running sum along the rows spreads the values
    row_end = torch.arange(batch, device=r.device) * width + (width - 1)
    open_tail = torch.ones_like(has_step)  # the row's last token is not a step end
    open_tail[rows[pos == row_end[rows]]] = False
    tail = outcome.clone()
    tail[has_step] = returns[(torch.cumsum(count, 0) - 1)[has_step]]  # each row's last step
    ends = torch.cat([pos, row_end[open_tail]])
    seg_rows = torch.cat([rows, torch.arange(batch, device=r.device)[open_tail]])
    seg_returns = torch.cat([returns, tail[open_tail]])
    order = torch.argsort(ends)
    ends, seg_rows = ends[order], seg_rows[order]
    seg_g = g[seg_rows]
    adv = (seg_returns[order] - low[seg_g] - mean[seg_g]) * scale[seg_g]  # inf: no valid token
    first = torch.ones_like(seg_rows, dtype=torch.bool)
    first[1:] = seg_rows[1:] != seg_rows[:-1]
    step_up = adv.clone()
    step_up[1:] -= torch.where(first[1:], 0.0, adv[:-1])
    starts = torch.where(first, seg_rows * width, 0)
    starts[1:] += torch.where(first[1:], 0, ends[:-1] + 1)
    flat = out.view(-1).zero_()
    flat[starts] = step_up
    return out.cumsum_(1).masked_fill_(invalid, 0.0)  # masked-out, rows without a valid token


def _marked(marks: torch.Tensor) -> torch.Tensor:
    """Positions of the True entries of a 1-D bool tensor whose length is a multiple of 8.

    The marks are mostly False, so ``nonzero`` runs on them viewed as 64-bit words (8x fewer
    elements) and only the few non-zero words are expanded back to positions.
    """
    import torch  # on use: loading the plugin (every CLI start) stays light
    words = marks.view(torch.int64).nonzero().squeeze(1)
    hits = marks.view(-1, 8)[words].nonzero()
    return words[hits[:, 0]] * 8 + hits[:, 1]


def _suffix_min(values: torch.Tensor, rows: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """For each step end (listed row by row, in order), the minimum of its row's values from it
    on: a flip + cummin over a (rows, most steps) table padded with +inf."""
    import torch  # on use: loading the plugin (every CLI start) stays light
    if values.numel() == 0:
        return values
    start = torch.cumsum(count, 0) - count
    rank = torch.arange(values.numel(), device=values.device) - start[rows]
    table = values.new_full((count.numel(), int(count.max())), float("inf"))
    table[rows, rank] = values
    table = table.flip(1).cummin(dim=1).values.flip(1)
    return table[rows, rank]
