"""The SQL execution verifier: runs model-written SQL safely and compares it with gold SQL."""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from rewardsql_sql_reward.verifier.budget import Budget, run_budgeted
from rewardsql_sql_reward.verifier.pool import (
    DEADLINE_ERROR,
    Outcome,
    Task,
    WorkerPool,
    default_workers,
)
from rewardsql_sql_reward.verifier.sqltext import has_top_level_order_by

#: Every status a verdict can have. ``execute`` never returns ``wrong``.
STATUSES: tuple[str, ...] = ("ok", "wrong", "error", "timeout", "too_large", "infra_error")
#: Comparison modes; see :meth:`SQLVerifier.compare`.
MODES: tuple[str, ...] = ("bird", "multiset", "ordered")

#: Environment variable: the number of worker processes of every verifier created with
#: ``workers=None`` (the reward function's shared verifier in each process, the ``sql_verifier``
#: manager and ``rewardsql sql score`` by default). Unset: the CPUs this process may use.
WORKERS_ENV = "REWARDSQL_SQL_WORKERS"

#: A database: a db_id resolved against ``db_root``, or an explicit path (``pathlib.Path``).
DatabaseRef = Union[str, os.PathLike]  # noqa: UP007 (a runtime alias on Python 3.10)
#: ``db_root`` forms: a directory laid out as ``<db_root>/<db_id>/<db_id>.sqlite``, an explicit
#: ``{db_id: path}`` mapping, or None (every database is then given as a ``Path``).
DbRoot = Union[str, os.PathLike, Mapping[str, Union[str, os.PathLike]], None]  # noqa: UP007


@dataclass(frozen=True)
class ExecResult:
    """Outcome of executing one query: ``rows`` is the full result when ``status == "ok"``."""

    status: str
    rows: list[tuple] | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Verdict:
    """Outcome of comparing a predicted query with a gold query.

    ``status`` is ``ok`` (same result), ``wrong`` (both ran, results differ), ``error``,
    ``timeout`` or ``too_large`` (the prediction failed that way), or ``infra_error`` (a missing
    or unreadable database, a crashed worker, or a gold query that itself failed).
    ``seconds`` is the execution time of the prediction plus that of the gold when it ran now.
    """

    correct: bool
    status: str
    error: str | None = None
    seconds: float = 0.0


class DatabaseLookupError(LookupError, ValueError):
    """A ``db_id`` that names no database under the root: unknown, or not a plain name.

    A ``ValueError`` too, so callers that report bad sample fields as ``ValueError`` (the
    ``sql_verifier`` manager) turn it into an ``infra_error`` like the others.
    """


def is_plain_db_id(db_id: object) -> bool:
    """True for a name that stays inside a database root when joined to it: non-empty, not
    ``.``/``..``, and without path separators or NUL. A ``db_id`` comes from data files a user
    may have downloaded, so ``/elsewhere/x`` or ``../x`` must not reach the file system."""
    if not isinstance(db_id, str) or db_id in ("", ".", ".."):
        return False
    return not any(c in db_id for c in ("/", "\\", "\0", os.sep, os.altsep or "/"))


def resolve_db_path(db_root: DbRoot, db_id: DatabaseRef) -> Path:
    """The database file for ``db_id``; raises :class:`DatabaseLookupError` naming the id.

    With a directory root only plain names (:func:`is_plain_db_id`) are accepted; with a
    mapping only its keys, which give exactly the mapped paths. A ``pathlib.Path`` is the
    caller's own explicit choice and is used as given.
    """
    if isinstance(db_id, os.PathLike):
        return Path(db_id)
    if db_root is None:
        raise DatabaseLookupError(f"no db_root given to find database {db_id!r}: give the "
                                  "verifier a db_root, or the database's path")
    if isinstance(db_root, Mapping):
        if not isinstance(db_id, str) or db_id not in db_root:
            raise DatabaseLookupError(f"database {db_id!r} is not in the db_root mapping")
        return Path(db_root[db_id])
    if not is_plain_db_id(db_id):
        raise DatabaseLookupError(f"database id {db_id!r} is not a plain name (no path "
                                  "separators, '..', absolute paths or NUL): refused")
    return Path(db_root) / db_id / f"{db_id}.sqlite"


