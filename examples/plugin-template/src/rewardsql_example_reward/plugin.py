"""The plugin module named by the entry point: it registers the components."""

import rewardsql

from rewardsql_example_reward.manager import ClauseOverlapManager
from rewardsql_example_reward.reward import clause_overlap


@rewardsql.hookimpl
def rewardsql_reward_functions(register):
    register(
        "clause_overlap",
        clause_overlap,
        aliases=("compute_clause_overlap",),
        summary="Jaccard overlap of SQL clauses with the gold query (shaping reward)",
    )


@rewardsql.hookimpl
def rewardsql_reward_managers(register):
    register("clause_overlap_batch", ClauseOverlapManager,
             summary="clause overlap of a batch, with settings scale and floor")


@rewardsql.hookimpl
def rewardsql_commands(register):
    # imported here, so that `rewardsql --help` does not pay for what the command needs
    from rewardsql_example_reward.command import app

    register("example-reward", app, summary="Tools of the example plugin.")
