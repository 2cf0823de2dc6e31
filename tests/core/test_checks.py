"""`plugins check` contract checks, in-process, on components that keep or break the contract."""

from __future__ import annotations

import numpy as np
import pytest
import rewardsql
import torch
from rewardsql.checks import check_component
from rewardsql.components import Component, ComponentKind
from rewardsql.rewards import score_of


def _component(kind: ComponentKind, obj) -> Component:
    return Component(kind, "under_test", obj, plugin="test-plugin")


def test_estimator_is_called_exactly_as_verl_calls_it():
    seen = {}

    def estimator(token_level_rewards, response_mask, index, config, **kwargs):
        seen.update(index=index, config=config, kwargs=kwargs, mask=response_mask)
        return torch.zeros_like(token_level_rewards), torch.zeros_like(token_level_rewards)

    result = check_component(_component(ComponentKind.ADVANTAGE_ESTIMATOR, estimator))
    assert result.ok, result.detail
    assert isinstance(seen["index"], np.ndarray) and seen["index"].dtype == object
    assert isinstance(seen["index"][0], str)
    assert type(seen["config"]).__name__ == "AlgoConfig"  # verl's own config object
    assert seen["kwargs"] == {}
    assert seen["mask"].dtype == torch.int64  # verl slices attention_mask


def test_estimator_with_nan_fails():
    def nan_estimator(token_level_rewards, response_mask, **kwargs):
        adv = token_level_rewards / 0.0
        return adv, adv

    result = check_component(_component(ComponentKind.ADVANTAGE_ESTIMATOR, nan_estimator))
    assert not result.ok and result.detail == "advantages has non-finite values"


def test_estimator_that_raises_fails_with_the_error():
    def needs_other_args(rewards, mask):
        return rewards, mask

    result = check_component(_component(ComponentKind.ADVANTAGE_ESTIMATOR, needs_other_args))
    assert not result.ok and result.detail.startswith("raised TypeError")


def test_async_reward_function_is_awaited():
    async def reward(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
        return {"score": 1.0 if solution_str == ground_truth else 0.0, "why": "equal"}

    result = check_component(_component(ComponentKind.REWARD_FUNCTION, reward))
    assert result.ok and result.detail == "returned score 1 for a correct answer"


class GoodManager(rewardsql.RewardManager):
    def score_batch(self, requests):
        return [
            rewardsql.RewardResult(
                score=1.0, token_rewards=[0.1] * len(r.response_token_ids), extra={"k": 1}
            )
            for r in requests
        ]


class ShortTokens(GoodManager):
    def score_batch(self, requests):
        return [rewardsql.RewardResult(score=1.0, token_rewards=[0.1]) for _ in requests]


class RaggedExtras(GoodManager):
    def score_batch(self, requests):
        return [
            rewardsql.RewardResult(score=0.0, extra={f"k{i}": 1}) for i, _ in enumerate(requests)
        ]


class NeedsDbRoot(GoodManager):
    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        if "db_root" not in self.config:
            raise KeyError("db_root")


@pytest.mark.parametrize(
    ("cls", "ok", "detail"),
    [
        (GoodManager, True, "scored 1, 1, 1 for 3 responses"),
        (
            ShortTokens,
            False,
            "result 0: token_rewards must have one value per response token (8), got 1",
        ),
        (
            RaggedExtras,
            False,
            "every result of a batch must have the same extra keys: ['k0'] vs ['k1'] (result 1)",
        ),
        (NeedsDbRoot, False, "cannot be constructed with an empty config: KeyError: 'db_root'"),
    ],
)
def test_reward_manager_contract(cls, ok, detail):
    result = check_component(_component(ComponentKind.REWARD_MANAGER, cls))
    assert (result.ok, result.detail) == (ok, detail)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1.0), ({"score": 0.5, "x": 1}, 0.5), (np.float32(0.25), 0.25)],
)
def test_score_of_accepts_numbers_and_dicts(value, expected):
    assert score_of(value) == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [({"acc": 1}, "without a 'score' key"), (None, "got NoneType"), (float("nan"), "non-finite")],
)
def test_score_of_rejects_other_values(value, error):
    with pytest.raises((TypeError, ValueError), match=error):
        score_of(value)
