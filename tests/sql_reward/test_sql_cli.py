"""``rewardsql sql score``: execution accuracy of prediction files, on real databases."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from rewardsql.cli import app
from typer.testing import CliRunner

GOLD = [
    ("SELECT name FROM singer WHERE age > 30", "concert"),
    ("SELECT count(*) FROM singer", "concert"),
    ("SELECT name FROM singer ORDER BY age DESC LIMIT 1", "concert"),
    ("SELECT title FROM album WHERE year < 2000", "music"),
]
PRED = [
    "SELECT name FROM singer WHERE age >= 31",  # same rows: correct
    "SELECT count(name) FROM singer WHERE age > 30",  # wrong
    "SELECT nam FROM singer",  # error
    "SELECT title FROM album WHERE year <= 1999",  # correct
]


def _make_db(root: Path, db_id: str, ddl: str, rows_sql: str) -> None:
    (root / db_id).mkdir(parents=True)
    conn = sqlite3.connect(root / db_id / f"{db_id}.sqlite")
    with conn:
        conn.execute(ddl)
        conn.execute(rows_sql)
    conn.close()


@pytest.fixture
def db_root(tmp_path: Path) -> Path:
    root = tmp_path / "database"
    _make_db(root, "concert", "CREATE TABLE singer (name TEXT, age INTEGER)",
             "INSERT INTO singer VALUES ('Ana', 25), ('Bo', 41), ('Cy', 33), ('Di', 29)")
    _make_db(root, "music", "CREATE TABLE album (title TEXT, year INTEGER)",
             "INSERT INTO album VALUES ('A', 1990), ('B', 2005), ('C', 1999)")
    return root


def _spider_files(tmp_path: Path) -> tuple[Path, Path]:
    gold = tmp_path / "dev_gold.sql"
    gold.write_text("".join(f"{sql}\t{db}\n" for sql, db in GOLD) + "\n")
    pred = tmp_path / "pred.txt"
    pred.write_text("\n".join(PRED) + "\n")
    return gold, pred


def _bird_files(tmp_path: Path) -> tuple[Path, Path]:
    gold = tmp_path / "dev.json"
    gold.write_text(json.dumps([{"question_id": i, "db_id": db, "SQL": sql, "question": "?"}
                                for i, (sql, db) in enumerate(GOLD)]))
    pred = tmp_path / "predict_dev.json"
    pred.write_text(json.dumps({str(i): f"{sql}\t----- bird -----\t{db}"
                                for i, (sql, (_, db)) in enumerate(zip(PRED, GOLD, strict=True))}))
    return gold, pred


def _score(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["sql", "score", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def test_spider_files_print_accuracy_and_counts(db_root: Path, tmp_path: Path) -> None:
    gold, pred = _spider_files(tmp_path)
    code, out, err = _score("--db-root", db_root, "--gold", gold, "--pred", pred)
    assert code == 0, err
    assert "execution accuracy: 50.00% (2 of 4, mode bird)" in out
    counts = dict(line.split() for line in out.splitlines()[1:-1])  # last: the timeouts
    assert counts == {"ok": "2", "wrong": "1", "error": "1", "timeout": "0", "too_large": "0",
                      "infra_error": "0"}


def test_bird_files_json_summary_and_verdict_file(db_root: Path, tmp_path: Path) -> None:
    gold, pred = _bird_files(tmp_path)
    output = tmp_path / "out" / "verdicts.jsonl"
    code, out, err = _score("--db-root", db_root, "--gold", gold, "--pred", pred, "--json",
                            "--output", output)
    assert code == 0, err
    assert json.loads(out) == {
        "total": 4, "correct": 2, "accuracy": 0.5,
        "status_counts": {"ok": 2, "wrong": 1, "error": 1, "timeout": 0, "too_large": 0,
                          "infra_error": 0},
        "timeouts": "fixed: 30 s per query (the official evaluation rule)",
    }
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["index"], r["db_id"], r["correct"], r["status"]) for r in lines] == [
        (0, "concert", True, "ok"), (1, "concert", False, "wrong"),
        (2, "concert", False, "error"), (3, "music", True, "ok")]
    assert "nam" in lines[2]["error"] and lines[0]["error"] is None
    assert [p.name for p in output.parent.iterdir()] == ["verdicts.jsonl"]  # no temp file left


def test_training_budget_is_asked_for_and_said(db_root: Path, tmp_path: Path) -> None:
    gold = tmp_path / "gold.sql"
    gold.write_text("SELECT count(*) FROM singer\tconcert\n" * 2)
    pred = tmp_path / "pred.sql"
    pred.write_text("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
                    "SELECT count(*) FROM r\nSELECT count(name) FROM singer\n")
    code, out, err = _score("--db-root", db_root, "--gold", gold, "--pred", pred,
                            "--timeout", "20", "--training-budget", "--workers", "1")
    assert code == 0, err
    assert "execution accuracy: 50.00% (1 of 2" in out and "timeout     1" in out
    assert "timeouts: training budget: max(1 s, 10 x gold time) per query, at most 20 s; " \
           "40 s per batch" in out
    code, out, err = _score("--db-root", db_root, "--gold", gold, "--pred", pred,
                            "--timeout", "0.5", "--workers", "1")
    assert code == 0, err
    assert "timeouts: fixed: 0.5 s per query (the official evaluation rule)" in out


def test_modes_change_the_verdict(db_root: Path, tmp_path: Path) -> None:
    gold = tmp_path / "gold.sql"
    gold.write_text("SELECT name FROM singer ORDER BY age\tconcert\n")
    pred = tmp_path / "pred.sql"
    pred.write_text("SELECT name FROM singer ORDER BY age DESC\n")
    for mode, correct in (("bird", 1), ("multiset", 1), ("ordered", 0)):
        code, out, err = _score("--db-root", db_root, "--gold", gold, "--pred", pred, "--json",
                                "--mode", mode)
        assert code == 0, err
        assert json.loads(out)["correct"] == correct, mode


def test_missing_database_counts_as_infra_error(db_root: Path, tmp_path: Path) -> None:
    gold = tmp_path / "gold.sql"
    gold.write_text("SELECT 1\tnowhere\n")
    pred = tmp_path / "pred.sql"
    pred.write_text("SELECT 1\n")
    code, out, _ = _score("--db-root", db_root, "--gold", gold, "--pred", pred, "--json")
    assert code == 0
    assert json.loads(out)["status_counts"]["infra_error"] == 1


def test_count_mismatch_is_an_error(db_root: Path, tmp_path: Path) -> None:
    gold, pred = _spider_files(tmp_path)
    pred.write_text("\n".join(PRED[:3]))
    code, out, err = _score("--db-root", db_root, "--gold", gold, "--pred", pred)
    assert code == 2 and out == ""
    assert f"{pred}: 3 predictions, but {gold} has 4 questions" in err


@pytest.mark.parametrize(
    ("which", "content", "message"),
    [
        ("gold", "SELECT 1\tconcert\nSELECT 2 concert\n", "{gold}:2: expected 'SQL<TAB>db_id'"),
        ("gold", '[{"db_id": "concert", "SQL": "SELECT 1"},\n {"db_id": "concert"}]',
         "{gold}: item 1: missing gold SQL"),
        ("gold", '[{"db_id": "concert", "SQL": "SELECT 1"},\n {"db_id": }]',
         "{gold}: invalid JSON at line 2, column 12"),
        ("gold", '{"0": "SELECT 1"}', "{gold}: expected a JSON list of questions"),
        ("pred", '{"0": "SELECT 1", "2": "SELECT 2"}', "{pred}: key '1' is missing"),
        ("pred", '{"0": "SELECT 1", "x": "SELECT 2"}', "{pred}: key 'x': keys must be"),
        ("pred", '{"0": "SELECT 1\\t----- bird -----\\tmusic"}',
         "{pred}: key '0': db_id 'music' differs from the gold question's 'concert'"),
    ],
)
def test_malformed_files_name_file_and_place(db_root: Path, tmp_path: Path, which: str,
                                             content: str, message: str) -> None:
    gold = tmp_path / "gold.txt"
    gold.write_text("SELECT 1\tconcert\n")
    pred = tmp_path / "pred.txt"
    pred.write_text("SELECT 1\n")
    (gold if which == "gold" else pred).write_text(content)
    code, _, err = _score("--db-root", db_root, "--gold", gold, "--pred", pred)
    assert code == 2
    assert message.format(gold=gold, pred=pred) in err
    assert "Traceback" not in err


def test_bad_options_are_reported(db_root: Path, tmp_path: Path) -> None:
    gold, pred = _spider_files(tmp_path)
    code, _, err = _score("--db-root", db_root, "--gold", gold, "--pred", pred, "--mode", "set")
    assert code == 2 and "--mode 'set'" in err
    code, _, err = _score("--db-root", tmp_path / "none", "--gold", gold, "--pred", pred)
    assert code == 2 and "not a directory" in err
    code, _, err = _score("--db-root", db_root, "--gold", tmp_path / "no.sql", "--pred", pred)
    assert code == 2 and "no.sql: gold file not found" in err


def test_without_the_plugin_its_commands_are_absent_and_the_rest_works(tmp_path: Path) -> None:
    # sys.modules[name] = None makes every import of the plugin fail, as if not installed
    code = ("import sys; sys.modules['rewardsql_sql_reward'] = None; "
            "sys.argv = ['rewardsql'] + sys.argv[1:]; from rewardsql.cli import main; main()")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})

    helped = run("--help")
    assert helped.returncode == 0, helped.stderr
    assert " train " in helped.stdout and " plugins " in helped.stdout
    assert " sql " not in helped.stdout and " data " not in helped.stdout
    missing = run("sql", "score")
    assert missing.returncode == 2 and "No such command 'sql'" in missing.stderr
    listing = run("plugins", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    records = {r["plugin"]: r for r in json.loads(listing.stdout)}
    assert records["rewardsql-sql-reward"]["status"] == "error"
    assert "Traceback" not in listing.stderr
