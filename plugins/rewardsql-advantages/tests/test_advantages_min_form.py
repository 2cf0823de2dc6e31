"""``grpo_min_form`` (PURE's min-form credit): the loop oracle on batches in the layout it decodes,
worked examples computed by hand, each edge case, and the layout it declares."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _advantages_batches import Batch, index_as, min_form_batch
from _advantages_oracle import min_form
from rewardsql_advantages import REWARD_LAYOUT, compute_grpo_min_form_advantage

RTOL, ATOL = 1e-4, 1e-5
GROUPINGS = ("ragged", "equal", "equal_shuffled")
INDEX_KINDS = ("object", "list", "tensor", "int_list")


def ours(b: Batch, index=None, **kwargs) -> torch.Tensor:
    adv, ret = compute_grpo_min_form_advantage(
        token_level_rewards=b.rewards,
        response_mask=b.mask,
        index=b.uids if index is None else index,
        **kwargs,
    )
    assert ret is adv
    return adv


def assert_matches(b: Batch, index=None, **kwargs) -> None:
    got, want = ours(b, index, **kwargs), min_form(b.rewards, b.mask, b.uids, **kwargs)
    assert got.dtype == b.rewards.dtype and got.shape == b.rewards.shape
    assert torch.allclose(got.double(), want, rtol=RTOL, atol=ATOL), (
        f"max abs diff {(got.double() - want).abs().max().item():.3g}\n"
        f"rewards={b.rewards}\nmask={b.mask}\nuids={b.uids}\nours={got}\nref={want}"
    )


def make(rewards: list[list[float]], mask: list[list[int]] | None, uids: list[str]) -> Batch:
    r = torch.tensor(rewards, dtype=torch.float32)
    m = torch.ones_like(r, dtype=torch.int64) if mask is None else torch.tensor(mask)
    return Batch(r, m, np.array(uids, dtype=object))


def std(values: list[float]) -> float:
    mu = sum(values) / len(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1))


# -- the oracle, on batches in sql_prm's step_end + all_tokens layout ------------------------


@pytest.mark.parametrize("seed", range(150))
def test_layout_batches_match_the_oracle(seed: int) -> None:
    rng = np.random.default_rng(10_000 + seed)
    b = min_form_batch(rng, grouping=GROUPINGS[seed % 3])
    assert_matches(b, index_as(b.uids, INDEX_KINDS[seed % 4]))


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_larger_layout_batches_match_the_oracle(grouping: str) -> None:
    rng = np.random.default_rng(2000)
    for _ in range(3):
        b = min_form_batch(rng, grouping=grouping, max_groups=6, max_size=9, max_width=48)
        assert_matches(b)
        assert ours(b).abs().sum() > 0


def test_the_generator_covers_the_cases() -> None:
    """The random layout batches above include steps, rows without steps, tokens after the last
    step, singleton groups and ties across responses (else the parity test proves less)."""
    seen = {"no_step": 0, "tail": 0, "steps": 0, "singleton": 0, "tie": 0}
    for seed in range(150):
        b = min_form_batch(np.random.default_rng(10_000 + seed), grouping=GROUPINGS[seed % 3])
        sizes = {u: int((b.uids == u).sum()) for u in b.uids}
        seen["singleton"] += sum(1 for n in sizes.values() if n == 1)
        step_values = []
        for row, mask in zip(b.rewards, b.mask.bool(), strict=True):
            if not mask.any():
                continue
            ends = torch.nonzero(mask & (row > row[mask].min())).flatten()
            if ends.numel() == 0:
                seen["no_step"] += 1
                continue
            seen["steps"] += 1
            seen["tail"] += int(bool(mask[ends[-1] + 1 :].any()))
            step_values += row[ends].tolist()
        seen["tie"] += len(step_values) - len(set(step_values))
    assert all(count >= 20 for count in seen.values()), seen


# -- worked examples, by hand from the definition --------------------------------------------


def test_worked_example() -> None:
    """Row 0: outcome part 1 on its 5 tokens, steps ending at t=1 (score .25) and t=3 (.5), a
    token after the last step. Row 1: outcome 0, 3 tokens, steps ending at t=0 (.75) and t=2
    (.125). Step rewards 1.25, 1.5, .75, .125; returns are suffix minima of them."""
    b = make(
        [[1.0, 1.25, 1.0, 1.5, 1.0], [0.75, 0.0, 0.125, 0.0, 0.0]],
        [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]],
        ["g", "g"],
    )
    steps = [1.25, 1.5, 0.75, 0.125]
    mu, sigma = sum(steps) / 4, std(steps) + 1e-6
    returns = [[1.25, 1.25, 1.5, 1.5, 1.5], [0.125, 0.125, 0.125, None, None]]
    want = torch.tensor(
        [[0.0 if g is None else (g - mu) / sigma for g in row] for row in returns],
        dtype=torch.float64,
    )
    got = ours(b).double()
    assert torch.allclose(got, want, rtol=RTOL, atol=ATOL), (got, want)
    assert_matches(b)


def test_a_high_step_after_a_low_one_does_not_lift_the_tokens_before() -> None:
    """The point of min-form: under a sum, the tokens of the bad first step of row 0 would be
    credited with the high later step; here their return is the bad step's reward, the same as
    in row 1, which stops after that bad step."""
    b = make(
        [[0.0, 0.125, 0.0, 0.875, 0.0], [0.0, 0.125, 0.0, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0, 0.0]],
        [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]],
        ["g", "g", "g"],
    )
    got = ours(b)
    assert torch.equal(got[0, :2], got[1, :2])  # same return: .125, the worst step to come
    assert (got[0, :2] < 0).all() and (got[0, 2:] > 0).all()  # after it, the good step counts
    assert (got[1, 2:] == got[1, 1]).all()  # tokens after the last step belong to it
    assert_matches(b)


def test_advantages_never_decrease_along_a_response() -> None:
    """A suffix minimum can only rise with t, so advantages do too (on valid tokens)."""
    for seed in range(40):
        b = min_form_batch(np.random.default_rng(seed), max_width=24)
        adv = ours(b)
        for row, mask in zip(adv, b.mask.bool(), strict=True):
            values = row[mask]
            assert (values[1:] >= values[:-1]).all(), row


# -- edge cases, one by one ------------------------------------------------------------------


def test_singleton_groups_get_zeros() -> None:
    b = make([[0.5, 1.0, 0.5], [0.0, 0.75, 0.0], [0.25, 0.5, 0.25]], None, ["a", "b", "b"])
    got = ours(b)
    assert torch.equal(got[0], torch.zeros(3))
    assert got[1:].abs().sum() > 0
    assert_matches(b)


def test_equal_step_rewards_in_a_group_give_exact_zeros() -> None:
    """Every step reward of the group is 0.9 (the stepless last row counts once), so every
    return is 0.9 and every advantage exactly 0: a naive float32 mean of three 0.9f is off by an
    ulp, which divided by epsilon would give advantages of about 0.06."""
    b = make([[0.1, 0.9, 0.1], [0.0, 0.0, 0.9], [0.9, 0.9, 0.9]], None, ["g"] * 3)
    assert torch.equal(ours(b), torch.zeros(3, 3))
    assert_matches(b)


def test_identical_responses_still_credit_their_steps() -> None:
    """Unlike outcome GRPO, a group of identical responses is not all zeros: its step rewards
    differ, and a token's return is compared with the group's step rewards (as in PURE's
    per-token baseline), so tokens before the bad step go down and the later ones up."""
    row = [0.0, 0.875, 0.0, 0.125, 0.0, 0.75]
    b = make([row, row], None, ["g", "g"])
    got = ours(b)
    assert torch.equal(got[0], got[1])
    assert (got[0, :4] < 0).all() and (got[0, 4:] > 0).all()
    assert_matches(b)


def test_rows_without_steps_count_as_one_step_of_their_outcome() -> None:
    """The PRM scored nothing (no steps, unmapped): every token carries the outcome part alone;
    the row's return is that value on every token, and it counts once in the statistics."""
    b = make([[1.0, 1.0, 1.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0]], None, ["g"] * 3)
    values = [1.0, 0.5, 0.0]
    mu, sigma = sum(values) / 3, std(values) + 1e-6
    want = torch.tensor([[(v - mu) / sigma] * 3 for v in values], dtype=torch.float64)
    assert torch.allclose(ours(b).double(), want, rtol=RTOL, atol=ATOL)
    assert_matches(b)


