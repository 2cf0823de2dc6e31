"""execute_steps: the execution-augmented text of spec/cocte.md ("Intermediate results")."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

from _sqlreward_helpers import make_concert_db
from rewardsql_sql_reward import STEP_TAG, SQLVerifier, execute_steps
from rewardsql_sql_reward.rewards.cocte import execute_steps_batch, step_queries

T = STEP_TAG
US = "WITH us AS (SELECT id, name FROM singer WHERE country = 'US')"
OLDER = "\nolder AS (SELECT name FROM us WHERE id > 3)"
FINAL = "\nSELECT count(*) FROM older;"


def test_each_step_gets_its_rows_counted(verifier: SQLVerifier) -> None:
    response = f"{US}{T}{OLDER}{T}{FINAL}{T}"
    assert execute_steps(response, "concert", verifier) == (
        f"{US}<result>{{(3, 'Cy'): 1, (4, 'Di'): 1}}</result>{T}"
        f"{OLDER}<result>{{('Di',): 1}}</result>{T}"
        f"{FINAL}<result>{{(1,): 1}}</result>{T}"
    )


def test_duplicate_rows_are_counted_and_errors_replace_rows(verifier: SQLVerifier) -> None:
    response = (f"WITH ages AS (SELECT age FROM singer WHERE age > 30){T}\n"
                f"bad AS (SELECT nope FROM ages){T}\nSELECT * FROM bad{T}")
    text = execute_steps(response, "concert", verifier, annotate_final=False)
    assert text == (
        f"WITH ages AS (SELECT age FROM singer WHERE age > 30)"
        f"<result>{{(41,): 1, (33,): 2, (52,): 1}}</result>{T}"
        f"\nbad AS (SELECT nope FROM ages)<result>Execution error: no such column: nope</result>"
        f"{T}\nSELECT * FROM bad{T}"
    )


def test_long_results_are_cut_at_500_characters(db_root: Path, verifier: SQLVerifier) -> None:
    step = "WITH wide AS (SELECT s.name, c.year, s.age * c.id AS n FROM singer s, concert c)"
    text = execute_steps(f"{step}{T}SELECT count(*) FROM wide{T}", "concert", verifier)
    conn = sqlite3.connect(db_root / "concert" / "concert.sqlite")
    rows = conn.execute("SELECT s.name, c.year, s.age * c.id AS n FROM singer s, concert c "
                        "LIMIT 50").fetchall()
    conn.close()
    full = str(dict(Counter(rows)))
    assert len(full) > 500
    assert text.startswith(f"{step}<result>{full[:500]}...}}</result>{T}")
    assert text.endswith(f"SELECT count(*) FROM wide<result>{{(30,): 1}}</result>{T}")


def test_blank_line_steps_are_rewritten_with_tags(verifier: SQLVerifier) -> None:
    response = f"{US}\n\n{OLDER.strip()}\n\n{FINAL.strip()}<|im_end|>"
    assert execute_steps(response, "concert", verifier) == (
        f"{US}<result>{{(3, 'Cy'): 1, (4, 'Di'): 1}}</result>{T}"
        f"{OLDER.strip()}<result>{{('Di',): 1}}</result>{T}"
        f"{FINAL.strip()}<result>{{(1,): 1}}</result>{T}"
    )


def test_step_queries_select_from_the_last_cte_with_limit_50() -> None:
    assert step_queries([US, OLDER, FINAL]) == [
        f"{US}\nSELECT * FROM us LIMIT 50",
        f"{US},\n{OLDER.strip()}\nSELECT * FROM older LIMIT 50",
        None,
    ]


def test_results_are_cached_and_batches_run_in_one_call(tmp_path: Path) -> None:
    make_concert_db(tmp_path)  # a database no other test has cached results of
    response = f"{US}{T}{OLDER}{T}{FINAL}{T}"
    other = f"{US}{T}\nSELECT name FROM us{T}"
    with SQLVerifier(tmp_path, workers=2) as v:
        first = execute_steps_batch([(response, "concert"), (other, "concert")], v)
        assert v.pool.runs == 1
        assert v.pool.tasks_run == 4  # the shared first step ran once
        assert execute_steps(response, "concert", v) == first[0]
        assert v.pool.tasks_run == 4  # all from the cache


def test_a_db_root_uses_the_shared_verifier(db_root: Path) -> None:
    text = execute_steps(f"{US}{T}SELECT count(*) FROM us{T}", "concert", db_root)
    assert text == f"{US}<result>{{(3, 'Cy'): 1, (4, 'Di'): 1}}</result>{T}" \
                   f"SELECT count(*) FROM us<result>{{(2,): 1}}</result>{T}"
    missing = execute_steps(f"SELECT 1{T}", "nowhere", db_root)
    assert missing.startswith("SELECT 1<result>Execution error: database not found:")


def test_the_row_limit_is_honoured(verifier: SQLVerifier, db_root: Path) -> None:
    """``limit`` rows per CTE step, not the default 50; the final SELECT is not cut."""
    everyone = "WITH everyone AS (SELECT name FROM singer ORDER BY id)"
    response = f"{everyone}{T}\nSELECT count(*) FROM everyone{T}"
    cut = f"{everyone}<result>{{('Ana',): 1, ('Bo',): 1}}</result>{T}"
    final = f"\nSELECT count(*) FROM everyone<result>{{(6,): 1}}</result>{T}"
    assert execute_steps(response, "concert", verifier, limit=2) == cut + final
    assert execute_steps(response, "concert", db_root, limit=2) == cut + final  # a db_root
    assert execute_steps(response, "concert", verifier, limit=3).startswith(
        f"{everyone}<result>{{('Ana',): 1, ('Bo',): 1, ('Cy',): 1}}</result>")
    assert "('Fa',): 1}</result>" in execute_steps(response, "concert", verifier)


def test_a_refused_database_id_says_it_was_refused_and_why(db_root: Path) -> None:
    """A db_id a db_root refuses (not a plain name; not a key of a mapping) is reported as
    such, not as a missing db_root, and next to a good id in the same batch."""
    good = f"SELECT count(*) FROM singer{T}"
    texts = execute_steps_batch(
        [(f"SELECT 1{T}", "../concert"), (good, "concert"), (f"SELECT 1{T}", "concert/x")],
        db_root)
    for text, db_id in ((texts[0], "../concert"), (texts[2], "concert/x")):
        assert text == (f"SELECT 1<result>Execution error: database id {db_id!r} is not a plain "
                        "name (no path separators, '..', absolute paths or NUL): refused"
                        f"</result>{T}")
    assert texts[1] == f"SELECT count(*) FROM singer<result>{{(6,): 1}}</result>{T}"
    mapping = {"concert": str(db_root / "concert" / "concert.sqlite")}
    text = execute_steps(f"SELECT 1{T}", "elsewhere", mapping)
    assert text == (f"SELECT 1<result>Execution error: database 'elsewhere' is not in the "
                    f"db_root mapping</result>{T}")
