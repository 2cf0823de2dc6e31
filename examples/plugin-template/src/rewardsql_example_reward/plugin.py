"""The plugin module named by the entry point: it registers the components."""

import rewardsql

from rewardsql_example_reward.reward import clause_overlap


@rewardsql.hookimpl
def rewardsql_reward_functions(register):
    register(
        "clause_overlap",
        clause_overlap,
        aliases=("compute_clause_overlap",),
        summary="Jaccard overlap of SQL clauses with the gold query (shaping reward)",
    )
