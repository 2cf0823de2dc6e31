"""The reward function ``sql_execution`` (verl's ``compute_score`` signature).

Use it through the registry (``rewardsql.get_reward_function("sql_execution")``) or straight
from verl's config::

    reward.custom_reward_function.path=pkg://rewardsql_sql_reward.rewards.reward_fn
    reward.custom_reward_function.name=compute_score

The database is ``<db_root>/<db_id>/<db_id>.sqlite`` with ``db_id`` from ``extra_info`` and
``db_root`` from ``extra_info["db_root"]``, else from the environment variable
``REWARDSQL_DB_ROOT``. One verifier (one worker pool) serves every call of a process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from rewardsql_sql_reward.verifier import (
    DatabaseLookupError,
    Verdict,
    resolve_db_path,
    shared_verifier,
)
from rewardsql_sql_reward.verifier.extract import extract_sql

logger = logging.getLogger(__name__)

#: Environment variable naming the database root when ``extra_info`` has no ``db_root``.
DB_ROOT_ENV = "REWARDSQL_DB_ROOT"
_warned: set[str] = set()


def database_path(extra_info: Mapping[str, Any] | None, db_root: Any = None) -> os.PathLike:
    """The database file of a sample: ``db_id`` from ``extra_info``; root from the arguments,
    ``extra_info["db_root"]`` or ``$REWARDSQL_DB_ROOT``. Raises ``ValueError`` when unknowable."""
    info = extra_info or {}
    db_id = info.get("db_id")
    if not isinstance(db_id, str) or not db_id:
        raise ValueError(f"extra_info must hold the sample's 'db_id'; got keys {sorted(info)}")
    root = db_root or info.get("db_root") or os.environ.get(DB_ROOT_ENV)
    if not root:
        raise ValueError(
            f"no database root for db_id {db_id!r}: put 'db_root' in extra_info or set "
            f"{DB_ROOT_ENV}"
        )
    return resolve_db_path(root, db_id)


def gold_sql(ground_truth: Any) -> str:
    """The gold SQL: a string, or a mapping with ``sql``, ``SQL`` or ``query``."""
    if isinstance(ground_truth, str):
        return ground_truth
    if isinstance(ground_truth, Mapping):
        for key in ("sql", "SQL", "query"):
            if isinstance(ground_truth.get(key), str):
                return ground_truth[key]
    raise ValueError(f"ground_truth must be the gold SQL string, got {type(ground_truth).__name__}")


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    *,
    mode: str = "bird",
    timeout: float | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """1.0 when the response's SQL executes to the gold result, else 0.0.

    Returns ``{"score", "status", "seconds"}`` (``status`` as :class:`~rewardsql_sql_reward.
    Verdict`). ``mode`` and ``timeout`` may come from verl's ``reward_kwargs``. An infra error
    (missing database, crashed worker, failing gold SQL) scores 0.0 with status ``infra_error``
    and is logged; the ``sql_verifier`` manager is the component that stops training on them.
    """
    del data_source, kwargs  # part of verl's signature; not needed here
    try:
        path = database_path(extra_info)
    except DatabaseLookupError as exc:  # an id outside the root is the data's fault, not ours
        verdict = Verdict(False, "infra_error", str(exc))
    else:
        verdict = shared_verifier().compare(path, extract_sql(solution_str),
                                            gold_sql(ground_truth), mode=mode, timeout=timeout)
    if verdict.status == "infra_error" and verdict.error not in _warned and len(_warned) < 100:
        _warned.add(verdict.error or "")
        logger.warning("sql_execution: infra error, scored 0: %s", verdict.error)
    return {"score": 1.0 if verdict.correct else 0.0, "status": verdict.status,
            "seconds": verdict.seconds}
