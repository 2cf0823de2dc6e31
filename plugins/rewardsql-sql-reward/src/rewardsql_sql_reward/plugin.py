"""The rewardsql plugin: registers the ``sql_execution`` reward function and ``sql_verifier``."""

from __future__ import annotations

import rewardsql

from rewardsql_sql_reward.manager import SQLVerifierManager
from rewardsql_sql_reward.reward_fn import compute_score


@rewardsql.hookimpl
def rewardsql_reward_functions(register):  # type: ignore[no-untyped-def]
    register("sql_execution", compute_score,
             summary="1.0 when the response's SQL executes to the gold result (BIRD rule)")


@rewardsql.hookimpl
def rewardsql_reward_managers(register):  # type: ignore[no-untyped-def]
    register("sql_verifier", SQLVerifierManager,
             summary="batch SQL execution reward: one parallel verifier call per batch")
