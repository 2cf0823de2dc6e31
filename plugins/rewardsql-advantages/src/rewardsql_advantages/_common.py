"""Input handling and per-group statistics shared by the estimators.

Everything here is vectorized: group ids are mapped to dense indices with one ``np.unique`` /
``torch.unique`` call and group statistics are ``index_add_`` / ``index_reduce_`` over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import torch

DEFAULT_EPSILON = 1e-6
DEFAULT_WEIGHT_FACTOR = 0.5

#: Config keys read from verl's ``algorithm`` section (or a plain dict). Explicit arguments win.
EPSILON_KEY = "epsilon"
WEIGHT_FACTOR_KEY = "weight_factor"


def config_value(config: Any, key: str, explicit: float | None, default: float) -> float:
    """``explicit`` if given, else ``config[key]`` if present and not None, else ``default``.

    ``config`` may be verl's ``AlgoConfig``, an OmegaConf ``DictConfig``, a dict, or None; all of
    them have ``.get``. A value that is not a number is an error naming the key.
    """
    value: Any = explicit
    if value is None and config is not None:
        getter = getattr(config, "get", None)
        if getter is None:
            raise TypeError(
                f"config must be a mapping (verl AlgoConfig, DictConfig, dict) or None, "
                f"got {type(config).__name__}"
            )
        value = getter(key, None)
    if value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"config key {key!r} must be a number, got {value!r}") from None


def pick_mask(
    response_mask: torch.Tensor | None, eos_mask: torch.Tensor | None, rewards: torch.Tensor
) -> torch.Tensor:
    """The response mask, given as ``response_mask`` (verl) or ``eos_mask`` (published code)."""
    import torch  # on use: loading the plugin (every CLI start) stays light
    mask = response_mask if response_mask is not None else eos_mask
    if mask is None:
        raise ValueError("response_mask (or eos_mask) is required")
    if not isinstance(mask, torch.Tensor):
        mask = torch.as_tensor(mask)
    if mask.shape != rewards.shape:
        raise ValueError(
            f"response_mask has shape {tuple(mask.shape)} but token_level_rewards has "
            f"{tuple(rewards.shape)}"
        )
    return mask.to(rewards.device)


def check_rewards(token_level_rewards: Any) -> torch.Tensor:
    """The reward tensor, checked to be a 2-D floating tensor."""
    import torch  # on use: loading the plugin (every CLI start) stays light
    if not isinstance(token_level_rewards, torch.Tensor):
        raise TypeError(
            f"token_level_rewards must be a torch.Tensor, got {type(token_level_rewards).__name__}"
        )
    if token_level_rewards.dim() != 2:
        raise ValueError(
            f"token_level_rewards must be 2-D (batch, tokens), got shape "
            f"{tuple(token_level_rewards.shape)}"
        )
    if not token_level_rewards.is_floating_point():
        raise TypeError(
            f"token_level_rewards must be floating point, got {token_level_rewards.dtype}"
        )
    return token_level_rewards.detach()


def stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics run in float32 (float64 input keeps float64)."""
    import torch  # on use: loading the plugin (every CLI start) stays light
    return torch.float64 if dtype == torch.float64 else torch.float32


class Groups(NamedTuple):
    """Dense group indices ``idx`` (B,) in ``0..count-1`` on the rewards' device."""

    idx: torch.Tensor
    count: int


