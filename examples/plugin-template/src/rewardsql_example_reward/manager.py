"""A reward manager with settings: the clause overlap of a whole batch, scaled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rewardsql import RewardManager, RewardRequest, RewardResult
from rewardsql.errors import ConfigError
from rewardsql.schema import setting

from rewardsql_example_reward.reward import clause_overlap


@dataclass(frozen=True)
class OverlapSettings:
    """What a user may write under ``rewardsql.reward_manager`` for this manager."""

    scale: float = setting(1.0, "Every score is multiplied by it.")
    floor: float = setting(0.0, "Scores below it become 0.")

    def __post_init__(self) -> None:
        if not 0 <= self.floor <= 1:
            raise ConfigError(f"expected a number in [0, 1], got {self.floor}", key="floor")


class ClauseOverlapManager(RewardManager):
    """Scores a batch by clause overlap with the gold SQL (a shaping signal, not execution)."""

    Settings = OverlapSettings
    settings: OverlapSettings
    needs_ground_truth = True  # the gold SQL is the ground truth

    def score_batch(self, requests: Sequence[RewardRequest]) -> list[RewardResult]:
        results = []
        for request in requests:
            overlap = clause_overlap(request.data_source, request.response,
                                     str(request.ground_truth))
            score = overlap["score"] if overlap["score"] >= self.settings.floor else 0.0
            results.append(RewardResult(score * self.settings.scale,
                                        extra={"missing": overlap["missing"]}))
        return results
