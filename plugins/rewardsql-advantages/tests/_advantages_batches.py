"""Random batches shaped like the spec's parity inputs, for the tests of this plugin.

Random group sizes including 1, ragged masks (sometimes with holes), step rewards at random
positions drawn from a small palette (so ties within a group are common), some all-zero rows,
values above 1 at the last valid token, and now and then rewards outside the mask or below 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# Dyadic values: sums and ties of these are exact in float32. With values like 0.1 and 0.9,
# 0.1f + 0.9f rounds to exactly 1.0 in float32 but not in float64, and epsilon = 1e-6 turns that
# one-ulp difference into advantages of order 1e-2: an ill-conditioning of the definition, not
# a difference between implementations (see test_float32_statistics_decide_near_ties).
PALETTE = (0.125, 0.25, 0.5, 0.75, 0.875, 1.0)


@dataclass
class Batch:
    rewards: torch.Tensor  # (B, T) float32
    mask: torch.Tensor  # (B, T) int64 0/1, like verl's response_mask
    uids: np.ndarray  # (B,) numpy object array of strings, like verl's non_tensor_batch["uid"]


def random_batch(
    rng: np.random.Generator,
    *,
    grouping: str = "ragged",
    max_groups: int = 5,
    max_size: int = 5,
    max_width: int = 16,
    layout: str | None = None,
) -> Batch:
    """One random batch. ``grouping``: ``ragged`` (sizes 1..max_size, shuffled rows),
    ``equal`` (equal sizes, contiguous) or ``equal_shuffled``. ``layout``: ``sparse``
    (isolated step rewards), ``filled`` (runs of equal values) or None (either, per row)."""
    n_groups = int(rng.integers(1, max_groups + 1))
    if grouping == "ragged":
        sizes = rng.integers(1, max_size + 1, n_groups)
    else:
        sizes = np.full(n_groups, int(rng.integers(1, max_size + 1)))
    group_of_row = np.repeat(np.arange(n_groups), sizes)
    if grouping != "equal":
        rng.shuffle(group_of_row)
    names = [f"uid-{rng.integers(1 << 30):x}-{g}" for g in range(n_groups)]
    uids = np.array([names[g] for g in group_of_row], dtype=object)

    batch, width = len(group_of_row), int(rng.integers(1, max_width + 1))
    lengths = rng.integers(0, width + 1, batch)
    mask = np.arange(width)[None, :] < lengths[:, None]
    if rng.random() < 0.25:  # holes: masks need not be prefixes
        mask &= rng.random((batch, width)) > 0.2
    rewards = np.zeros((batch, width), dtype=np.float32)
    for i in range(batch):
        if lengths[i] == 0 or rng.random() < 0.15:
            continue  # an all-zero row
        row_layout = layout or ("sparse" if rng.random() < 0.5 else "filled")
        rewards[i] = _row(rng, int(lengths[i]), width, row_layout)
    if rng.random() < 0.2:  # rewards outside the mask must not matter where the spec says so
        rewards += (~mask) * (rng.random((batch, width)) < 0.1) * 0.5
    if rng.random() < 0.1:
        rewards[rng.random((batch, width)) < 0.1] *= -1
    return Batch(torch.from_numpy(rewards), torch.from_numpy(mask.astype(np.int64)), uids)


def _row(rng: np.random.Generator, length: int, width: int, layout: str) -> np.ndarray:
    row = np.zeros(width, dtype=np.float32)
    steps = int(rng.integers(1, min(length, 4) + 1))
    ends = np.sort(rng.choice(length, steps, replace=False))
    ends[-1] = length - 1
    scores = [_value(rng) for _ in range(steps)]
    start = 0
    for end, score in zip(ends, scores, strict=True):
        if layout == "filled":
            row[start : end + 1] = score
        else:
            row[end] = score
        start = end + 1
    if rng.random() < 0.5:  # the outcome reward on the last token
        row[length - 1] += 1.0
    return row


def _value(rng: np.random.Generator) -> float:
    if rng.random() < 0.7:
        return float(rng.choice(PALETTE))
    return float(np.float32(rng.random()))


def index_as(uids: np.ndarray, kind: str) -> Any:
    """The same grouping as ``uids`` in another accepted form."""
    if kind == "object":
        return uids
    if kind == "list":
        return list(uids)
    _, inverse = np.unique(uids, return_inverse=True)
    if kind == "tensor":
        return torch.from_numpy(inverse.astype(np.int64) * 7 + 3)  # not 0..G-1 on purpose
    if kind == "int_list":
        return [int(v) for v in inverse]
    raise ValueError(kind)


def min_form_batch(
    rng: np.random.Generator,
    *,
    grouping: str = "ragged",
    max_groups: int = 5,
    max_size: int = 5,
    max_width: int = 16,
) -> Batch:
    """A batch in sql_prm's step_end + all_tokens layout, what ``grpo_min_form`` decodes: the
    outcome part (outcome weight x 0 or 1) on every response token, plus process weight x step
    score on each step's last token. Some responses end with tokens after their last step, some
    have no step (the PRM did not score them), scores come from a small palette (ties within
    and across responses), masks are ragged prefixes (sometimes with holes)."""
    base = random_batch(
        rng, grouping=grouping, max_groups=max_groups, max_size=max_size, max_width=max_width
    )
    batch, width = base.rewards.shape
    mask = base.mask.numpy().astype(bool)
    process_weight = float(rng.choice([0.5, 1.0]))
    outcome_weight = float(rng.choice([0.25, 1.0]))
    rewards = np.zeros((batch, width), dtype=np.float32)
    for i in range(batch):
        tokens = np.flatnonzero(mask[i])
        if tokens.size == 0:
            continue
        rewards[i, tokens] = outcome_weight * float(rng.random() < 0.5)
        if rng.random() < 0.15 or tokens.size < 2:
            continue  # no step: every token carries the outcome part alone
        steps = int(rng.integers(1, min(tokens.size - 1, 4) + 1))
        # fewer step ends than tokens: the outcome part shows alone on at least one token
        ends = np.sort(rng.choice(tokens.size, steps, replace=False))
        if rng.random() < 0.5:  # the last step ends on the last token (still distinct ends)
            ends[-1] = tokens.size - 1
        for end in ends:
            rewards[i, tokens[end]] += np.float32(process_weight * _value(rng))
    return Batch(torch.from_numpy(rewards), base.mask, base.uids)
