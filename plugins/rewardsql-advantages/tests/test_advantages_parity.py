"""The vectorized estimators against the loop oracle, on random batches and on each edge case.

Random batches here have any layout (rewards outside the mask, negative values): the min-form
estimator's decoding is defined for any rewards, so it is held to its oracle on them too; its own
layout and edge cases are in test_advantages_min_form.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _advantages_batches import Batch, index_as, random_batch
from _advantages_oracle import (
    min_form,
    process_avg_unique,
    process_fallback,
    token_wise,
    weighted,
)
from rewardsql_advantages import (
    compute_grpo_min_form_advantage,
    compute_grpo_process_advantage_avg_unique,
    compute_grpo_process_fallback_advantage,
    compute_token_wise_advantage,
    compute_weighted_grpo_advantage,
)
from rewardsql_advantages._common import group_index
from rewardsql_advantages.token_wise import _contiguous_group_size

RTOL, ATOL = 1e-4, 1e-5
GROUPINGS = ("ragged", "equal", "equal_shuffled")
INDEX_KINDS = ("object", "list", "tensor", "int_list")
ALL = ("process", "weighted", "token_wise", "min_form", "fallback")


def ours(name: str, b: Batch, index=None, **kwargs) -> torch.Tensor:
    fn = {
        "process": compute_grpo_process_advantage_avg_unique,
        "weighted": compute_weighted_grpo_advantage,
        "token_wise": compute_token_wise_advantage,
        "min_form": compute_grpo_min_form_advantage,
        "fallback": compute_grpo_process_fallback_advantage,
    }[name]
    index = b.uids if index is None else index
    adv, ret = fn(token_level_rewards=b.rewards, response_mask=b.mask, index=index, **kwargs)
    assert ret is adv
    return adv


def reference(name: str, b: Batch, **kwargs) -> torch.Tensor:
    if name == "process":
        return process_avg_unique(b.rewards, b.uids, **kwargs)
    if name == "weighted":
        return weighted(b.rewards, b.mask, b.uids, **kwargs)
    if name == "min_form":
        return min_form(b.rewards, b.mask, b.uids, **kwargs)
    if name == "fallback":
        return process_fallback(b.rewards, b.mask, b.uids, **kwargs)
    return token_wise(b.rewards, b.mask, b.uids, **kwargs)


def assert_matches(name: str, b: Batch, index=None, **kwargs) -> None:
    got, want = ours(name, b, index, **kwargs), reference(name, b, **kwargs)
    assert got.dtype == b.rewards.dtype and got.shape == b.rewards.shape
    assert torch.allclose(got.double(), want, rtol=RTOL, atol=ATOL), (
        f"{name}: max abs diff {(got.double() - want).abs().max().item():.3g}\n"
        f"rewards={b.rewards}\nmask={b.mask}\nuids={b.uids}\nours={got}\nref={want}"
    )


@pytest.mark.parametrize("seed", range(200))
def test_random_batches_match_the_oracle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    b = random_batch(rng, grouping=GROUPINGS[seed % 3])
    index = index_as(b.uids, INDEX_KINDS[seed % 4])
    for name in ALL:
        assert_matches(name, b, index)


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_larger_batches_match_the_oracle(grouping: str) -> None:
    rng = np.random.default_rng(1000)
    for _ in range(2):
        b = random_batch(rng, grouping=grouping, max_groups=6, max_size=9, max_width=48)
        for name in ALL:
            assert_matches(name, b)


def test_both_token_wise_paths_are_exercised_and_agree() -> None:
    """Contiguous equal groups take the reshape path, reordered rows the index_add path; the
    same batch in both orders must give the same advantages, row for row."""
    rng = np.random.default_rng(7)
    b = random_batch(rng, grouping="equal", max_groups=5, max_size=6, max_width=32)
    while len(set(b.uids)) < 2 or len(b.uids) == len(set(b.uids)):
        b = random_batch(rng, grouping="equal", max_groups=5, max_size=6, max_width=32)
    perm = torch.from_numpy(rng.permutation(len(b.uids)))
    shuffled = Batch(b.rewards[perm], b.mask[perm], b.uids[perm.numpy()])
    groups = group_index(b.uids, len(b.uids), torch.device("cpu"))
    assert _contiguous_group_size(groups) is not None
    shuffled_groups = group_index(shuffled.uids, len(b.uids), torch.device("cpu"))
    assert _contiguous_group_size(shuffled_groups) is None
    contiguous = ours("token_wise", b)
    general = ours("token_wise", shuffled)
    assert torch.allclose(general, contiguous[perm], rtol=1e-5, atol=1e-6)
    assert_matches("token_wise", b)
    assert_matches("token_wise", shuffled)


def make(rewards: list[list[float]], mask: list[list[int]] | None, uids: list[str]) -> Batch:
    r = torch.tensor(rewards, dtype=torch.float32)
    m = torch.ones_like(r, dtype=torch.int64) if mask is None else torch.tensor(mask)
    return Batch(r, m, np.array(uids, dtype=object))


# -- edge cases named by the spec, one by one ------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_singleton_groups_get_zeros(name: str) -> None:
    b = make([[0.3, 0.0, 1.7], [0.9, 0.2, 0.0], [0.5, 0.5, 0.5]], None, ["a", "b", "b"])
    got = ours(name, b)
    assert torch.equal(got[0], torch.zeros(3))
    assert got[1:].abs().sum() > 0  # the pair next to it is not trivially zero
    assert_matches(name, b)


@pytest.mark.parametrize("name", ["process", "weighted", "token_wise"])
def test_all_equal_groups_get_exact_zeros(name: str) -> None:
    # 0.1 and 0.7 are not exact in binary: a naive float32 mean of ties is off by an ulp
    row = [0.1, 0.7, 0.1, 1.7]
    b = make([row, row, row], None, ["g", "g", "g"])
    assert torch.equal(ours(name, b), torch.zeros(3, 4))
    assert_matches(name, b)


@pytest.mark.parametrize("name", ALL)
def test_all_zero_rows(name: str) -> None:
    b = make([[0, 0, 0, 0], [0.4, 0, 0.6, 1.6], [0, 0, 0, 0]], None, ["g"] * 3)
    assert_matches(name, b)
    if name == "process":  # no step reward, nothing to spread
        assert torch.equal(ours(name, b)[[0, 2]], torch.zeros(2, 4))


@pytest.mark.parametrize("name", ALL)
def test_ties_within_a_group(name: str) -> None:
    b = make(
        [[0.5, 0.5, 1.5], [0.5, 0.5, 1.5], [0.25, 0.75, 0.75], [0.25, 0.0, 0.0]],
        None,
        ["g"] * 4,
    )
    assert_matches(name, b)
    got = ours(name, b)
    assert torch.equal(got[0], got[1])


@pytest.mark.parametrize("name", ALL)
def test_ragged_masks_and_rewards_outside_them(name: str) -> None:
    b = make(
        [[0.2, 0.2, 1.2, 0.0], [0.6, 1.9, 0.0, 0.5], [0.3, 0.0, 0.0, 0.0], [0.9, 0.9, 0.9, 1.9]],
        [[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]],
        ["g"] * 4,
    )
    assert_matches(name, b)
    if name != "process":  # the mask is part of these two definitions
        assert torch.equal(ours(name, b)[b.mask == 0], torch.zeros(int((b.mask == 0).sum())))


def test_values_above_one_at_the_last_token() -> None:
    """Worked example of spec section 1, computed here by hand from the formulas."""
    b = make([[0.5, 0.0, 1.5], [0.2, 0.0, 0.0]], None, ["g", "g"])
    a0, a1 = (0.5 + 1.5) / 2, 0.2  # means of distinct non-zero values
    mu = (a0 + a1) / 2
    sigma = math.sqrt(((a0 - mu) ** 2 + (a1 - mu) ** 2) / 1) + 1e-6
    adv0, adv1 = (a0 - mu) / sigma, (a1 - mu) / sigma
    want = torch.tensor(
        [[0.5 * adv0, 0.0, (1.5 - 1) * adv0], [(1 - 0.2) * adv1, 0.0, 0.0]], dtype=torch.float64
    )
    assert torch.allclose(ours("process", b).double(), want, rtol=RTOL, atol=ATOL)
    assert_matches("process", b)


def test_weighted_worked_example() -> None:
    """Spec section 2 by hand: sums 3, 2, 1 with wf = 0.5 give weights 1, 0.75, 0.5."""
    b = make([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], [[1, 1, 1, 0]] * 3, ["g"] * 3)
    std = 1.0 + 1e-6  # sums 3, 2, 1: mean 2, unbiased std 1
    scalars = [(3 - 2) / std * 1.0, 0.0, (1 - 2) / std * 0.5]
    want = torch.tensor([[s, s, s, 0.0] for s in scalars], dtype=torch.float64)
    assert torch.allclose(ours("weighted", b).double(), want, rtol=RTOL, atol=ATOL)


def test_token_wise_worked_example() -> None:
    """Spec section 3 by hand: position 1 has one valid member, so the group gets 0 there."""
    b = make([[1.0, 5.0], [3.0, 7.0]], [[1, 1], [1, 0]], ["g", "g"])
    z = (1.0 - 2.0) / (math.sqrt(2.0) + 1e-6)
    want = torch.tensor([[z, 0.0], [-z, 0.0]], dtype=torch.float64)
    assert torch.allclose(ours("token_wise", b).double(), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ALL)
def test_negative_rewards(name: str) -> None:
    b = make([[-0.5, 0.0, 1.5], [0.2, -0.2, 0.0], [0.0, 0.7, -1.3]], None, ["g"] * 3)
    assert_matches(name, b)


@pytest.mark.parametrize("name", ALL)
def test_epsilon_and_weight_factor_reach_the_result(name: str) -> None:
    rng = np.random.default_rng(3)
    b = random_batch(rng, grouping="equal", max_groups=3, max_size=4, max_width=8)
    kwargs = {"epsilon": 0.25}
    if name in ("weighted", "fallback"):
        kwargs["weight_factor"] = 0.1
    assert_matches(name, b, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", ALL)
def test_other_dtypes(name: str, dtype: torch.dtype) -> None:
    """Output in the input dtype; statistics in float32 (float64 for float64 input), so the
    result is the float32 computation on the same values, rounded once to the input dtype."""
    rng = np.random.default_rng(11)
    b = random_batch(rng, grouping="ragged", max_groups=4, max_size=5, max_width=12)
    low = Batch(b.rewards.to(dtype), b.mask, b.uids)
    got = ours(name, low)
    assert got.dtype == dtype
    upcast = Batch(low.rewards.float(), b.mask, b.uids)
    if dtype == torch.float64:
        assert torch.allclose(got, reference(name, low), rtol=1e-9, atol=1e-9)
    else:
        assert torch.equal(got, ours(name, upcast).to(dtype))
        assert torch.allclose(got.double(), reference(name, upcast), rtol=1e-2, atol=1e-2)


def test_float32_statistics_decide_near_ties() -> None:
    """0.1f and 0.9f average to exactly 0.5 in float32 (their float64 mean is 0.49999999),
    so with statistics in float32, as the spec asks, these two responses tie: zero advantage,
    where a float64 computation would give about +-0.0056 (one ulp divided by epsilon)."""
    b = make([[0.1, 0.0, 0.9], [0.5, 0.0, 0.0]], None, ["g", "g"])
    assert torch.equal(ours("process", b), torch.zeros(2, 3))
    assert reference("process", b).abs().max() > 1e-3  # the float64 oracle's reading


def test_process_runs_that_continue_across_rows() -> None:
    """A row starting with the value the previous row ended with still counts that value;
    batches whose size is not a multiple of 8 tokens exercise the padded word scan."""
    b = make(
        [[0.25, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 0.875, 1.5], [1.5, 0.0, 0.0], [0.0, 0.0, 0.25]],
        None,
        ["g", "g", "g", "h", "h"],
    )
    assert_matches("process", b)
    assert ours("process", b)[1].abs().sum() > 0
