"""Hostile SQL: each query its own case. It must end non-ok within timeout + 1 s, leave the
database byte-identical, create no file in the database folder or the working directory, and
leave the pool serving normal queries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _sqlreward_helpers import file_hash, make_concert_db, tree
from rewardsql_sql_reward import SQLVerifier

TIMEOUT = 1.0
DEEP = 3000
ENDLESS = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r)"

HOSTILE = {
    "insert": "INSERT INTO singer VALUES (99, 'Evil', 1, 'XX')",
    "update": "UPDATE singer SET age = 0",
    "delete": "DELETE FROM singer",
    "drop_table": "DROP TABLE singer",
    "create_table": "CREATE TABLE evil (x)",
    "create_temp_table": "CREATE TEMP TABLE evil AS SELECT * FROM singer",
    "create_index": "CREATE INDEX evil ON singer(age)",
    "create_trigger": "CREATE TRIGGER evil AFTER INSERT ON singer BEGIN DELETE FROM singer; END",
    "create_view": "CREATE VIEW evil AS SELECT 1",
    "create_virtual_table": "CREATE VIRTUAL TABLE evil USING fts5(x)",
    "alter_table": "ALTER TABLE singer ADD COLUMN evil TEXT",
    "replace_into": "REPLACE INTO singer VALUES (1, 'Evil', 1, 'XX')",
    "insert_returning": "INSERT INTO singer (name) VALUES ('x') RETURNING id",
    "attach_new_file": "ATTACH DATABASE '{dbdir}/evil.sqlite' AS evil",
    "attach_uri_rwc": "ATTACH DATABASE 'file:{dbdir}/evil2.sqlite?mode=rwc' AS evil",
    "attach_memory": "ATTACH DATABASE ':memory:' AS evil",
    "detach_main": "DETACH DATABASE main",
    "vacuum_into": "VACUUM INTO '{dbdir}/copy.sqlite'",
    "vacuum": "VACUUM",
    "reindex": "REINDEX",
    "analyze": "ANALYZE",
    "begin_immediate": "BEGIN IMMEDIATE",
    "savepoint": "SAVEPOINT evil",
    "pragma_writable_schema": "PRAGMA writable_schema = ON",
    "pragma_query_only_off": "PRAGMA query_only = OFF",
    "pragma_journal_mode_wal": "PRAGMA journal_mode = WAL",
    "pragma_temp_store_directory": "PRAGMA temp_store_directory = '{dbdir}'",
    "pragma_hard_heap_limit": "PRAGMA hard_heap_limit = 0",
    "pragma_function_form": "SELECT * FROM pragma_writable_schema",
    "load_extension": "SELECT load_extension('/tmp/evil.so')",
    "load_extension_entry": "SELECT load_extension('libc.so.6', 'system')",
    "writefile": "SELECT writefile('{dbdir}/evil.txt', 'x')",
    "readfile": "SELECT readfile('/etc/passwd')",
    "fts3_tokenizer": "SELECT fts3_tokenizer('simple')",
    "recursive_cte_count": f"{ENDLESS} SELECT count(*) FROM r",
    "recursive_cte_rows": f"{ENDLESS} SELECT i FROM r",
    "recursive_cte_sorted": f"{ENDLESS} SELECT i FROM r ORDER BY i DESC LIMIT 1",
    "recursive_cte_strings": "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r) "
                             "SELECT length(s) FROM r ORDER BY 1 DESC LIMIT 1",
    "cross_join": "SELECT count(*) FROM " + ", ".join(f"singer s{i}" for i in range(14)),
    "cross_join_sorted": "SELECT a.name FROM singer a, singer b, singer c, singer d, singer e, "
                         "singer f, singer g, singer h ORDER BY random()",
    "randomblob_huge": "SELECT randomblob(1000000000)",
    "randomblob_float": "SELECT length(randomblob(1e9))",
    "zeroblob_huge": "SELECT zeroblob(1000000000)",
    "hex_blowup": "SELECT hex(hex(hex(zeroblob(10000000))))",
    "printf_replace_blowup": "SELECT replace(printf('%.*c', 20000000, 'x'), 'x', 'xx')",
    "replace_blowup": "SELECT replace(replace(replace(hex(zeroblob(1000000)), '0', '00000'), "
                      "'0', '00000'), '0', '00000')",
    "group_concat_blowup": f"{ENDLESS} SELECT group_concat(hex(zeroblob(1000))) FROM r",
    "sort_big_values": "SELECT randomblob(5000000) FROM singer a, singer b, singer c "
                       "ORDER BY 1",
    "deep_parentheses": "SELECT " + "(" * DEEP + "1" + ")" * DEEP,
    "deep_unary": "SELECT " + "-" * DEEP + "1",
    "deep_subqueries": "SELECT " + "(SELECT " * 300 + "1" + ")" * 300,
    "deep_case": "SELECT " + "CASE WHEN 1 THEN " * 500 + "1" + " END" * 500,
    "huge_compound": " UNION ALL ".join(["SELECT 1"] * 1000),
    "two_statements_write": "SELECT 1; DROP TABLE singer",
    "two_statements_attach": "SELECT 1; ATTACH DATABASE '{dbdir}/evil3.sqlite' AS evil",
    "two_selects": "SELECT name FROM singer; SELECT age FROM singer",
    "like_pattern_blowup": "SELECT 1 WHERE hex(zeroblob(100000)) LIKE "
                           "'%' || replace(hex(zeroblob(30000)), '0', '%0') || '%'",
}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SQLVerifier, Path]]:
    root = tmp_path_factory.mktemp("hostile")
    make_concert_db(root)
    with SQLVerifier(root, timeout=TIMEOUT, workers=2) as verifier:
        verifier.start()
        yield verifier, root


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_query_is_contained(name: str, sandbox: tuple[SQLVerifier, Path],
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    verifier, root = sandbox
    monkeypatch.chdir(tmp_path)
    db = root / "concert" / "concert.sqlite"
    sql = HOSTILE[name].format(dbdir=db.parent)
    before_hash, before_files = file_hash(db), tree(root, tmp_path)

    start = time.monotonic()
    result = verifier.execute("concert", sql)
    elapsed = time.monotonic() - start

    assert result.status != "ok", f"{name} ran: {result.rows!r:.200}"
    assert result.status in ("error", "timeout", "too_large"), result
    assert elapsed < TIMEOUT + 1.0
    verdict = verifier.compare("concert", sql, "SELECT 1")
    assert not verdict.correct and verdict.status != "ok"
    assert file_hash(db) == before_hash
    assert tree(root, tmp_path) == before_files
    assert verifier.execute("concert", "SELECT count(*) FROM singer").rows == [(6,)]