def digest_kind(mode: str, gold: str) -> str:
    """What a comparison in ``mode`` compares: a ``set``, a ``multiset`` or an ``ordered`` list."""
    if mode == "bird":
        return "set"
    if mode == "multiset":
        return "multiset"
    return "ordered" if has_top_level_order_by(gold) else "multiset"


def configured_workers() -> int:
    """Workers for ``workers=None``: ``$REWARDSQL_SQL_WORKERS`` if set, else the CPU count."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if not raw:
        return default_workers()
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"environment variable {WORKERS_ENV} must be a positive integer, "
                         f"got {raw!r}")
    return count


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown comparison mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


class SQLVerifier:
    """Execute and compare SQL on SQLite databases in persistent, locked-down worker processes.

    Args:
        db_root: ``<db_root>/<db_id>/<db_id>.sqlite`` layout (Spider, BIRD), a ``{db_id: path}``
            mapping, or None when every database is passed as a ``pathlib.Path``.
        timeout: seconds per query (pred and gold each), enforced inside SQLite and, past
            ``timeout + 0.5 s``, by killing and replacing the worker.
        workers: worker processes, started on first use. None: ``$REWARDSQL_SQL_WORKERS`` if
            set, else the CPUs this process may use. Each may use up to about
            ``heap_limit_mb + 100`` MB.
        max_rows: a result with more rows is ``too_large``.
        mode: default comparison mode: ``bird`` (sets of rows equal), ``multiset`` (bags of rows
            equal), ``ordered`` (lists equal when the gold SQL has a top-level ORDER BY, else bags).
        heap_limit_mb: SQLite heap limit per worker (page cache, sorts, temp tables).
        memory_limit_mb: address-space limit per worker process (``RLIMIT_AS``); None for none.
        max_value_bytes: longest string or blob a query may build (``SQLITE_LIMIT_LENGTH``).
        max_result_bytes: approximate size limit of one result in the worker.
        gold_cache_size: gold outcomes kept, keyed by (database, gold SQL, comparison kind).
        max_connections: open connections kept per worker (LRU).
    """

    def __init__(
        self,
        db_root: DbRoot = None,
        *,
        timeout: float = 30.0,
        workers: int | None = None,
        max_rows: int = 100_000,
        mode: str = "bird",
        heap_limit_mb: int = 512,
        memory_limit_mb: int | None = 4096,
        max_value_bytes: int = 32 * 2**20,
        max_result_bytes: int = 256 * 2**20,
        gold_cache_size: int = 200_000,
        max_connections: int = 16,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows!r}")
        self.db_root = db_root if db_root is None or isinstance(db_root, Mapping) else Path(db_root)
        self.timeout = float(timeout)
        self.max_rows = int(max_rows)
        self.mode = _check_mode(mode)
        self.workers = int(workers) if workers is not None else configured_workers()
        settings = {
            "heap_limit_bytes": heap_limit_mb * 2**20,
            "address_space_bytes": memory_limit_mb * 2**20 if memory_limit_mb else None,
            "file_size_bytes": 64 * 2**20,
            "max_result_bytes": max_result_bytes,
            "max_connections": max_connections,
            "limits": {
                "SQLITE_LIMIT_LENGTH": max_value_bytes,
                "SQLITE_LIMIT_SQL_LENGTH": 1_000_000,
                "SQLITE_LIMIT_EXPR_DEPTH": 200,
                "SQLITE_LIMIT_COMPOUND_SELECT": 200,
                "SQLITE_LIMIT_VDBE_OP": 250_000,
                "SQLITE_LIMIT_FUNCTION_ARG": 100,
                "SQLITE_LIMIT_ATTACHED": 0,
                "SQLITE_LIMIT_LIKE_PATTERN_LENGTH": 10_000,
                "SQLITE_LIMIT_VARIABLE_NUMBER": 100,
                "SQLITE_LIMIT_TRIGGER_DEPTH": 1,
                "SQLITE_LIMIT_WORKER_THREADS": 0,
            },
        }
        self._pool = WorkerPool(self.workers, settings)
        self._gold_cache: OrderedDict[tuple[str, str, str], Outcome] = OrderedDict()
        self._gold_cache_size = gold_cache_size
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, self._pool.close)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker processes now (otherwise they start on first use)."""
        self._pool.start()

    def close(self) -> None:
        """Stop the worker processes. Safe to call twice."""
        self._finalizer()

    def __enter__(self) -> SQLVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pool(self) -> WorkerPool:
        """The worker pool (for diagnostics and tests)."""
        return self._pool

    # -- public API ------------------------------------------------------------------------------

    def execute(self, db_id: DatabaseRef, sql: str, *, timeout: float | None = None) -> ExecResult:
        """Run one query and return its rows (status ok, error, timeout, too_large, infra_error)."""
        return self.execute_many([(db_id, sql)], timeout=timeout)[0]

    def execute_many(self, items: Iterable[tuple[DatabaseRef, str]], *,
                     timeout: float | None = None) -> list[ExecResult]:
        """Run ``(db_id, sql)`` queries in parallel; results in input order."""
        items = list(items)
        results: list[ExecResult | None] = [None] * len(items)
        tasks: list[Task] = []
        where: list[int] = []
        memo: dict = {}
        for i, (db_id, sql) in enumerate(items):
            path, problem = self._path(db_id, memo)
            if problem:
                results[i] = ExecResult("infra_error", error=problem)
                continue
            tasks.append(Task("rows", path, sql, timeout or self.timeout, self.max_rows))
            where.append(i)
        for i, outcome in zip(where, self._pool.run(tasks), strict=True):
            rows = outcome.payload if outcome.status == "ok" else None
            results[i] = ExecResult(outcome.status, rows, outcome.error, outcome.seconds)
        return results  # type: ignore[return-value]

    def compare(self, db_id: DatabaseRef, pred: str, gold: str, mode: str | None = None, *,
                timeout: float | None = None) -> Verdict:
        """Compare ``pred`` with ``gold`` on one database.

        Modes: ``bird`` (default): the sets of rows are equal (BIRD's official rule, the paper's);
        ``multiset``: the bags of rows are equal (duplicates count); ``ordered``: when the gold
        SQL has a top-level ORDER BY the row lists must be equal, otherwise as ``multiset``.
        Values compare as Python does: 1 equals 1.0; column order matters in every mode.
        """
        return self.verify_batch([(db_id, pred, gold)], mode=mode, timeout=timeout)[0]

    def verify_batch(self, items: Iterable[tuple[DatabaseRef, str, str]], *,
                     mode: str | None = None, timeout: float | None = None,
                     budget: Budget | None = None) -> list[Verdict]:
        """Compare ``(db_id, pred, gold)`` triples in parallel; verdicts in input order.

        Each distinct query of the batch runs once; gold outcomes are cached across calls.
        ``budget`` (training): each prediction may run for a multiple of its gold query's
        time and the call ends by a deadline (:mod:`~rewardsql_sql_reward.verifier.budget`); None:
        every query gets the full ``timeout`` (the official evaluation rule).
        """
        items = list(items)
        mode = _check_mode(mode or self.mode)
        timeout = timeout or self.timeout
        verdicts: list[Verdict | None] = [None] * len(items)
        tasks: dict[tuple[str, str, str], int] = {}
        task_list: list[Task] = []
        plans: list[tuple[int, tuple[str, str, str], tuple[str, str, str]]] = []
        cached: dict[tuple[str, str, str], Outcome] = {}

        def task_for(key: tuple[str, str, str]) -> None:
            if key not in tasks:
                tasks[key] = len(task_list)
                task_list.append(Task("digest", key[0], key[1], timeout, self.max_rows, key[2]))

        memo: dict = {}
        for i, item in enumerate(items):
            if len(item) != 3:
                raise ValueError(f"item {i} must be (db_id, pred, gold), got {len(item)} values")
            db_id, pred, gold = item
            path, problem = self._path(db_id, memo)
            if problem:
                verdicts[i] = Verdict(False, "infra_error", problem)
                continue
            kind = digest_kind(mode, gold)
            gold_key, pred_key = (path, gold, kind), (path, pred, kind)
            hit = self._cache_get(gold_key)
            if hit is not None:
                cached[gold_key] = hit
            else:
                task_for(gold_key)
            if pred_key not in cached:  # a prediction identical to a cached gold needs no run
                task_for(pred_key)
            plans.append((i, pred_key, gold_key))

        if budget is None:
            outcomes = self._pool.run(task_list)
        else:
            golds = {gold_key for _, _, gold_key in plans}
            golds_of: dict[int, list[int | Outcome]] = {}
            for _, pred_key, gold_key in plans:
                if pred_key in tasks and pred_key not in golds:  # a query that is a gold: full time
                    golds_of.setdefault(tasks[pred_key], []).append(
                        cached[gold_key] if gold_key in cached else tasks[gold_key])
            outcomes = run_budgeted(self._pool.run, task_list, golds_of, budget, timeout)
        fresh: set[tuple[str, str, str]] = set()
        for key, index in tasks.items():
            outcome = outcomes[index]
            if key not in cached:
                cached[key] = outcome
                fresh.add(key)
        for _, _, gold_key in plans:
            if gold_key in fresh:
                self._cache_put(gold_key, cached[gold_key])
        for i, pred_key, gold_key in plans:
            pred_out, gold_out = cached[pred_key], cached[gold_key]
            seconds = pred_out.seconds + (gold_out.seconds if gold_key in fresh else 0.0)
            verdicts[i] = _verdict(pred_out, gold_out, seconds)
        return verdicts  # type: ignore[return-value]

    # -- internals -------------------------------------------------------------------------------

    def _path(self, db_id: DatabaseRef, memo: dict | None = None) -> tuple[str, str | None]:
        if memo is not None:
            key = (type(db_id), db_id)
            if key not in memo:
                memo[key] = self._path(db_id)
            return memo[key]
        try:
            path = resolve_db_path(self.db_root, db_id)
        except LookupError as exc:
            return "", str(exc)
        if not path.is_file():
            what = "not a file" if path.exists() else "database not found"
            return "", f"{what}: {path}"
        return str(path.resolve()), None

    def _cache_get(self, key: tuple[str, str, str]) -> Outcome | None:
        with self._lock:
            hit = self._gold_cache.get(key)
            if hit is not None:
                self._gold_cache.move_to_end(key)
            return hit

    def _cache_put(self, key: tuple[str, str, str], outcome: Outcome) -> None:
        # Only deterministic outcomes: a timeout or a crash may not happen next time.
        if outcome.status not in ("ok", "error", "too_large"):
            return
        with self._lock:
            self._gold_cache[key] = outcome
            while len(self._gold_cache) > self._gold_cache_size:
                self._gold_cache.popitem(last=False)


