"""Chain-of-CTEs (CoCTE) responses: steps, and their intermediate results for the PRM.

A CoCTE response writes SQL as steps separated by :data:`STEP_TAG` (``" и "``); each step but the
last defines one CTE, the last is the final SELECT. :func:`execute_steps` produces the
execution-augmented text the PRM is trained and run on (spec/cocte.md, "Intermediate results").
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence

from rewardsql_sql_reward.verifier import (
    DatabaseRef,
    ExecResult,
    SQLVerifier,
    resolve_db_path,
    shared_verifier,
)
from rewardsql_sql_reward.verifier.extract import (
    CTE_DEF,
    STEP_TAG,
    TAG_PATTERN,
    clean_response,
    join_steps,
)
from rewardsql_sql_reward.verifier.sqltext import first_semicolon, split_outside_literals

__all__ = [
    "STEP_TAG",
    "annotation_failed",
    "execute_steps",
    "execute_steps_batch",
    "split_steps",
    "step_annotations_batch",
    "step_queries",
    "summarize",
    "to_tagged",
]

_BLANK_LINE = re.compile(r"\n[ \t]*\n\s*")

#: Rows shown per intermediate step, and the length the summary is cut at (published values).
RESULT_ROWS = 50
RESULT_CHARS = 500
_FAILED = "Execution error: "


def _raw_steps(text: str) -> list[str]:
    """Steps as written: split at tags (outside literals) or, without any tag, at blank lines."""
    if TAG_PATTERN.search(text):
        pieces = split_outside_literals(text, TAG_PATTERN)
        if len(pieces) > 1:
            return [p for p in pieces if p.strip()]
    return [p.strip() for p in split_outside_literals(text, _BLANK_LINE) if p.strip()]


def split_steps(response: str) -> list[str]:
    """The steps of a CoCTE response, stripped.

    Chat end tokens, a reasoning block and code fences are removed first (as in
    :func:`~rewardsql_sql_reward.extract_sql`). Steps are separated by :data:`STEP_TAG`; a
    response without any tag is split at blank lines instead. Tags inside string literals do
    not split.
    """
    return [step.strip() for step in _raw_steps(clean_response(response))]


def to_tagged(response: str) -> str:
    """The response rewritten in the published form ``step1 и step2 и ... и`` (for the PRM)."""
    return "".join(step + STEP_TAG for step in split_steps(response))


def step_queries(steps: Sequence[str], limit: int = RESULT_ROWS) -> list[str | None]:
    """The SQL run to show each step's result; None for the final SELECT.

    Step k that defines a CTE runs steps 1..k followed by ``SELECT * FROM <its CTE> LIMIT 50``;
    the final step (not a CTE definition) runs the whole statement, and any other step runs
    steps 1..k as they are (they usually fail, and the error is the annotation).
    """
    queries: list[str | None] = []
    for k, step in enumerate(steps):
        joined = join_steps(list(steps[: k + 1]))
        definition = CTE_DEF.match(step)
        if definition:
            queries.append(f"{joined.rstrip().rstrip(',')}\nSELECT * FROM {definition.group(1)} "
                           f"LIMIT {limit}")
        elif k == len(steps) - 1:
            queries.append(None)
        else:
            queries.append(joined)
    return queries


def summarize(result: ExecResult, max_chars: int = RESULT_CHARS) -> str:
    """One step's annotation text: counts of each distinct row, or the execution error.

    The published format: ``str(dict(Counter(rows)))`` cut at ``max_chars`` characters and
    closed with ``...}``; on failure ``Execution error: <message>``.
    """
    if not result.ok:
        return f"{_FAILED}{result.error}"
    text = str(dict(Counter(result.rows or [])))
    return text[:max_chars] + "...}" if len(text) > max_chars else text


class _Cache:
    """A bounded LRU of step annotations keyed by (database path, SQL)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[tuple[str, str, int], str] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, str, int]) -> str | None:
        with self.lock:
            value = self.data.get(key)
            if value is not None:
                self.data.move_to_end(key)
            return value

    def put(self, key: tuple[str, str, int], value: str) -> None:
        with self.lock:
            self.data[key] = value
            while len(self.data) > self.size:
                self.data.popitem(last=False)


_CACHE = _Cache(50_000)


def execute_steps_batch(
    items: Sequence[tuple[str, DatabaseRef]],
    verifier: SQLVerifier | str | os.PathLike | Mapping[str, str | os.PathLike],
    *,
    limit: int = RESULT_ROWS,
    max_chars: int = RESULT_CHARS,
    annotate_final: bool = True,
    timeout: float | None = None,
) -> list[str]:
    """:func:`execute_steps` for many ``(response, db_id)`` pairs; one parallel verifier call."""
    return [_annotate(steps, notes) for steps, notes in step_annotations_batch(
        items, verifier, limit=limit, max_chars=max_chars, annotate_final=annotate_final,
        timeout=timeout)]


