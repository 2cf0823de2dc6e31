"""The verifier under runaway SQL and faults: training budgets, batch deadlines, killed workers,
databases that vanish mid-run. Real databases, real worker processes, real SIGKILLs."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from _sqlreward_helpers import make_concert_db
from rewardsql_sql_reward import SQLVerifier
from rewardsql_sql_reward.verifier.budget import Budget

OLDER = "SELECT name FROM singer WHERE age > 30"


def runaway(n: int) -> str:
    """A recursive CTE without end; ``n`` makes each text distinct (no deduplication)."""
    return (f"WITH RECURSIVE r(i) AS (SELECT {n} UNION ALL SELECT i + 1 FROM r) "
            "SELECT count(*) FROM r")


def normal(n: int) -> tuple[str, str]:
    """A fast (pred, gold) pair that is correct; ``n`` makes each text distinct."""
    return (f"SELECT name FROM singer WHERE age > {20 + n % 30} AND {n} = {n}",
            f"SELECT name FROM singer WHERE {n} = {n} AND age > {20 + n % 30}")


def test_runaways_end_by_the_batch_deadline_and_fast_queries_still_run(db_root: Path) -> None:
    items = [("concert", runaway(i), OLDER) for i in range(60)]
    items += [("concert", *normal(i)) for i in range(20)]
    random.Random(0).shuffle(items)
    with SQLVerifier(db_root, workers=2, timeout=5.0) as v:
        v.start()
        start = time.monotonic()
        verdicts = v.verify_batch(items, budget=Budget(floor=0.5, batch_timeout=1.5))
        elapsed = time.monotonic() - start
        # Unbudgeted, 60 distinct runaways on 2 workers would take 60 x 5 s / 2 = 150 s.
        assert elapsed < 1.5 + 1.5  # the deadline, plus killing and draining the busy workers
        for (_, pred, _), verdict in zip(items, verdicts, strict=True):
            if pred.startswith("WITH RECURSIVE"):
                assert verdict.status == "timeout", verdict
            else:
                assert verdict.status == "ok" and verdict.correct, verdict
        # The pool is whole again: the next batch runs normally.
        assert v.compare("concert", OLDER, OLDER).status == "ok"


def test_a_prediction_gets_a_multiple_of_its_gold_time(db_root: Path) -> None:
    with SQLVerifier(db_root, workers=1, timeout=5.0) as v:
        start = time.monotonic()
        verdict = v.compare("concert", runaway(1), OLDER)  # no budget: the full timeout
        assert verdict.status == "timeout" and time.monotonic() - start >= 5.0
        start = time.monotonic()
        verdict = v.verify_batch([("concert", runaway(2), OLDER)],
                                 budget=Budget(floor=0.3, factor=10.0))[0]
        elapsed = time.monotonic() - start
        assert verdict.status == "timeout" and "training budget of 0.3 s" in verdict.error
        assert 0.3 <= elapsed < 1.5


def test_budget_rounds_rerun_slow_queries_until_they_finish(db_root: Path) -> None:
    # A legitimate query slower than the first slices: it must finish in a later round.
    slow = ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 300000) "
            "SELECT count(*) FROM r")
    with SQLVerifier(db_root, workers=1, timeout=5.0) as v:
        verdict = v.verify_batch([("concert", slow, slow.replace("SELECT 1", "SELECT 1 "))],
                                 budget=Budget(floor=3.0))[0]
    assert verdict.status == "ok" and verdict.correct


def test_gold_cut_by_the_batch_deadline_is_a_timeout_not_an_infra_error(db_root: Path) -> None:
    with SQLVerifier(db_root, workers=1, timeout=5.0) as v:
        verdict = v.verify_batch([("concert", OLDER, runaway(3))],
                                 budget=Budget(batch_timeout=0.5))[0]
    assert verdict.status == "timeout" and "deadline" in verdict.error


def test_budget_settings_are_checked() -> None:
    for bad in ({"floor": 0}, {"factor": -1}, {"batch_timeout": 0}):
        with pytest.raises(ValueError):
            Budget(**bad)  # type: ignore[arg-type]
    assert Budget().batch_seconds(3.0) == 6.0
    assert Budget(floor=1, factor=10).query_seconds(0.5, timeout=30) == 5.0
    assert Budget(floor=1, factor=10).query_seconds(0.01, timeout=30) == 1.0
    assert Budget(floor=1, factor=10).query_seconds(9.0, timeout=30) == 30.0


def test_worker_killed_mid_batch_fails_only_its_query_and_is_replaced(db_root: Path) -> None:
    # One runaway holds worker A; the kill lands while it runs. The other queries finish.
    items = [("concert", runaway(4), OLDER)] + [("concert", *normal(i)) for i in range(200)]
    with SQLVerifier(db_root, workers=2, timeout=60) as v:
        v.start()
        before = set(v.pool.pids())
        trace: list = []
        v.pool.trace = trace

        def kill_the_runaways_worker() -> None:
            # The runaway's worker is the one that has burnt CPU time for a while.
            for _ in range(100):
                time.sleep(0.05)
                for pid in before:
                    if _cpu_seconds(pid) > 0.2:
                        os.kill(pid, signal.SIGKILL)
                        return

        threading.Thread(target=kill_the_runaways_worker).start()
        start = time.monotonic()
        verdicts = v.verify_batch(items)
        assert time.monotonic() - start < 30  # not the runaway's 60 s timeout
        assert verdicts[0].status == "infra_error"
        assert "crashed" in verdicts[0].error and "signal 9" in verdicts[0].error
        assert str(db_root / "concert" / "concert.sqlite") in verdicts[0].error
        assert all(x.status == "ok" and x.correct for x in verdicts[1:])
        assert v.compare("concert", OLDER, OLDER).status == "ok"
        after = set(v.pool.pids())
        assert len(after) == 2 and after != before


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_database_deleted_mid_run_is_an_infra_error(tmp_path: Path) -> None:
    path = make_concert_db(tmp_path)
    with SQLVerifier(tmp_path, workers=1) as v:
        assert v.compare("concert", OLDER, OLDER).status == "ok"  # a worker holds it open now
        path.unlink()
        verdict = v.compare("concert", OLDER.replace("30", "31"), OLDER)
        assert verdict.status == "infra_error" and str(path) in verdict.error
        make_concert_db(tmp_path)  # a new file at the same path, with other rows: that one counts
        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM singer WHERE age < 40")
        conn.close()
        assert v.execute("concert", "SELECT count(*) FROM singer").rows == [(2,)]


def test_database_corrupted_mid_run_is_an_infra_error_not_the_models_fault(
        tmp_path: Path) -> None:
    # Root reads a chmod 000 file, so "unreadable" is made by overwriting the bytes in place.
    path = make_concert_db(tmp_path)
    with SQLVerifier(tmp_path, workers=1) as v:
        assert v.compare("concert", OLDER, OLDER).status == "ok"  # a worker holds it open now
        size = path.stat().st_size
        with path.open("r+b") as handle:
            handle.write(b"\0garbage" * (size // 8))
        verdict = v.compare("concert", OLDER.replace("30", "31"), OLDER.replace("30", "29"))
        assert verdict.status == "infra_error", verdict
        assert str(path) in verdict.error


def test_manager_applies_the_budget_by_default_and_can_turn_it_off(db_root: Path) -> None:
    from rewardsql import RewardRequest
    from rewardsql_sql_reward.rewards.verifier_manager import SQLVerifierManager

    info = {"db_id": "concert", "db_root": str(db_root)}
    requests = [RewardRequest(response=sql, ground_truth=OLDER, extra_info=info)
                for sql in (runaway(5), runaway(6), OLDER)]
    config = {"workers": 1, "timeout": 20.0, "budget_floor": 0.2, "batch_timeout": 3.0}
    with SQLVerifierManager(config) as manager:
        assert manager.budget == Budget(0.2, 10.0, 3.0)
        start = time.monotonic()
        results = manager.score_batch(requests)
        assert time.monotonic() - start < 3.0  # two runaways at 0.2 s each, not 2 x 20 s
    assert [r.extra["status"] for r in results] == ["timeout", "timeout", "ok"]
    with SQLVerifierManager({**config, "budget": False}) as manager:
        assert manager.budget is None


@pytest.mark.parametrize("key", ["budget_floor", "budget_factor", "batch_timeout"])
def test_bad_budget_settings_name_the_key(key: str) -> None:
    from rewardsql.errors import ConfigError
    from rewardsql_sql_reward.rewards.verifier_manager import SQLVerifierManager

    with pytest.raises(ConfigError) as info:
        SQLVerifierManager({key: 0})
    assert info.value.key == key
