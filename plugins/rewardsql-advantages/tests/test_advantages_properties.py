"""Properties every variant must have, on batches drawn by hypothesis."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rewardsql_advantages import (
    compute_grpo_min_form_advantage,
    compute_grpo_process_advantage_avg_unique,
    compute_grpo_process_fallback_advantage,
    compute_token_wise_advantage,
    compute_weighted_grpo_advantage,
)

VARIANTS = {
    "process": compute_grpo_process_advantage_avg_unique,
    "weighted": compute_weighted_grpo_advantage,
    "token_wise": compute_token_wise_advantage,
    "min_form": compute_grpo_min_form_advantage,
    "fallback": compute_grpo_process_fallback_advantage,
}
# few distinct values, so ties are frequent; above 1 (outcome) and below 0 too
VALUES = st.sampled_from([0.0, 0.0, 0.0, 0.125, 0.25, 0.5, 0.875, 1.0, 1.5, 1.875, -0.25])
SETTINGS = settings(max_examples=40, deadline=None)


@dataclass
class Drawn:
    rewards: torch.Tensor
    mask: torch.Tensor
    uids: np.ndarray


@st.composite
def batches(draw: st.DrawFn, max_groups: int = 4, max_size: int = 5, max_width: int = 7) -> Drawn:
    sizes = draw(st.lists(st.integers(1, max_size), min_size=1, max_size=max_groups))
    width = draw(st.integers(1, max_width))
    n = sum(sizes)
    rows = st.lists(VALUES, min_size=width, max_size=width)
    rewards = torch.tensor(draw(st.lists(rows, min_size=n, max_size=n)), dtype=torch.float32)
    if draw(st.booleans()):  # prefix masks of ragged lengths
        lengths = torch.tensor(draw(st.lists(st.integers(0, width), min_size=n, max_size=n)))
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    else:  # arbitrary masks
        row = st.lists(st.booleans(), min_size=width, max_size=width)
        bits = draw(st.lists(row, min_size=n, max_size=n))
        mask = torch.tensor(bits, dtype=torch.long).reshape(n, width)
    uids = [f"prompt-{g}" for g, size in enumerate(sizes) for _ in range(size)]
    order = draw(st.permutations(range(n)))
    return Drawn(rewards[order], mask[order], np.array(uids, dtype=object)[order])


def run(name: str, b: Drawn) -> torch.Tensor:
    adv, _ = VARIANTS[name](token_level_rewards=b.rewards, response_mask=b.mask, index=b.uids)
    return adv


@pytest.mark.parametrize("name", VARIANTS)
@SETTINGS
@given(b=batches(), data=st.data())
def test_permuting_samples_permutes_outputs(name: str, b: Drawn, data: st.DataObject) -> None:
    perm = torch.tensor(data.draw(st.permutations(range(len(b.uids)))), dtype=torch.long)
    permuted = Drawn(b.rewards[perm], b.mask[perm], b.uids[perm.numpy()])
    assert torch.allclose(run(name, permuted), run(name, b)[perm], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", VARIANTS)
@SETTINGS
@given(b=batches())
def test_singleton_groups_give_zeros(name: str, b: Drawn) -> None:
    lonely = np.array([f"alone-{i}" for i in range(len(b.uids))], dtype=object)
    assert torch.equal(run(name, Drawn(b.rewards, b.mask, lonely)), torch.zeros_like(b.rewards))
    # and inside a larger batch: the singleton rows of b stay zero
    counts = {u: int((b.uids == u).sum()) for u in b.uids}
    single = torch.tensor([counts[u] == 1 for u in b.uids])
    assert torch.equal(run(name, b)[single], torch.zeros_like(b.rewards[single]))


@pytest.mark.parametrize("name", VARIANTS)
@SETTINGS
@given(b=batches())
def test_groups_do_not_influence_each_other(name: str, b: Drawn) -> None:
    together = run(name, b)
    for uid in set(b.uids):
        rows = torch.from_numpy(np.flatnonzero(b.uids == uid))
        alone = run(name, Drawn(b.rewards[rows], b.mask[rows], b.uids[rows.numpy()]))
        assert torch.allclose(together[rows], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", VARIANTS)
@SETTINGS
@given(b=batches())
def test_positions_outside_the_definition_stay_zero(name: str, b: Drawn) -> None:
    """Masked-out positions are 0 for weighted, token-wise and min-form; the process variant
    ignores the mask and is 0 exactly where there is no reward."""
    adv = run(name, b)
    outside = (b.rewards == 0) if name == "process" else (b.mask == 0)
    assert torch.equal(adv[outside], torch.zeros_like(adv[outside]))
    assert torch.isfinite(adv).all()
