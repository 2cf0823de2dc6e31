"""The worker's executor in this process, on real databases, for paths the pool rarely takes."""

from __future__ import annotations

import json
from pathlib import Path

from _sqlreward_helpers import make_concert_db
from rewardsql_sql_reward import SQLVerifier
from rewardsql_sql_reward.verifier._worker import Executor

MANY_ROWS = ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 300000) "
             "SELECT i, 'row ' || i FROM r")


def _executor(root: Path) -> Executor:
    with SQLVerifier(root, workers=1) as verifier:  # the verifier's own worker settings
        return Executor(json.loads(verifier.pool._settings_json))


def test_a_deadline_passed_between_fetch_chunks_is_a_timeout(tmp_path: Path) -> None:
    """Between two ``fetchmany`` chunks the executor checks the deadline itself. The progress
    handler usually interrupts a query first, so it is switched off here: each chunk is cheap,
    but 300 of them take longer than the 20 ms allowed."""
    path = str(make_concert_db(tmp_path))
    executor = _executor(tmp_path)
    conn = executor._open(path)
    conn.set_progress_handler(None, 0)
    for op in ("rows", "digest"):
        status, payload, error, seconds, _ = executor.run((op, path, MANY_ROWS, 0.02, 10**6,
                                                           "set"))
        assert (status, payload) == ("timeout", None), error
        assert error == "timed out after 0.02 s"
        assert seconds < 5
    # the same query with time to finish: it is the deadline, not the query, that failed
    status, payload, _, _, rows = executor.run(("digest", path, MANY_ROWS, 60.0, 10**6, "set"))
    assert (status, rows) == ("ok", 300000)