def group_index(index: Any, batch_size: int, device: torch.device) -> Groups:
    """Map group ids (numpy object array of uid strings, list, or tensor) to dense indices.

    Equal ids form a group. Unlike verl's ``as_torch_index`` we never coerce strings to numbers,
    so ``"1"`` and ``"01"`` stay different prompts.
    """
    import torch  # on use: loading the plugin (every CLI start) stays light
    if index is None:
        raise ValueError("index (the group id of every sample, verl's 'uid') is required")
    if isinstance(index, torch.Tensor):
        flat = index.reshape(-1)
        if flat.numel() != batch_size:
            raise ValueError(
                f"index has {flat.numel()} entries but the batch has {batch_size} rows"
            )
        uniq, inv = torch.unique(flat, return_inverse=True)
        return Groups(inv.to(device=device, dtype=torch.long), int(uniq.numel()))
    arr = index if isinstance(index, np.ndarray) else _as_array(index)
    arr = arr.reshape(-1)
    if arr.size != batch_size:
        raise ValueError(f"index has {arr.size} entries but the batch has {batch_size} rows")
    try:
        uniq, inv = np.unique(arr, return_inverse=True)
    except TypeError:  # mixed, unorderable ids (e.g. str and int): group by their text
        uniq, inv = np.unique(arr.astype(str), return_inverse=True)
    inv = torch.from_numpy(np.ascontiguousarray(inv.reshape(-1), dtype=np.int64))
    return Groups(inv.to(device=device), int(uniq.size))


class Inputs(NamedTuple):
    """A masked estimator's checked inputs: rewards (detached), mask, epsilon, groups."""

    rewards: torch.Tensor
    mask: torch.Tensor
    eps: float
    groups: Groups


def read_inputs(token_level_rewards: Any, response_mask: torch.Tensor | None,
                eos_mask: torch.Tensor | None, index: Any, epsilon: float | None,
                config: Any) -> Inputs:
    """What every estimator that reads the response mask checks first, each check's error
    naming what is wrong: the rewards, the mask, epsilon (explicit, config, default), the
    group ids."""
    rewards = check_rewards(token_level_rewards)
    mask = pick_mask(response_mask, eos_mask, rewards)
    eps = config_value(config, EPSILON_KEY, epsilon, DEFAULT_EPSILON)
    groups = group_index(index, rewards.shape[0], rewards.device)
    return Inputs(rewards, mask, eps, groups)


def zeros_pair(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(advantages, returns)`` of a batch without tokens."""
    import torch  # on use: loading the plugin (every CLI start) stays light
    empty = torch.zeros_like(rewards)
    return empty, empty


def _as_array(index: Sequence[Any] | Any) -> np.ndarray:
    arr = np.asarray(index)
    if arr.dtype == object or arr.ndim == 1:
        return arr
    out = np.empty(len(index), dtype=object)  # e.g. a list of tuples: keep each as one id
    out[:] = list(index)
    return out


class GroupStats(NamedTuple):
    """Per-sample group statistics of a per-sample value x (all shaped (B,))."""

    centered: torch.Tensor  # x_i - mean of its group
    std: torch.Tensor  # unbiased std of its group (0 for singletons)
    size: torch.Tensor  # size of its group
    low: torch.Tensor  # min of its group
    high: torch.Tensor  # max of its group


def group_stats(x: torch.Tensor, groups: Groups) -> GroupStats:
    """Mean, unbiased std, min and max of ``x`` per group, gathered back to every sample.

    The values are shifted by their group's minimum before summing, so a group whose values are
    all equal gets exactly zero deviations and zero std (a plain float32 mean of equal values can
    be off by one ulp, which divided by epsilon turns into advantages of order 1e-2).
    """
    import torch  # on use: loading the plugin (every CLI start) stays light
    g, n_groups = groups
    zeros = x.new_zeros(n_groups)
    size = zeros.index_add(0, g, torch.ones_like(x))
    low = zeros.scatter_reduce(0, g, x, "amin", include_self=False)[g]
    high = zeros.scatter_reduce(0, g, x, "amax", include_self=False)[g]
    shifted = x - low
    mean = zeros.index_add(0, g, shifted)[g] / size[g]
    centered = shifted - mean
    var = zeros.index_add(0, g, centered * centered)[g] / (size[g] - 1).clamp_min(1)
    return GroupStats(centered, var.sqrt(), size[g], low, high)
