"""The SQL worker process. Standard library only: it never imports torch or the rest of the plugin.

The verifier starts this file as a script in a fresh interpreter (``python -I -S _worker.py FD
SETTINGS_JSON``), so nothing of the parent (torch, threads, its ``__main__``) is inherited or
re-imported. It talks to the parent over one ``multiprocessing`` connection: it sends
``("ready", pid)`` once, then receives lists of ``(task id, *task)`` tuples and answers each task
in order, as it finishes, with ``(status, payload, error, seconds, rows)``. ``("skip", task id)``
says that task was answered elsewhere: if it has not started, it is answered ``"skipped"``
without running. ``None`` or end-of-file ends it.

Safety layers, from the outside in: process limits (address space, file size, no core files), a
SQLite heap limit, read-only open plus ``PRAGMA query_only``, per-connection length/depth limits,
an authorizer that allows only reading, and a progress handler that interrupts a query at its
deadline. The parent kills and replaces the whole process if a query outlives its deadline anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import resource
import select
import signal
import sqlite3
import sys
import time
from collections import OrderedDict, deque
from multiprocessing.connection import Connection
from pathlib import Path

#: VM instructions between two calls of the progress handler (the timeout check).
PROGRESS_OPS = 2000
#: The error of a task stopped by its CPU slice (status ``timeout``): the training budget runs
#: predictions in slices of CPU time, so a worker that waits for a CPU is not cut short.
SLICE_ERROR = "CPU slice used"

#: Actions a query may perform: reading. Everything else is denied unless listed below.
_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE})
#: PRAGMAs that only describe the schema.
_ALLOWED_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
#: Functions that touch files, load code or hand out pointers.
_DENIED_FUNCTIONS = frozenset(
    {
        "load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "fsdir", "lsmode",
        "zipfile", "sqlar_compress", "sqlar_uncompress", "sqlite_dbpage", "shell_add_schema",
        "shell_escape_crnl", "shell_putsnl", "shell_idquote", "shell_module_schema",
    }
)


#: SQLite primary result codes that mean the database file is unusable, whatever the query:
#: SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_CANTOPEN, SQLITE_NOTADB.
_FILE_ERROR_CODES = frozenset({10, 11, 14, 26})


def _file_problem(exc: sqlite3.Error | sqlite3.Warning) -> bool:
    """True when ``exc`` says the database file is broken or gone (an infrastructure problem
    to report as such, not a wrong query to score 0)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _FILE_ERROR_CODES


def _identity(path: str) -> tuple[int, int] | None:
    """The file now at ``path`` (device, inode); None when there is none."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None,
               _source: str | None) -> int:
    if action in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        denied = (arg2 or "").lower() in _DENIED_FUNCTIONS
        return sqlite3.SQLITE_DENY if denied else sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _ALLOWED_PRAGMAS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


class _TooLarge(Exception):
    pass


class _Deadline(Exception):
    pass


class _NoResult(Exception):
    pass


class _Unusable(Exception):
    """The database itself cannot be used: an infrastructure problem, not a wrong query."""


def _canonical(value: float) -> float | int:
    # Python's set semantics (BIRD's rule) treat 1 and 1.0 as equal; digests must agree with it.
    return int(value) if value.is_integer() else value


def row_key(row: tuple) -> str:
    """A string that is equal for two rows exactly when Python's ``==`` says they are equal."""
    for value in row:
        if type(value) is float:
            return repr(tuple(_canonical(v) if type(v) is float and math.isfinite(v) else v
                              for v in row))
    return repr(row)


def digest_rows(keys: list[str], kind: str) -> bytes:
    """Digest of row keys: ``set`` (order and duplicates ignored), ``multiset`` or ``ordered``."""
    if kind == "set":
        keys = sorted(set(keys))
    elif kind == "multiset":
        keys = sorted(keys)
    joined = "\n".join(keys).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(joined, digest_size=16).digest()


