"""Execution accuracy of a prediction file: reading Spider/BIRD gold and prediction files."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardsql_sql_reward.verifier import STATUSES, SQLVerifier, Verdict
from rewardsql_sql_reward.verifier.budget import Budget

#: The separator inside a BIRD ``predict_dev.json`` value: ``"SQL\t----- bird -----\tdb_id"``.
BIRD_SEPARATOR = "\t----- bird -----\t"


class EvalFileError(ValueError):
    """A gold or prediction file is missing or malformed; the message names file and line/key."""


@dataclass(frozen=True)
class Question:
    """One gold question: its database and gold SQL."""

    db_id: str
    sql: str


def _read(path: Path, what: str) -> str:
    if not path.is_file():
        raise EvalFileError(f"{path}: {what} file not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EvalFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvalFileError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None


def load_gold(path: str | os.PathLike[str]) -> list[Question]:
    """A Spider/BIRD ``dev.json`` (objects with ``db_id`` and ``query`` or ``SQL``) or a gold file
    of ``SQL<TAB>db_id`` lines (blank lines skipped, as Spider's evaluation does)."""
    file = Path(path)
    text = _read(file, "gold")
    if text.lstrip().startswith("{"):
        raise EvalFileError(f"{file}: expected a JSON list of questions (dev.json), got an object")
    if text.lstrip().startswith("["):
        data = _json(file, text)
        questions = []
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise EvalFileError(f"{file}: item {i}: expected an object, got "
                                    f"{type(item).__name__}")
            db_id = item.get("db_id")
            sql = item.get("query", item.get("SQL"))
            if not isinstance(db_id, str) or not db_id:
                raise EvalFileError(f"{file}: item {i}: missing or empty 'db_id'")
            if not isinstance(sql, str):
                raise EvalFileError(f"{file}: item {i}: missing gold SQL ('query' or 'SQL')")
            questions.append(Question(db_id, sql))
        return questions
    questions = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        sql, tab, db_id = line.rstrip("\r\n").rpartition("\t")
        if not tab or not db_id.strip() or not sql.strip():
            raise EvalFileError(f"{file}:{lineno}: expected 'SQL<TAB>db_id', got {line[:80]!r}")
        questions.append(Question(db_id.strip(), sql.strip()))
    return questions


def load_predictions(path: str | os.PathLike[str]) -> list[tuple[str, str | None]]:
    """``(sql, db_id or None)`` per question: a BIRD ``predict_dev.json`` (``{"0": "SQL\\t-----
    bird -----\\tdb_id", ...}``) or one SQL per line (blank lines skipped, as Spider does)."""
    file = Path(path)
    text = _read(file, "prediction")
    if text.lstrip().startswith("{"):
        data = _json(file, text)
        indexed: dict[int, tuple[str, str | None]] = {}
        for key, value in data.items():
            if not (isinstance(key, str) and key.isdigit()):
                raise EvalFileError(f"{file}: key {key!r}: keys must be question numbers 0, 1, ...")
            if not isinstance(value, str):
                raise EvalFileError(f"{file}: key {key!r}: expected a string, got "
                                    f"{type(value).__name__}")
            sql, sep, db_id = value.partition(BIRD_SEPARATOR)
            indexed[int(key)] = (sql.strip(), db_id.strip() if sep else None)
        missing = sorted(set(range(len(indexed))) - set(indexed))
        if missing:
            raise EvalFileError(f"{file}: key {str(missing[0])!r} is missing (keys must be 0 to "
                                f"{len(indexed) - 1} without gaps)")
        return [indexed[i] for i in range(len(indexed))]
    return [(line.strip(), None) for line in text.splitlines() if line.strip()]


def pair_up(gold_path: str | os.PathLike[str], pred_path: str | os.PathLike[str]
            ) -> list[tuple[Question, str]]:
    """Gold questions with their predicted SQL; a count or db_id mismatch is an error."""
    gold = load_gold(gold_path)
    preds = load_predictions(pred_path)
    if len(gold) != len(preds):
        raise EvalFileError(f"{pred_path}: {len(preds)} predictions, but {gold_path} has "
                            f"{len(gold)} questions")
    for i, (question, (_, db_id)) in enumerate(zip(gold, preds, strict=True)):
        if db_id is not None and db_id != question.db_id:
            raise EvalFileError(f"{pred_path}: key '{i}': db_id {db_id!r} differs from the gold "
                                f"question's {question.db_id!r}")
    return [(q, sql) for q, (sql, _) in zip(gold, preds, strict=True)]


def score_pairs(verifier: SQLVerifier, pairs: Sequence[tuple[Question, str]], *, mode: str,
                chunk: int = 256, progress: Callable[[int], None] | None = None,
                budget: Budget | None = None) -> list[Verdict]:
    """Verdicts for every pair, verified in chunks; ``progress(n)`` after each chunk.
    ``budget``: the training-time budget per chunk; None: the fixed timeout (official)."""
    verdicts: list[Verdict] = []
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        verdicts += verifier.verify_batch([(q.db_id, sql, q.sql) for q, sql in part], mode=mode,
                                          budget=budget)
        if progress is not None:
            progress(len(part))
    return verdicts


def summary(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """``{"total", "correct", "accuracy", "status_counts"}`` (every status listed)."""
    counts = Counter(v.status for v in verdicts)
    correct = sum(v.correct for v in verdicts)
    return {
        "total": len(verdicts),
        "correct": correct,
        "accuracy": correct / len(verdicts) if verdicts else 0.0,
        "status_counts": {status: counts.get(status, 0) for status in STATUSES},
    }
