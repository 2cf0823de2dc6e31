"""The rewardsql plugin: the ``sql_execution`` reward function, the ``sql_verifier`` and
``sql_prm`` managers, and the commands ``rewardsql sql``, ``rewardsql data``,
``rewardsql rm label`` and ``rewardsql rerank``."""

from __future__ import annotations

import rewardsql

from rewardsql_sql_reward.rewards.prm_manager import SQLPRMManager
from rewardsql_sql_reward.rewards.reward_fn import compute_score
from rewardsql_sql_reward.rewards.verifier_manager import SQLVerifierManager


@rewardsql.hookimpl
def rewardsql_reward_functions(register):  # type: ignore[no-untyped-def]
    register("sql_execution", compute_score,
             summary="1.0 when the response's SQL executes to the gold result (BIRD rule)")


@rewardsql.hookimpl
def rewardsql_reward_managers(register):  # type: ignore[no-untyped-def]
    register("sql_verifier", SQLVerifierManager,
             summary="batch SQL execution reward: one parallel verifier call per batch")
    register("sql_prm", SQLPRMManager,
             summary="process (PRM step scores) plus outcome (SQL execution) token rewards")


@rewardsql.hookimpl
def rewardsql_commands(register):  # type: ignore[no-untyped-def]
    # imported here: `rewardsql --help` should not pay for the verifier's imports
    from rewardsql_sql_reward.commands.data import app as data_app
    from rewardsql_sql_reward.commands.label import label
    from rewardsql_sql_reward.commands.rerank import rerank
    from rewardsql_sql_reward.commands.sql import app as sql_app

    register("sql", sql_app, summary="Score predictions by execution accuracy.")
    register("data", data_app, summary="Spider/BIRD questions to verl's RL parquet.")
    register("rerank", rerank, summary="Best-of-N: pick SQL candidates with the PRM.")
    register("rm label", label, summary="Step labels for the PRM by sampling and executing SQL.")