def step_annotations_batch(
    items: Sequence[tuple[str, DatabaseRef]],
    verifier: SQLVerifier | str | os.PathLike | Mapping[str, str | os.PathLike],
    *,
    limit: int = RESULT_ROWS,
    max_chars: int = RESULT_CHARS,
    annotate_final: bool = True,
    timeout: float | None = None,
) -> list[tuple[list[str], list[str | None]]]:
    """Each response's steps and each step's annotation (:func:`summarize` of its query; None
    for the final step when ``annotate_final`` is false), one parallel verifier call."""
    if isinstance(verifier, SQLVerifier):
        resolve = verifier
    else:  # a db_root: the process-wide verifier, with databases passed as paths
        root = verifier
        resolve = shared_verifier()
    plans = []
    todo: dict[tuple[str, str, int], tuple[DatabaseRef, str]] = {}
    for response, db_id in items:
        refused = None
        if not isinstance(verifier, SQLVerifier):
            try:
                db_id = resolve_db_path(root, db_id)
            except LookupError as exc:
                # The shared verifier has no root of its own: handed the id, it would only say
                # "no db_root given". Why the root refused the id is the answer; nothing runs.
                refused = f"{_FAILED}{exc}"
        steps = _raw_steps(clean_response(response))
        queries = step_queries(steps, limit)
        path, _ = resolve._path(db_id) if refused is None else ("", None)
        keys = []
        for _k, sql in enumerate(queries):
            if sql is None:
                if not annotate_final:
                    keys.append(None)
                    continue
                sql = join_steps(steps)
                cut = first_semicolon(sql)
                sql = sql[:cut] if cut != -1 else sql
            key = (path or f"?{db_id}", sql, max_chars)
            keys.append(key)
            if refused is None and _CACHE.get(key) is None:
                todo[key] = (db_id, sql)
        plans.append((steps, keys, refused))
    results = resolve.execute_many(list(todo.values()), timeout=timeout)
    fresh: dict[tuple[str, str, int], str] = {}
    for key, result in zip(todo, results, strict=True):
        fresh[key] = summarize(result, max_chars)
        if result.status in ("ok", "error") and not key[0].startswith("?"):
            _CACHE.put(key, fresh[key])
    return [(steps, [None if k is None else refused or fresh.get(k) or _CACHE.get(k) or ""
                     for k in keys])
            for steps, keys, refused in plans]


def annotation_failed(note: str | None) -> bool:
    """Whether a step annotation reports a failed execution (see :func:`summarize`)."""
    return note is not None and note.startswith(_FAILED)


def _annotate(steps: list[str], annotations: list[str | None]) -> str:
    # The published layout: first step stripped, later steps keep their leading whitespace and
    # lose their trailing whitespace, each followed by <result>...</result>, then the tag.
    text = ""
    for k, (step, note) in enumerate(zip(steps, annotations, strict=True)):
        text = step.strip() if k == 0 else f"{text}{STEP_TAG}{step.rstrip()}"
        if note is not None:
            text += f"<result>{note}</result>"
    return text + STEP_TAG if steps else ""


def execute_steps(
    response: str,
    db_id: DatabaseRef,
    verifier: SQLVerifier | str | os.PathLike | Mapping[str, str | os.PathLike],
    *,
    limit: int = RESULT_ROWS,
    max_chars: int = RESULT_CHARS,
    annotate_final: bool = True,
    timeout: float | None = None,
) -> str:
    """The CoCTE response with each step's intermediate result, as the PRM reads it.

    Args:
        response: a CoCTE response (steps separated by :data:`STEP_TAG` or by blank lines).
        db_id: the database, resolved by ``verifier`` (or against the db_root given instead).
        verifier: an :class:`SQLVerifier`, or a db_root (directory or ``{db_id: path}``) to use
            with the process-wide shared verifier.
        limit, max_chars: rows shown per CTE step and the summary's length cut (50 and 500).
        annotate_final: also annotate the final SELECT with the full query's result, as the
            published training pipeline does.

    Returns ``step1<result>R1</result> и step2<result>R2</result> и ... и``, where each R is
    :func:`summarize` of step k's query (:func:`step_queries`). Annotations are cached by
    (database, SQL), so a step prefix shared by many sampled responses runs once.
    """
    return execute_steps_batch([(response, db_id)], verifier, limit=limit, max_chars=max_chars,
                               annotate_final=annotate_final, timeout=timeout)[0]

