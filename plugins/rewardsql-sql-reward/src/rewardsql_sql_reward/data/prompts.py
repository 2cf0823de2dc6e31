"""The policy's prompt: instructions for Chain-of-CTEs SQL, the schema, sample values, question.

One place builds prompts, so data preparation, SFT data and the local engine ask the same thing.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

SYSTEM_PROMPT = (
    "You are a text-to-SQL assistant. Answer with one SQLite query written as a chain of CTE "
    "steps (Chain-of-CTEs): each step but the last defines one common table expression, the last "
    "step is the final SELECT. Put a blank line between steps. Write only SQL."
)


def schema_ddl(db_path: str | os.PathLike[str], sample_values: int = 3) -> str:
    """The database's CREATE TABLE statements, each followed by a few distinct values per column.

    The database is opened read-only. ``sample_values=0`` leaves the values out.
    """
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"database not found: {path}")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        ).fetchall()
        parts = []
        for table, ddl in rows:
            parts.append(ddl.strip() + ";")
            if sample_values > 0:
                parts.extend(_sample_lines(conn, table, sample_values))
        return "\n".join(parts)
    finally:
        conn.close()


def _sample_lines(conn: sqlite3.Connection, table: str, limit: int) -> list[str]:
    quoted = '"' + table.replace('"', '""') + '"'
    lines = []
    for column in [row[1] for row in conn.execute(f"PRAGMA table_info({quoted})")]:
        col = '"' + column.replace('"', '""') + '"'
        values = [
            row[0]
            for row in conn.execute(
                f"SELECT DISTINCT {col} FROM {quoted} WHERE {col} IS NOT NULL LIMIT ?", (limit,)
            )
        ]
        if values:
            shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values)
            lines.append(f"-- {table}.{column} examples: {shown}")
    return lines


def build_messages(schema: str, question: str, evidence: str | None = None) -> list[dict[str, str]]:
    """Chat messages asking for Chain-of-CTEs SQL; BIRD's ``evidence`` goes in as a hint."""
    user = f"Database schema:\n{schema}\n\nQuestion: {question.strip()}"
    if evidence and evidence.strip():
        user += f"\nHint: {evidence.strip()}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