class Executor:
    """Runs tasks on an LRU of read-only, locked-down connections."""

    def __init__(self, settings: dict) -> None:
        self.settings = settings
        self.connections: OrderedDict[str, sqlite3.Connection] = OrderedDict()
        #: The file each connection opened: a path replaced or deleted since must not be read
        #: through the old, still open inode.
        self.identities: dict[str, tuple[int, int] | None] = {}
        self.deadline = math.inf
        self.cpu_deadline = math.inf  # in this thread's CPU time
        #: Before this (monotonic) time the slice cannot be used up: CPU time never runs ahead
        #: of wall-clock time, and reading the CPU clock is a system call.
        self.slice_check = math.inf
        self.timed_out = False
        self.sliced = False  # stopped by the CPU slice, not the timeout

    def _out_of_time(self) -> bool:
        now = time.monotonic()
        if now > self.deadline:
            return True
        if now > self.slice_check:
            self.sliced = time.thread_time() > self.cpu_deadline
        return self.sliced

    def _progress(self) -> int:
        if self._out_of_time():
            self.timed_out = True
            return 1
        return 0

    def _open(self, path: str) -> sqlite3.Connection:
        conn = self.connections.get(path)
        if conn is not None:
            if _identity(path) == self.identities.get(path):
                self.connections.move_to_end(path)
                return conn
            self.forget(path)
        if not os.path.isfile(path):
            raise _Unusable(f"database not found: {path}")
        uri = Path(path).as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, cached_statements=256)
        except sqlite3.Error as exc:
            raise _Unusable(f"cannot open database {path}: {exc}") from None
        try:
            # Settings first: the authorizer installed below denies every PRAGMA that changes one.
            conn.execute("PRAGMA query_only = ON")
            conn.execute("PRAGMA temp_store = MEMORY")  # sorts and temp tables count to the heap
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a readable database?
        except sqlite3.Error as exc:
            conn.close()
            raise _Unusable(f"cannot read database {path}: {exc}") from None
        if hasattr(conn, "enable_load_extension"):
            conn.enable_load_extension(False)
        for name, value in self.settings["limits"].items():
            conn.setlimit(getattr(sqlite3, name), value)
        conn.set_authorizer(_authorize)
        conn.set_progress_handler(self._progress, PROGRESS_OPS)
        self.connections[path] = conn
        self.identities[path] = _identity(path)
        while len(self.connections) > self.settings["max_connections"]:
            self.forget(next(iter(self.connections)))
        return conn

    def forget(self, path: str) -> None:
        """Close and drop the connection to ``path``."""
        conn = self.connections.pop(path, None)
        self.identities.pop(path, None)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def run(self, task: tuple) -> tuple:
        op, path, sql, timeout, max_rows, kind, *rest = task
        cpu_slice = rest[0] if rest else None
        start = time.perf_counter()
        rows = 0
        try:
            conn = self._open(path)
        except _Unusable as exc:
            return ("infra_error", None, str(exc), time.perf_counter() - start, 0)
        self.timed_out = self.sliced = False
        self.deadline = time.monotonic() + timeout
        if cpu_slice is not None:
            self.cpu_deadline = time.thread_time() + cpu_slice
            self.slice_check = time.monotonic() + cpu_slice
        cursor = None
        try:
            cursor = conn.execute(sql)
            if cursor.description is None:
                raise _NoResult
            if op == "rows":
                payload, rows = self._fetch_rows(cursor, max_rows)
            else:
                payload, rows = self._digest(cursor, max_rows, kind)
            status, error = "ok", None
        except _NoResult:
            status, payload, error = "error", None, "the SQL is empty or returns no result set"
        except _Deadline:
            status, payload, error = "timeout", None, f"timed out after {timeout:g} s"
        except _TooLarge as exc:
            status, payload, error = "too_large", None, str(exc)
        except MemoryError:
            status, payload, error = "too_large", None, "out of memory (heap limit reached)"
        except (sqlite3.Error, sqlite3.Warning) as exc:
            message = str(exc)
            payload = None
            if self.timed_out:
                status, error = "timeout", f"timed out after {timeout:g} s"
            elif _file_problem(exc):
                status, error = "infra_error", f"cannot read database {path}: {message}"
            elif "too big" in message or "too large" in message.lower():
                status, error = "too_large", message
            elif "one statement at a time" in message:
                status, error = "error", "several statements in one string: only one may run"
            else:
                status, error = "error", message or type(exc).__name__
        except Exception as exc:  # anything else a hostile query provokes is its own failure
            status, payload, error = "error", None, f"{type(exc).__name__}: {exc}"
        finally:
            self.deadline = self.cpu_deadline = self.slice_check = math.inf
            if cursor is not None:
                cursor.close()  # release the statement and its read lock
        if status == "timeout" and self.sliced:
            error = SLICE_ERROR
        if status == "infra_error":
            self.forget(path)  # a later task reopens it, and sees whether it was fixed
        return (status, payload, error, time.perf_counter() - start, rows)

    def _chunks(self, cursor: sqlite3.Cursor, max_rows: int):
        count = 0
        while True:
            chunk = cursor.fetchmany(1024)
            if not chunk:
                return
            count += len(chunk)
            if count > max_rows:
                raise _TooLarge(f"more than {max_rows} rows")
            if self._out_of_time():
                raise _Deadline
            yield chunk

    def _fetch_rows(self, cursor: sqlite3.Cursor, max_rows: int) -> tuple[list[tuple], int]:
        limit = self.settings["max_result_bytes"]
        out: list[tuple] = []
        size = 0
        for chunk in self._chunks(cursor, max_rows):
            for row in chunk:
                size += 16 * len(row) + sum(len(v) for v in row if isinstance(v, str | bytes))
            if size > limit:
                raise _TooLarge(f"result larger than {limit} bytes")
            out.extend(chunk)
        return out, len(out)

    def _digest(self, cursor: sqlite3.Cursor, max_rows: int, kind: str) -> tuple[bytes, int]:
        limit = self.settings["max_result_bytes"]
        keys: list[str] = []
        size = 0
        for chunk in self._chunks(cursor, max_rows):
            for row in chunk:
                key = row_key(row)
                size += len(key) + 64
                keys.append(key)
            if size > limit:
                raise _TooLarge(f"result larger than {limit} bytes")
        return digest_rows(keys, kind), len(keys)


