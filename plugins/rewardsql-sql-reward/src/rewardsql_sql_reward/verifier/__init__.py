"""The safe SQL execution verifier: model-written SQL runs in sandboxed worker interpreters
(``pool``, ``_worker``) under a time and memory budget (``budget``) and is compared with gold
SQL (``sql_verifier``); ``extract`` finds the SQL in a response, ``sqltext`` scans SQL text."""

from rewardsql_sql_reward.verifier.sql_verifier import (
    MODES,
    STATUSES,
    WORKERS_ENV,
    DatabaseLookupError,
    DatabaseRef,
    DbRoot,
    ExecResult,
    SQLVerifier,
    Verdict,
    configured_workers,
    digest_kind,
    is_plain_db_id,
    resolve_db_path,
    shared_verifier,
)

__all__ = ["MODES", "STATUSES", "WORKERS_ENV", "DatabaseLookupError", "DatabaseRef", "DbRoot",
           "ExecResult", "SQLVerifier", "Verdict", "configured_workers", "digest_kind",
           "is_plain_db_id", "resolve_db_path", "shared_verifier"]