def test_a_group_without_steps_is_outcome_grpo() -> None:
    """With no step anywhere, min-form is GRPO on the outcome, on every valid token."""
    outcomes = [1.0, 0.0, 0.0, 1.0, 1.0]
    lengths = [4, 2, 5, 1, 3]
    mask = [[int(t < n) for t in range(5)] for n in lengths]
    b = make([[o * m for m in row] for o, row in zip(outcomes, mask, strict=True)], mask, ["g"] * 5)
    mu, sigma = sum(outcomes) / 5, std(outcomes) + 1e-6
    want = torch.tensor(
        [[(o - mu) / sigma * m for m in row] for o, row in zip(outcomes, mask, strict=True)],
        dtype=torch.float64,
    )
    assert torch.allclose(ours(b).double(), want, rtol=RTOL, atol=ATOL)


def test_masked_out_tokens_are_zero_and_ignored() -> None:
    """Rewards outside the mask do not count as steps (nor as the outcome part): here the
    masked-out 0.9 and 0.0 would change both rows' decoding if they were read."""
    b = make(
        [[0.5, 0.75, 0.5, 0.9], [0.0, 0.25, 0.0, 0.0]],
        [[1, 1, 1, 0], [0, 1, 1, 1]],
        ["g", "g"],
    )
    got = ours(b)
    assert got[0, 3] == 0 and got[1, 0] == 0
    clean = make(
        [[0.5, 0.75, 0.5, 0.0], [9.0, 0.25, 0.0, 0.0]], [[1, 1, 1, 0], [0, 1, 1, 1]], ["g", "g"]
    )
    assert torch.equal(ours(clean), got)
    assert_matches(b)