def _set_process_limits(settings: dict) -> None:
    # Ignore SIGINT: a Ctrl-C in the terminal is the parent's to handle; it closes us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A write past RLIMIT_FSIZE must fail with EFBIG instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    for name, value in (("RLIMIT_AS", settings["address_space_bytes"]),
                        ("RLIMIT_FSIZE", settings["file_size_bytes"]), ("RLIMIT_CORE", 0)):
        limit = getattr(resource, name, None)
        if limit is None or value is None:
            continue
        _soft, hard = resource.getrlimit(limit)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        with contextlib.suppress(ValueError, OSError):  # a stricter limit in force is fine
            resource.setrlimit(limit, (value, hard))
    # Process-wide: every connection's heap (page cache, sorters, temp tables) counts against it.
    probe = sqlite3.connect(":memory:")
    probe.execute(f"PRAGMA hard_heap_limit = {int(settings['heap_limit_bytes'])}")
    probe.close()


def main(argv: list[str]) -> int:
    """Serve tasks on the connection whose file descriptor is ``argv[1]``."""
    conn = Connection(int(argv[1]))
    settings = json.loads(argv[2])
    _set_process_limits(settings)
    executor = Executor(settings)
    conn.send(("ready", os.getpid()))
    pending: deque[tuple] = deque()  # tasks received, not started
    skipped: set[int] = set()
    # A poll object made once: Connection.poll() builds a selector per call, which costs more
    # than a fast query.
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    while True:
        try:
            # Block only when idle; otherwise take in what has arrived (a skip notice must be
            # seen before the task it names starts).
            while not pending or poller.poll(0):
                message = conn.recv()
                if message is None:
                    return 0
                if isinstance(message, tuple):  # ("skip", task id)
                    skipped.add(message[1])
                else:
                    pending.extend(message)
            task_id, *task = pending.popleft()
            if task_id in skipped:
                conn.send(("skipped", None, None, 0.0, 0))
            else:
                conn.send(executor.run(tuple(task)))
            if not pending:  # notices for tasks already done can no longer apply
                skipped.clear()
        except (EOFError, OSError):  # the parent went away
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
