"""Each safety layer of the SQL worker on its own (issue 27).

The hostile-query tests (test_security.py) check that a query ends non-ok, which any one layer
is enough for: a layer lost behind another goes unnoticed there. Here the authorizer is checked
alone, on a writable connection with no other defence, where every statement runs without it;
and the other layers (read-only open, ``query_only``, the per-connection limits) are checked
with the authorizer switched off, on a connection opened exactly as the worker opens it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from _sqlreward_helpers import file_hash, make_concert_db
from rewardsql_sql_reward import SQLVerifier
from rewardsql_sql_reward.verifier._worker import Executor, _authorize

#: One statement per action class the authorizer must deny; each runs on a plain connection.
DENIED = {
    "insert": "INSERT INTO singer VALUES (99, 'Evil', 1, 'XX')",
    "update": "UPDATE singer SET age = 0",
    "delete": "DELETE FROM singer",
    "create_table": "CREATE TABLE evil (x)",
    "create_temp_table": "CREATE TEMP TABLE evil (x)",
    "create_index": "CREATE INDEX evil ON singer(age)",
    "create_temp_index": "CREATE INDEX temp.evil ON t(x)",
    "create_view": "CREATE VIEW evil AS SELECT 1",
    "create_temp_view": "CREATE TEMP VIEW evil AS SELECT 1",
    "create_trigger": "CREATE TRIGGER evil AFTER INSERT ON singer BEGIN SELECT 1; END",
    "create_temp_trigger": "CREATE TEMP TRIGGER evil AFTER INSERT ON singer BEGIN SELECT 1; END",
    "create_virtual_table": "CREATE VIRTUAL TABLE evil USING fts5(x)",
    "drop_table": "DROP TABLE concert",
    "drop_index": "DROP INDEX idx",
    "drop_view": "DROP VIEW v",
    "drop_trigger": "DROP TRIGGER trg",
    "alter_table": "ALTER TABLE singer ADD COLUMN evil TEXT",
    "attach": "ATTACH DATABASE ':memory:' AS evil",
    "detach": "DETACH DATABASE other",
    "pragma_write": "PRAGMA user_version = 7",
    "pragma_query_only_off": "PRAGMA query_only = OFF",
    "pragma_read_not_listed": "PRAGMA database_list",
    "transaction": "BEGIN",
    "savepoint": "SAVEPOINT evil",
    "analyze": "ANALYZE",
    "reindex": "REINDEX",
    "denied_function": "SELECT readfile('x')",  # _plain registers one, as the sqlite3 shell does
}
#: Read-only statements the authorizer must let through.
ALLOWED = ["SELECT name FROM singer WHERE age > 30", "PRAGMA table_info(singer)",
           "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r LIMIT 3) "
           "SELECT * FROM r", "SELECT upper(name), count(*) FROM singer GROUP BY 1"]


@pytest.fixture
def plain_db(tmp_path: Path) -> Path:
    """A writable copy of the concert database with objects to drop and a database to detach."""
    path = make_concert_db(tmp_path)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE INDEX idx ON concert(year)")
        conn.execute("CREATE VIEW v AS SELECT 1")
        conn.execute("CREATE TRIGGER trg AFTER DELETE ON concert BEGIN SELECT 1; END")
    conn.close()
    return path


def _plain(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("ATTACH DATABASE ':memory:' AS other")
    conn.execute("CREATE TEMP TABLE t (x)")
    conn.execute("PRAGMA query_only = OFF")
    conn.create_function("readfile", 1, len)
    return conn


@pytest.mark.parametrize("name", sorted(DENIED))
def test_the_authorizer_alone_denies_each_action_class(plain_db: Path, tmp_path: Path,
                                                      name: str) -> None:
    sql = DENIED[name]
    control = tmp_path / "control.sqlite"
    shutil.copy(plain_db, control)
    conn = _plain(control)  # no authorizer: the statement is valid and does run
    conn.execute(sql).fetchall()
    conn.close()

    before = file_hash(plain_db)
    conn = _plain(plain_db)
    conn.set_authorizer(_authorize)
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        conn.execute(sql).fetchall()
    conn.close()
    assert file_hash(plain_db) == before


@pytest.mark.parametrize("sql", ALLOWED)
def test_the_authorizer_allows_reading(plain_db: Path, sql: str) -> None:
    conn = _plain(plain_db)
    conn.set_authorizer(_authorize)
    assert conn.execute(sql).fetchall()
    conn.close()


# -- the other layers, with the authorizer off ---------------------------------------------------

@pytest.fixture
def worker_connection(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, Path]]:
    """A connection opened by the worker's own code, with the verifier's settings, and then its
    authorizer removed."""
    path = make_concert_db(tmp_path)
    with SQLVerifier(tmp_path, workers=1) as verifier:
        settings = json.loads(verifier.pool._settings_json)
    executor = Executor(settings)
    conn = executor._open(str(path))
    conn.set_authorizer(None)
    yield conn, path
    conn.close()


NOT_OK_WITHOUT_AUTHORIZER = {
    # SQLITE_LIMIT_ATTACHED = 0
    "attach_memory": ("ATTACH DATABASE ':memory:' AS evil", "too many attached databases"),
    "attach_file": ("ATTACH DATABASE '{dir}/evil.sqlite' AS evil",
                    "too many attached databases"),
    # read-only open and PRAGMA query_only
    "insert": ("INSERT INTO singer VALUES (99, 'Evil', 1, 'XX')", "readonly|query_only"),
    "drop_table": ("DROP TABLE singer", "readonly|query_only"),
    "create_table": ("CREATE TABLE evil (x)", "readonly|query_only"),
    # SQLITE_LIMIT_LENGTH (32 MiB by default)
    "huge_value": ("SELECT zeroblob(100000000)", "too big"),
    # SQLITE_LIMIT_EXPR_DEPTH, SQLITE_LIMIT_COMPOUND_SELECT
    "deep_expression": ("SELECT " + "1 + " * 300 + "1", "maximum depth 200"),
    "huge_compound": (" UNION ALL ".join(["SELECT 1"] * 300), "too many terms"),
}


@pytest.mark.parametrize("name", sorted(NOT_OK_WITHOUT_AUTHORIZER))
def test_the_other_layers_hold_with_the_authorizer_off(
        worker_connection: tuple[sqlite3.Connection, Path], name: str) -> None:
    conn, path = worker_connection
    sql, message = NOT_OK_WITHOUT_AUTHORIZER[name]
    before = file_hash(path)
    with pytest.raises(sqlite3.DatabaseError, match=message):
        conn.execute(sql.format(dir=path.parent)).fetchall()
    assert file_hash(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert conn.execute("SELECT count(*) FROM singer").fetchall() == [(6,)]
