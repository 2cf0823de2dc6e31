"""Helpers of the plugin's tests: real SQLite databases built by the tests."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

SINGERS = [(1, "Ana", 25, "PT"), (2, "Bo", 41, "SE"), (3, "Cy", 33, "US"), (4, "Di", 29, "US"),
           (5, "Ed", 33, "UK"), (6, "Fa", 52, "PT")]
CONCERTS = [(1, 2, 2019), (2, 2, 2020), (3, 3, 2020), (4, 6, 2021), (5, 3, 2021)]


def make_concert_db(root: Path, db_id: str = "concert") -> Path:
    """``root/<db_id>/<db_id>.sqlite`` with tables singer(id, name, age, country) and concert."""
    folder = root / db_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{db_id}.sqlite"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, "
                     "country TEXT)")
        conn.execute("CREATE TABLE concert (id INTEGER PRIMARY KEY, singer_id INTEGER "
                     "REFERENCES singer(id), year INTEGER)")
        conn.executemany("INSERT INTO singer VALUES (?, ?, ?, ?)", SINGERS)
        conn.executemany("INSERT INTO concert VALUES (?, ?, ?)", CONCERTS)
    conn.close()
    return path


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(*folders: Path) -> set[Path]:
    """Every path under the folders (files and directories)."""
    return {p for folder in folders for p in folder.rglob("*")}
