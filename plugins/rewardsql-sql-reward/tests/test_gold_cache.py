"""Gold outcomes are cached only when running the gold again would give the same (issue 27)."""

from __future__ import annotations

from pathlib import Path

from rewardsql_sql_reward import SQLVerifier

#: A gold query that needs a few tenths of a second: it times out at 0.05 s, not at 10 s.
SLOW_GOLD = ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 2000000) "
             "SELECT count(*) FROM r")
PRED = "SELECT 2000000"


def test_a_gold_that_timed_out_is_not_cached(db_root: Path) -> None:
    with SQLVerifier(db_root, workers=1) as v:
        first = v.compare("concert", PRED, SLOW_GOLD, timeout=0.05)
        assert first.status == "infra_error" and "gold SQL failed (timeout)" in first.error
        runs = v.pool.tasks_run
        # a transient timeout: with time enough the same gold runs again and the answer is right
        again = v.compare("concert", PRED, SLOW_GOLD, timeout=10.0)
        assert (again.status, again.correct) == ("ok", True)
        assert v.pool.tasks_run == runs + 2  # the gold ran again, beside the prediction
        # a gold that did finish is cached: only the new prediction runs
        assert v.compare("concert", "SELECT 1", SLOW_GOLD, timeout=10.0).status == "wrong"
        assert v.pool.tasks_run == runs + 3


def test_a_gold_that_failed_deterministically_is_cached(db_root: Path) -> None:
    with SQLVerifier(db_root, workers=1) as v:
        bad_gold = "SELECT no_such_column FROM singer"
        assert v.compare("concert", "SELECT 1", bad_gold).status == "infra_error"
        runs = v.pool.tasks_run
        assert v.compare("concert", "SELECT 2", bad_gold).status == "infra_error"
        assert v.pool.tasks_run == runs + 1  # an error is an error every time: not rerun
