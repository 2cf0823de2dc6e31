"""rewardsql-sql-reward: a safe, fast SQL execution verifier and the SQL rewards built on it."""

from rewardsql_sql_reward import cocte
from rewardsql_sql_reward.cocte import STEP_TAG, execute_steps, execute_steps_batch, split_steps
from rewardsql_sql_reward.extract import extract_sql
from rewardsql_sql_reward.verifier import (
    MODES,
    STATUSES,
    ExecResult,
    SQLVerifier,
    Verdict,
    resolve_db_path,
    shared_verifier,
)

__all__ = [
    "MODES",
    "STATUSES",
    "STEP_TAG",
    "ExecResult",
    "SQLVerifier",
    "Verdict",
    "cocte",
    "execute_steps",
    "execute_steps_batch",
    "extract_sql",
    "resolve_db_path",
    "shared_verifier",
    "split_steps",
]
