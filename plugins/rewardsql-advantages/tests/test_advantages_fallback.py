"""``grpo_process_fallback``: the loop oracle on batches where tied outcomes are common, and what
the estimator promises: outcome GRPO's own numbers on groups whose outcomes differ,
``grpo_min_form``'s on groups whose outcomes tie."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _advantages_batches import Batch, index_as, min_form_batch
from _advantages_oracle import process_fallback
from rewardsql_advantages import (
    REWARD_LAYOUT,
    compute_grpo_min_form_advantage,
    compute_grpo_process_fallback_advantage,
    compute_weighted_grpo_advantage,
)

RTOL, ATOL = 1e-4, 1e-5
GROUPINGS = ("ragged", "equal", "equal_shuffled")
INDEX_KINDS = ("object", "list", "tensor", "int_list")


def ours(b: Batch, index=None, **kwargs) -> torch.Tensor:
    adv, ret = compute_grpo_process_fallback_advantage(
        token_level_rewards=b.rewards,
        response_mask=b.mask,
        index=b.uids if index is None else index,
        **kwargs,
    )
    assert ret is adv
    return adv


def tied_batch(rng: np.random.Generator, **kwargs) -> Batch:
    """A batch in the step_end + all_tokens layout in which about half of the groups have one
    outcome for all their members (all right or all wrong), as groups often do in training."""
    b = min_form_batch(rng, **kwargs)
    rewards, valid = b.rewards.clone(), b.mask.bool()
    outcome = torch.where(valid, rewards, torch.inf).amin(1)
    for uid in set(b.uids):
        rows = np.flatnonzero(b.uids == uid)
        if rng.random() < 0.5 or not valid[rows].any():
            continue
        common = outcome[rows[valid[rows].any(1).numpy()]].max()
        for i in rows:
            if valid[i].any():  # shift the whole row: steps keep their scores over the outcome
                rewards[i, valid[i]] += common - outcome[i]
    return Batch(rewards, b.mask, b.uids)


def outcome_of(b: Batch) -> torch.Tensor:
    """Each row's outcome part; 0 for a row without a valid token (as a sum of its rewards)."""
    out = torch.where(b.mask.bool(), b.rewards, torch.inf).amin(1)
    return torch.where(torch.isinf(out), 0.0, out)


def tied(b: Batch) -> dict[str, bool]:
    out = outcome_of(b)
    return {u: bool(out[b.uids == u].unique().numel() == 1) for u in set(b.uids)}


@pytest.mark.parametrize("seed", range(120))
def test_batches_with_tied_groups_match_the_oracle(seed: int) -> None:
    rng = np.random.default_rng(20_000 + seed)
    b = tied_batch(rng, grouping=GROUPINGS[seed % 3])
    got = ours(b, index_as(b.uids, INDEX_KINDS[seed % 4]))
    want = process_fallback(b.rewards, b.mask, b.uids)
    assert got.dtype == b.rewards.dtype and got.shape == b.rewards.shape
    assert torch.allclose(got.double(), want, rtol=RTOL, atol=ATOL), (b, got, want)


def test_the_generator_gives_both_kinds_of_group() -> None:
    kinds = {True: 0, False: 0}
    for seed in range(120):
        b = tied_batch(np.random.default_rng(20_000 + seed), grouping=GROUPINGS[seed % 3])
        for uid, is_tied in tied(b).items():
            if (b.uids == uid).sum() > 1:
                kinds[is_tied] += 1
    assert min(kinds.values()) >= 50, kinds


def test_groups_whose_outcomes_differ_get_outcome_grpos_numbers() -> None:
    """Where the outcomes differ, the advantages are those grpo_weighted gives when the outcome
    alone is the reward (the outcome-only run's numbers): the step scores change nothing."""
    rng = np.random.default_rng(4)
    checked = 0
    for _ in range(40):
        b = tied_batch(rng, grouping="ragged", max_groups=6, max_size=6, max_width=20)
        outcome_only = torch.zeros_like(b.rewards)
        last = b.mask.shape[1] - 1 - b.mask.flip(1).argmax(1)  # each row's last valid token
        outcome_only[torch.arange(len(last)), last] = outcome_of(b)
        want, _ = compute_weighted_grpo_advantage(outcome_only, b.mask, b.uids)
        got = ours(b)
        for uid, is_tied in tied(b).items():
            rows = b.uids == uid
            if not is_tied:
                assert torch.allclose(got[rows], want[rows], rtol=RTOL, atol=ATOL)
                checked += int(rows.sum() > 1)
    assert checked > 20


