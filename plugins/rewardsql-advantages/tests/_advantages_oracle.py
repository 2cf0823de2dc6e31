"""Reference loops for the advantage variants, written from their definitions: the three of
/work/shared/spec/advantages.md (docs/spec text) and PURE's min-form credit (the plugin README).

The straightforward per-sample, per-position Python loops over float64 tensors, indexing them
element by element as the published functions do. The parity tests compare the vectorized code
against these, and bench/advantages.py times them as the loop baseline. They are deliberately
simple and slow; do not "optimise" them.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def _groups(index: Any) -> dict[Any, list[int]]:
    """Group id -> row numbers, in order of appearance."""
    out: dict[Any, list[int]] = {}
    for i, gid in enumerate(index):
        key = gid.item() if isinstance(gid, torch.Tensor) else gid
        out.setdefault(key, []).append(i)
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _std(values: list[float]) -> float:
    """Unbiased standard deviation (divide by n - 1); needs n >= 2."""
    mu = _mean(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1))


def process_avg_unique(rewards: torch.Tensor, index: Any, epsilon: float = 1e-6) -> torch.Tensor:
    """Spec section 1: process advantage with the mean of distinct non-zero step rewards."""
    r = rewards.double()
    width = r.shape[1]
    out = torch.zeros_like(r)
    for members in _groups(index).values():
        if len(members) < 2:
            continue
        avg = {}
        for i in members:
            distinct = {r[i, t].item() for t in range(width) if r[i, t].item() != 0}
            avg[i] = _mean(list(distinct)) if distinct else 0.0
        values = [avg[i] for i in members]
        mu, sigma = _mean(values), _std(values) + epsilon
        for i in members:
            adv = (avg[i] - mu) / sigma
            for t in range(width):
                v = r[i, t].item()
                if v == 0:
                    continue
                if adv > 0:
                    out[i, t] = (v - 1) * adv if v > 1 else v * adv
                else:
                    out[i, t] = (1 - v) * adv
    return out


def weighted(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    index: Any,
    weight_factor: float = 0.5,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """Spec section 2: weighted GRPO."""
    r, m = rewards.double(), mask.double()
    width = r.shape[1]
    out = torch.zeros_like(r)
    for members in _groups(index).values():
        if len(members) < 2:
            continue
        scores = {i: sum(r[i, t].item() for t in range(width)) for i in members}
        values = list(scores.values())
        mu, sigma, lo, hi = _mean(values), _std(values), min(values), max(values)
        for i in members:
            if hi == lo:
                w = 1.0
            else:
                w = weight_factor + (1 - weight_factor) * (scores[i] - lo) / (hi - lo)
            scalar = (scores[i] - mu) / (sigma + epsilon) * w
            for t in range(width):
                out[i, t] = scalar * m[i, t].item()
    return out


def token_wise(
    rewards: torch.Tensor, mask: torch.Tensor, index: Any, epsilon: float = 1e-6
) -> torch.Tensor:
    """Spec section 3: per (group, position) normalisation over the valid members."""
    r, m = rewards.double(), mask.double()
    width = r.shape[1]
    out = torch.zeros_like(r)
    for members in _groups(index).values():
        if len(members) < 2:
            continue
        for t in range(width):
            valid = [i for i in members if m[i, t].item() > 0]
            if len(valid) <= 1:
                continue
            values = [r[i, t].item() for i in valid]
            mu, sigma = _mean(values), _std(values) + epsilon
            for i in valid:
                out[i, t] = (r[i, t].item() - mu) / sigma
    return out


def min_form(
    rewards: torch.Tensor, mask: torch.Tensor, index: Any, epsilon: float = 1e-6
) -> torch.Tensor:
    """PURE's min-form credit, GRPO-style (README, ``grpo_min_form``), from token rewards in
    sql_prm's step_end + all_tokens layout: decode the outcome part and the step ends of each
    response, a token's return is the smallest step reward from its step on, standardised with
    the mean and unbiased std of every step reward of its group."""
    r, m = rewards.double(), mask.double()
    width = r.shape[1]
    out = torch.zeros_like(r)
    returns: dict[int, list[float]] = {}
    step_rewards: dict[int, list[float]] = {}
    for i in range(r.shape[0]):
        valid = [t for t in range(width) if m[i, t].item() > 0]
        if not valid:
            step_rewards[i] = []
            continue
        outcome = min(r[i, t].item() for t in valid)
        ends = [t for t in valid if r[i, t].item() > outcome]
        step_rewards[i] = [r[i, t].item() for t in ends] if ends else [outcome]
        row = [0.0] * width
        for t in valid:
            later = [r[i, e].item() for e in ends if e >= t]
            if later:
                row[t] = min(later)
            elif ends:  # after the last step end: part of the last step
                row[t] = r[i, ends[-1]].item()
            else:  # no step end: one step of reward `outcome`
                row[t] = outcome
        returns[i] = row
    for members in _groups(index).values():
        values = [v for i in members for v in step_rewards[i]]
        if len(members) < 2 or len(values) < 2:
            continue
        mu, sigma = _mean(values), _std(values) + epsilon
        for i in members:
            for t in range(width):
                if m[i, t].item() > 0:
                    out[i, t] = (returns[i][t] - mu) / sigma
    return out


def process_fallback(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    index: Any,
    weight_factor: float = 0.5,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """``grpo_process_fallback`` (README): per group, the weighted-GRPO formula on the outcome
    parts (each row's smallest reward over its valid tokens) when they differ, this group's rows
    of :func:`min_form` when they are all equal."""
    r, m = rewards.double(), mask.double()
    width = r.shape[1]
    outcomes = []
    for i in range(r.shape[0]):
        valid = [r[i, t].item() for t in range(width) if m[i, t].item() > 0]
        outcomes.append(min(valid) if valid else 0.0)
    by_steps = min_form(rewards, mask, index, epsilon)
    out = torch.zeros_like(r)
    for members in _groups(index).values():
        if len(members) < 2:
            continue
        values = [outcomes[i] for i in members]
        lo, hi = min(values), max(values)
        if hi == lo:
            for i in members:
                out[i] = by_steps[i]
            continue
        mu, sigma = _mean(values), _std(values)
        for i in members:
            w = weight_factor + (1 - weight_factor) * (outcomes[i] - lo) / (hi - lo)
            scalar = (outcomes[i] - mu) / (sigma + epsilon) * w
            for t in range(width):
                out[i, t] = scalar if m[i, t].item() > 0 else 0.0
    return out
