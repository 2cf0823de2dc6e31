"""The verifier on real databases and real worker processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from _sqlreward_helpers import make_concert_db
from rewardsql_sql_reward import SQLVerifier, shared_verifier
from rewardsql_sql_reward.verifier import WORKERS_ENV

OLDER = "SELECT name FROM singer WHERE age > 30"
RUNAWAY = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"


def test_execute_returns_rows(verifier: SQLVerifier) -> None:
    result = verifier.execute("concert", "SELECT name, age FROM singer WHERE country = 'PT' "
                                         "ORDER BY id")
    assert result.status == "ok" and result.error is None
    assert result.rows == [("Ana", 25), ("Fa", 52)]


@pytest.mark.parametrize(
    ("pred", "status"),
    [
        (OLDER, "ok"),
        ("SELECT name FROM singer WHERE age > 30 ORDER BY age DESC", "ok"),
        ("SELECT name FROM singer WHERE age >= 30", "ok"),  # nobody is exactly 30
        ("SELECT name FROM singer WHERE age > 40", "wrong"),
        ("SELECT name, age FROM singer WHERE age > 30", "wrong"),  # extra column
        ("SELECT nme FROM singer", "error"),
        ("SELEC name FROM singer", "error"),
        ("", "error"),
    ],
)
def test_compare_statuses(verifier: SQLVerifier, pred: str, status: str) -> None:
    verdict = verifier.compare("concert", pred, OLDER)
    assert verdict.status == status
    assert verdict.correct == (status == "ok")
    assert (verdict.error is None) == (status in ("ok", "wrong"))


def test_modes_disagree_on_duplicates_and_order(verifier: SQLVerifier) -> None:
    # ages are 25, 41, 33, 29, 33, 52: the age 33 appears twice
    distinct, every = "SELECT DISTINCT age FROM singer", "SELECT age FROM singer"
    assert verifier.compare("concert", distinct, every, mode="bird").status == "ok"
    assert verifier.compare("concert", distinct, every, mode="multiset").status == "wrong"
    ascending = "SELECT age FROM singer ORDER BY age"
    descending = "SELECT age FROM singer ORDER BY age DESC"
    assert verifier.compare("concert", ascending, descending, mode="multiset").status == "ok"
    assert verifier.compare("concert", ascending, descending, mode="ordered").status == "wrong"
    # without a top-level ORDER BY in the gold, "ordered" ignores order
    assert verifier.compare("concert", descending, every, mode="ordered").status == "ok"
    nested = "SELECT age FROM (SELECT age FROM singer ORDER BY age DESC)"
    assert verifier.compare("concert", ascending, nested, mode="ordered").status == "ok"


def test_integer_and_real_values_compare_as_python_does(verifier: SQLVerifier) -> None:
    assert verifier.compare("concert", "SELECT age * 1.0 FROM singer",
                            "SELECT age FROM singer").status == "ok"
    assert verifier.compare("concert", "SELECT age + 0.5 FROM singer",
                            "SELECT age FROM singer").status == "wrong"
    assert verifier.compare("concert", "SELECT CAST(age AS TEXT) FROM singer",
                            "SELECT age FROM singer").status == "wrong"


def test_verify_batch_keeps_input_order_over_databases(verifier: SQLVerifier) -> None:
    items = [("concert", OLDER, OLDER), ("concert_copy", "SELECT 1", OLDER),
             ("concert", "SELECT name FROM singer", OLDER), ("missing_db", OLDER, OLDER),
             ("concert_copy", OLDER, OLDER)] * 3
    statuses = [v.status for v in verifier.verify_batch(items)]
    assert statuses == ["ok", "wrong", "wrong", "infra_error", "ok"] * 3


def test_gold_runs_once_then_comes_from_the_cache(db_root: Path) -> None:
    gold = "SELECT name FROM singer WHERE country = 'US'"
    with SQLVerifier(db_root, workers=1) as v:
        v.verify_batch([("concert", "SELECT 1", gold), ("concert", "SELECT 2", gold)])
        assert v.pool.tasks_run == 3  # one gold, two distinct predictions
        v.verify_batch([("concert", "SELECT 3", gold)])
        assert v.pool.tasks_run == 4  # the gold came from the cache
        assert v.compare("concert", "SELECT name FROM singer WHERE country = 'US'",
                         gold).status == "ok"
        assert v.pool.tasks_run == 4  # a prediction identical to a cached gold does not run
        assert v.compare("concert", gold, gold, mode="multiset").status == "ok"
        assert v.pool.tasks_run == 5  # another comparison kind: the gold runs once more


def test_missing_unreadable_and_non_database_files_are_infra_errors(tmp_path: Path) -> None:
    make_concert_db(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    mapping = {"good": tmp_path / "concert" / "concert.sqlite",
               "junk": tmp_path / "junk" / "junk.sqlite", "gone": tmp_path / "gone.sqlite"}
    with SQLVerifier(mapping, workers=1) as v:
        gone = v.compare("gone", OLDER, OLDER)
        assert gone.status == "infra_error" and str(mapping["gone"]) in gone.error
        junk = v.compare("junk", OLDER, OLDER)
        assert junk.status == "infra_error" and str(mapping["junk"]) in junk.error
        unknown = v.compare("nope", OLDER, OLDER)
        assert unknown.status == "infra_error" and "'nope'" in unknown.error
        assert v.compare("good", OLDER, OLDER).status == "ok"


def test_failing_gold_is_an_infra_error_not_a_wrong_answer(verifier: SQLVerifier) -> None:
    verdict = verifier.compare("concert", OLDER, "SELECT no_such_column FROM singer")
    assert verdict.status == "infra_error" and "gold SQL failed" in verdict.error


def test_too_many_rows_is_too_large(db_root: Path) -> None:
    with SQLVerifier(db_root, workers=1, max_rows=5) as v:
        assert v.execute("concert", "SELECT * FROM singer").status == "too_large"
        assert v.execute("concert", "SELECT * FROM concert").status == "ok"  # exactly 5 rows


def test_runaway_query_costs_its_timeout_and_delays_nothing_else(db_root: Path) -> None:
    with SQLVerifier(db_root, workers=2, timeout=1.0) as v:
        v.start()
        items = [("concert", RUNAWAY, OLDER)] + [
            ("concert", f"SELECT name FROM singer WHERE age > {30 + i % 7} AND {i} = {i}", OLDER)
            for i in range(60)
        ]
        start = time.monotonic()
        verdicts = v.verify_batch(items)
        elapsed = time.monotonic() - start
    assert verdicts[0].status == "timeout"
    assert all(verdict.status in ("ok", "wrong") for verdict in verdicts[1:])
    assert elapsed < 1.0 + 1.0


FAST = [f"SELECT name FROM singer WHERE age > {20 + i % 40} AND {i} = {i}" for i in range(300)]


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "position"), [(2, 0), (3, 150)])
def test_no_task_waits_behind_a_runaway_query(db_root: Path, workers: int, position: int) -> None:
    # Each fast pair's verdict is ready when its last query's first answer reaches the parent:
    # the pool's trace records that moment. A task sent to the runaway's worker would, without
    # re-dispatch, be answered only after the runaway's 2 s timeout.
    timeout = 2.0
    items = [("concert", sql, OLDER) for sql in FAST]
    items.insert(position, ("concert", RUNAWAY, OLDER))
    with SQLVerifier(db_root, workers=workers, timeout=timeout) as v:
        v.start()
        v.pool.trace = trace = []
        start = time.monotonic()
        verdicts = v.verify_batch(items)
        elapsed = time.monotonic() - start
        # The tasks behind the runaway ran elsewhere; its worker skipped its copies of them.
        assert v.pool.duplicates >= 1 and v.pool.withdrawn == v.pool.duplicates
    assert verdicts[position].status == "timeout"
    assert all(verdict.status in ("ok", "wrong") for i, verdict in enumerate(verdicts)
               if i != position)
    done = {task.sql: at - start for task, _outcome, at in trace}
    assert len(done) == len(FAST) + 2  # every query once, the gold included
    latencies = [max(done[sql], done[OLDER]) for sql in FAST]
    assert max(latencies) < timeout / 4, sorted(latencies)[-5:]
    assert timeout - 0.1 < elapsed < timeout + 1.0


def test_two_runaways_side_by_side_cost_one_timeout(db_root: Path) -> None:
    # The second runaway waits behind the first, is re-dispatched, and its first answer wins;
    # the worker still running the duplicate is replaced instead of being waited for.
    timeout = 1.0
    twin = RUNAWAY.replace("count(*)", "max(i)")
    items = [("concert", RUNAWAY, OLDER), ("concert", twin, OLDER)]
    items += [("concert", sql, OLDER) for sql in FAST[:40]]
    with SQLVerifier(db_root, workers=3, timeout=timeout) as v:
        v.start()
        start = time.monotonic()
        verdicts = v.verify_batch(items)
        elapsed = time.monotonic() - start
        assert v.pool.duplicates >= 1
        assert v.compare("concert", OLDER, OLDER).status == "ok"  # the pool serves on
    assert [verdict.status for verdict in verdicts[:2]] == ["timeout", "timeout"]
    assert elapsed < timeout + 0.8


def test_worker_count_comes_from_the_environment(db_root: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKERS_ENV, "1")
    with SQLVerifier(db_root) as v:
        v.start()
        assert v.workers == 1 and len(v.pool.pids()) == 1
    assert SQLVerifier(db_root, workers=2).workers == 2  # an explicit count wins
    shared = shared_verifier(timeout=4.25)  # the reward function's kind, created now
    try:
        assert shared.workers == 1
    finally:
        shared.close()
    for bad in ("0", "many", "-3"):
        monkeypatch.setenv(WORKERS_ENV, bad)
        with pytest.raises(ValueError, match=f"{WORKERS_ENV}.*{bad}"):
            SQLVerifier(db_root)
    monkeypatch.delenv(WORKERS_ENV)
    assert SQLVerifier(db_root).workers == (len(os.sched_getaffinity(0)))


def test_crashed_worker_is_an_infra_error_and_is_replaced(db_root: Path) -> None:
    with SQLVerifier(db_root, workers=1, timeout=20) as v:
        v.start()
        (pid,) = v.pool.pids()
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        verdict = v.compare("concert", RUNAWAY, OLDER)
        assert verdict.status == "infra_error"
        assert "crashed" in verdict.error and "signal 9" in verdict.error
        assert v.compare("concert", OLDER, OLDER).status == "ok"
        assert v.pool.pids() != [pid]


def test_concurrent_callers_share_the_pool(verifier: SQLVerifier) -> None:
    results: list[str] = []

    def call(i: int) -> None:
        results.append(verifier.compare("concert", f"SELECT name FROM singer WHERE age > {i}",
                                        OLDER).status)

    threads = [threading.Thread(target=call, args=(i,)) for i in (29, 30, 31, 32, 40, 50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(["ok", "ok", "ok", "ok", "wrong", "wrong"])


def test_close_stops_the_workers(db_root: Path) -> None:
    v = SQLVerifier(db_root, workers=2)
    v.start()
    pids = v.pool.pids()
    assert len(pids) == 2
    v.close()
    v.close()  # twice is fine
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_workers_import_no_torch_and_die_with_the_interpreter(db_root: Path) -> None:
    # A trainer-like parent: torch imported at the top of __main__ before the pool starts.
    script = textwrap.dedent(f"""
        import torch  # noqa: F401
        from rewardsql_sql_reward import SQLVerifier
        v = SQLVerifier({str(db_root)!r}, workers=1)
        assert v.execute("concert", "SELECT 1").rows == [(1,)]
        (pid,) = v.pool.pids()
        maps = open(f"/proc/{{pid}}/maps").read()
        print(pid, "torch" in maps)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    pid, has_torch = run.stdout.split()
    assert has_torch == "False"
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists()  # shut down at interpreter exit


def test_database_changes_are_seen(tmp_path: Path) -> None:
    path = make_concert_db(tmp_path)
    with SQLVerifier(tmp_path, workers=1) as v:
        assert v.execute("concert", "SELECT count(*) FROM singer").rows == [(6,)]
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("DELETE FROM singer WHERE id > 3")
        conn.close()
        assert v.execute("concert", "SELECT count(*) FROM singer").rows == [(3,)]


def test_bad_arguments_are_rejected(db_root: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        SQLVerifier(db_root, mode="fuzzy")
    with pytest.raises(ValueError, match="timeout"):
        SQLVerifier(db_root, timeout=0)
    with SQLVerifier(db_root, workers=1) as v, pytest.raises(ValueError, match="ordered"):
        v.compare("concert", OLDER, OLDER, mode="sorted")
