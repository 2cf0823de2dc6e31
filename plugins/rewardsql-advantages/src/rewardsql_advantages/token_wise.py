"""Token-wise advantage: GRPO normalisation per (group, token position)."""

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


def compute_token_wise_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor | None = None,
    index: Any = None,
    epsilon: float | None = None,
    config: Any = None,
    *,
    eos_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise every reward against the same position of the other responses of its group.

    For each group and position t, V = members with mask > 0 at t. If |V| >= 2,
    A[i, t] = (R[i, t] - mean_V) / (std_V + epsilon) for i in V; every other entry is 0.

    Rows in consecutive equal-sized groups (verl's layout) run as a (groups, size, T) view;
    any other grouping (ragged sizes, rows reordered by verl's batch balancing) runs with
    ``index_add_`` / ``index_select`` over the batch dimension.

    Args:
        token_level_rewards: (B, T) float rewards.
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
        # the reshape path needs row-major data; verl's mask is often a slice of a wider tensor
        r = rewards.to(stat_dtype(rewards.dtype)).contiguous()
        valid = _indicator(mask, r.dtype).contiguous()
        size = _contiguous_group_size(groups)
        if size is None:
            out = _any_groups(r, valid, groups, eps)
        else:
            out = _contiguous_groups(r, valid, size, eps)
        out = out.to(rewards.dtype)
        return out, out


def _contiguous_group_size(groups: Groups) -> int | None:
    """The common group size when rows come in consecutive equal-sized groups, else None.

    That is how verl lays out the n rollouts of each prompt, until batch balancing reorders
    them.
    """
    import torch  # on use: loading the plugin (every CLI start) stays light
    g, n_groups = groups
    if n_groups == 0 or g.numel() % n_groups:
        return None
    by_group = g.view(n_groups, -1)
    if bool((by_group == by_group[:, :1]).all()) and bool(
        (torch.bincount(g, minlength=n_groups) == by_group.shape[1]).all()
    ):
        return by_group.shape[1]
    return None


def _indicator(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[mask > 0] as 0.0 / 1.0 in ``dtype`` (multiplying by it is faster than by a bool tensor).

    Integer and bool masks are converted then clamped in place, one pass each and no bool
    temporary; a float mask goes through its sign.
    """
    import torch  # on use: loading the plugin (every CLI start) stays light
    if mask.is_floating_point():
        return torch.sign(mask).to(dtype).clamp_(min=0)
    return mask.to(dtype).clamp_(0, 1)


def _moments(
    s1: torch.Tensor, s2: torch.Tensor, n: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shift, 1 / (std + eps))`` from the sums of d and d**2 over the valid members, where
    d = x - m and m is a first float32 estimate of the mean; ``shift`` = mean(d). ``n`` is the
    number of valid members clamped to at least 1; ``s2`` is overwritten.

    Centring twice makes ties exact: for equal values every d is the same small multiple of an
    ulp, so its sums and mean are exact, the variance is exactly 0 and m + shift is exactly the
    tied value (a plain float32 mean of equal values can be off by an ulp, which divided by
    epsilon gives advantages of order 1e-2). Where only one member is valid it equals its own
    centre, so its advantage is 0 without a separate test.
    """
    shift = s1 / n
    var = s2.addcmul_(s1, shift, value=-1).clamp_min_(0).div_(n.sub(1).clamp_min_(1))
    return shift, var.sqrt_().add_(eps).reciprocal_()


def _contiguous_groups(r: torch.Tensor, valid: torch.Tensor, size: int, eps: float) -> torch.Tensor:
    """Rows in consecutive groups of ``size``: reductions over dim 1 of a (G, size, T) view.

    Allocates one (B, T) buffer besides ``valid``; it becomes the output.
    """
    import torch  # on use: loading the plugin (every CLI start) stays light
    batch, width = r.shape
    rv = r.view(batch // size, size, width)
    vf = valid.view(rv.shape)
    n = vf.sum(1, keepdim=True).clamp_min_(1)
    d = torch.mul(rv, vf)
    mean = d.sum(1, keepdim=True).div_(n)
    d.addcmul_(vf, mean, value=-1)  # (r - mean) on valid entries, 0 elsewhere
    s1 = d.sum(1, keepdim=True)
    s2 = d.square_().sum(1, keepdim=True)
    shift, scale = _moments(s1, s2, n, eps)
    torch.sub(rv, mean.add_(shift), out=d).mul_(vf).mul_(scale)
    return d.view(batch, width)


def _any_groups(r: torch.Tensor, valid: torch.Tensor, groups: Groups, eps: float) -> torch.Tensor:
    """Any grouping (ragged sizes, any row order): per-(group, position) sums by ``index_add_``
    over the batch dimension, and group statistics gathered back with ``index_select``.

    Allocates one (B, T) buffer besides ``valid``: group statistics are gathered into the
    buffer before it is combined with r in place, and ``valid`` is spent on the last one.
    """
    import torch  # on use: loading the plugin (every CLI start) stays light
    g, n_groups = groups
    shape = (n_groups, r.shape[1])
    n = r.new_zeros(shape).index_add_(0, g, valid).clamp_min_(1)
    d = torch.mul(r, valid)
    mean = r.new_zeros(shape).index_add_(0, g, d).div_(n)
    torch.index_select(mean, 0, g, out=d)
    torch.sub(r, d, out=d).mul_(valid)  # (r - mean) on valid entries, 0 elsewhere
    s1 = r.new_zeros(shape).index_add_(0, g, d)
    s2 = r.new_zeros(shape).index_add_(0, g, d.square_())
    shift, scale = _moments(s1, s2, n, eps)
    torch.index_select(mean.add_(shift), 0, g, out=d)
    torch.sub(r, d, out=d).mul_(valid)
    return d.mul_(torch.index_select(scale, 0, g, out=valid))