def _verdict(pred: Outcome, gold: Outcome, seconds: float) -> Verdict:
    if pred.status != "ok":
        return Verdict(False, pred.status, pred.error, seconds)
    if gold.status == "timeout" and gold.error == DEADLINE_ERROR:  # the batch's time, not gold's
        return Verdict(False, "timeout", f"gold SQL {DEADLINE_ERROR}", seconds)
    if gold.status != "ok":
        return Verdict(False, "infra_error", f"gold SQL failed ({gold.status}): {gold.error}",
                       seconds)
    if pred.payload == gold.payload:
        return Verdict(True, "ok", None, seconds)
    return Verdict(False, "wrong", None, seconds)


_SHARED: dict[tuple, SQLVerifier] = {}
_SHARED_LOCK = threading.Lock()


def shared_verifier(**settings: object) -> SQLVerifier:
    """The process-wide verifier for these settings (``db_root=None``: callers pass paths).

    Used by the reward function and :func:`execute_steps`, so one process keeps one worker pool.
    """
    key = tuple(sorted(settings.items()))
    with _SHARED_LOCK:
        verifier = _SHARED.get(key)
        if verifier is None or verifier.pool.closed:
            verifier = _SHARED[key] = SQLVerifier(None, **settings)  # type: ignore[arg-type]
        return verifier