def test_rows_with_an_empty_mask() -> None:
    """A row with no valid token gets zeros and adds nothing to its group's statistics; a group
    left with a single step reward gets zeros (no spread to measure)."""
    b = make(
        [[0.0, 0.0], [0.25, 0.5], [0.0, 0.0], [1.0, 1.0]],
        [[0, 0], [1, 1], [0, 0], [1, 1]],
        ["g", "g", "h", "h"],
    )
    assert torch.equal(ours(b), torch.zeros(4, 2))
    assert_matches(b)


def test_ties_within_a_group() -> None:
    b = make(
        [[0.5, 0.75, 0.5], [0.5, 0.75, 0.5], [0.0, 0.25, 0.875], [0.25, 0.25, 0.25]],
        None,
        ["g"] * 4,
    )
    got = ours(b)
    assert torch.equal(got[0], got[1])
    assert_matches(b)


def test_a_step_scored_exactly_zero_is_no_step() -> None:
    """Documented limit: a step scored exactly 0 leaves its end token at the outcome part, so it
    reads as no step (as avg_unique cannot see a 0 reward): row 0's first step (ending at t=1,
    scored 0) would make the return of tokens 0-1 equal to 0, and they take 0.5 instead."""
    b = make([[0.0, 0.0, 0.0, 0.5], [0.0, 0.25, 0.0, 0.25]], None, ["g", "g"])
    got = ours(b)
    assert (got[0] == got[0, 3]).all() and got[0, 3] > 0
    assert_matches(b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(dtype: torch.dtype) -> None:
    b = min_form_batch(np.random.default_rng(11), max_groups=4, max_size=5, max_width=12)
    low = Batch(b.rewards.to(dtype), b.mask, b.uids)
    got = ours(low)
    assert got.dtype == dtype
    if dtype == torch.float64:
        want = min_form(low.rewards, b.mask, b.uids)
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)
    else:
        upcast = Batch(low.rewards.float(), b.mask, b.uids)
        assert torch.equal(got, ours(upcast).to(dtype))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_the_oracle() -> None:
    for seed in range(20):
        b = min_form_batch(np.random.default_rng(seed), max_width=32)
        gpu = Batch(b.rewards.cuda(), b.mask.cuda(), b.uids)
        got = ours(gpu)
        assert got.device.type == "cuda" and got.dtype == torch.float32
        want = min_form(b.rewards, b.mask, b.uids)
        assert torch.allclose(got.cpu().double(), want, rtol=RTOL, atol=ATOL)


# -- the layout it decodes -------------------------------------------------------------------


def test_the_declared_layout_is_on_the_function() -> None:
    """The training wing's checks find it there (through the registry, under any alias)."""
    assert getattr(compute_grpo_min_form_advantage, "reward_layout", None) is REWARD_LAYOUT
    assert REWARD_LAYOUT == {"process_placement": "step_end", "outcome_placement": "all_tokens"}


def test_sql_prms_compose_is_decoded() -> None:
    """Token rewards written by sql_prm's own ``compose`` in the declared layout give the
    returns of the definition, computed here from the step scores it was given."""
    prm = pytest.importorskip("rewardsql_sql_reward.rewards.prm_manager")
    settings = prm.SQLPRMSettings(
        prm_path="prm", process_weight=0.5, outcome_weight=1.0, process_placement="step_end"
    )
    responses = [  # (length, step ends, scores, outcome)
        (7, [2, 4, 6], [0.9, 0.3, 0.8], 1.0),
        (6, [1, 3], [0.6, 0.7], 0.0),  # tokens 4-5 after the last step
        (5, [], [], 1.0),  # no step located
        (8, [0, 7], [0.2, 0.95], 0.0),
    ]
    width = 8
    rewards = torch.zeros(len(responses), width)
    mask = torch.zeros(len(responses), width, dtype=torch.long)
    for i, (length, ends, scores, outcome) in enumerate(responses):
        rewards[i, :length] = torch.tensor(
            prm.compose(length, ends, scores, outcome, settings, "all_tokens")
        )
        mask[i, :length] = 1
    step_rewards, returns = [], []
    for length, ends, scores, outcome in responses:
        values = [outcome + 0.5 * s for s in scores] or [outcome]
        step_rewards += values
        row = []
        for t in range(length):
            later = [v for e, v in zip(ends, values, strict=False) if e >= t]
            row.append(min(later) if later else values[-1])
        returns.append(row + [None] * (width - length))
    mu, sigma = sum(step_rewards) / len(step_rewards), std(step_rewards) + 1e-6
    want = torch.tensor(
        [[0.0 if g is None else (g - mu) / sigma for g in row] for row in returns],
        dtype=torch.float64,
    )
    got = ours(Batch(rewards, mask, np.array(["g"] * 4, dtype=object)))
    assert torch.allclose(got.double(), want, rtol=RTOL, atol=ATOL), (got, want)