def test_tied_groups_get_min_form_credit() -> None:
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(40):
        b = tied_batch(rng, grouping="equal", max_groups=6, max_size=6, max_width=20)
        want, _ = compute_grpo_min_form_advantage(b.rewards, b.mask, b.uids)
        got = ours(b)
        for uid, is_tied in tied(b).items():
            rows = b.uids == uid
            if is_tied:
                assert torch.equal(got[rows], want[rows])
                checked += int(want[rows].abs().sum() > 0)
    assert checked > 20


def test_worked_example() -> None:
    """Group a: outcomes 1, 0, 0 (outcome GRPO; step scores ignored). Group b: all wrong, two
    steps each (min-form: the worse first step pulls down the whole of its response)."""
    p = 0.5  # process weight
    rows = [
        [1, 1, 1 + p * 0.9, 1],  # a: right
        [0, 0, p * 0.2, 0],  # a: wrong
        [0, 0, 0, p * 0.8],  # a: wrong
        [0, p * 0.75, 0, p * 0.5],  # b: wrong, steps 0.75 then 0.5
        [0, p * 0.25, 0, p * 0.875],  # b: wrong, steps 0.25 then 0.875
    ]
    b = Batch(torch.tensor(rows), torch.ones(5, 4, dtype=torch.long),
              np.array(["a", "a", "a", "b", "b"], dtype=object))
    got = ours(b).double()
    # group a: outcomes 1, 0, 0: mean 1/3, std sqrt(1/3), weights 1, 0.5, 0.5
    std = (1 / 3) ** 0.5 + 1e-6
    for i, scalar in enumerate([(2 / 3) / std, (-1 / 3) / std * 0.5, (-1 / 3) / std * 0.5]):
        assert torch.allclose(got[i], torch.full((4,), scalar, dtype=torch.float64), atol=ATOL)
    # group b: step rewards 0.375, 0.25, 0.125, 0.4375; returns min from each step on
    values = [0.375, 0.25, 0.125, 0.4375]
    mu = sum(values) / 4
    sd = (sum((v - mu) ** 2 for v in values) / 3) ** 0.5 + 1e-6
    want_b = [[0.25, 0.25, 0.25, 0.25], [0.125, 0.125, 0.4375, 0.4375]]
    want = torch.tensor([[(g - mu) / sd for g in row] for row in want_b], dtype=torch.float64)
    assert torch.allclose(got[3:], want, rtol=RTOL, atol=ATOL)


def test_all_right_groups_with_equal_step_scores_get_zeros() -> None:
    row = [1.0, 1.0 + 0.5 * 0.75, 1.0, 1.0 + 0.5 * 0.75]
    b = Batch(torch.tensor([row, row, row]), torch.ones(3, 4, dtype=torch.long),
              np.array(["g"] * 3, dtype=object))
    assert torch.equal(ours(b), torch.zeros(3, 4))


def test_weight_factor_and_epsilon_from_the_config() -> None:
    b = tied_batch(np.random.default_rng(8), grouping="equal", max_groups=4, max_size=5)
    config = {"weight_factor": 0.2, "epsilon": 0.1}
    want = process_fallback(b.rewards, b.mask, b.uids, weight_factor=0.2, epsilon=0.1)
    assert torch.allclose(ours(b, config=config).double(), want, rtol=RTOL, atol=ATOL)


def test_the_declared_layout_is_on_the_function() -> None:
    """It decodes what grpo_min_form decodes, so the launcher's layout check applies to it."""
    assert compute_grpo_process_fallback_advantage.reward_layout is REWARD_LAYOUT
