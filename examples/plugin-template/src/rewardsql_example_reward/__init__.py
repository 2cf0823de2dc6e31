"""An example rewardsql plugin: a clause-overlap shaping reward for text-to-SQL."""

from rewardsql_example_reward.reward import clause_overlap

__all__ = ["clause_overlap"]
