"""A pool of persistent SQL worker processes, with per-task deadlines and kill-and-replace.

Workers are fresh interpreters running ``_worker.py`` (standard library only). They are started
as plain subprocesses rather than through ``multiprocessing``'s spawn context because spawn
re-imports the parent's ``__main__`` in every child: a trainer script that imports torch at the
top would load torch into every SQL worker. Like spawn, this never forks the (threaded) parent
interpreter; messages travel over ``multiprocessing`` connections.

Threads share the pool: each call checks out the idle workers it can use, multiplexes its tasks
over them and checks them back in, so per-sample calls from many threads run in parallel.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe, wait
from pathlib import Path
from typing import Any

#: Time a worker may take beyond a task's own timeout before it is killed and replaced. The
#: in-SQLite progress handler normally ends the query well before.
KILL_GRACE_S = 0.5
#: Most tasks sent to a worker in one message.
MAX_CHUNK = 16
#: Time a new worker may take to start.
BOOT_TIMEOUT_S = 60.0

_WORKER_SCRIPT = str(Path(__file__).with_name("_worker.py"))


@dataclass(frozen=True)
class Task:
    """One query for a worker: ``op`` ``digest`` (a digest of kind ``kind``) or ``rows``."""

    op: str
    path: str
    sql: str
    timeout: float
    max_rows: int
    kind: str = "set"

    def message(self) -> tuple:
        return (self.op, self.path, self.sql, self.timeout, self.max_rows, self.kind)


@dataclass(frozen=True)
class Outcome:
    """A worker's answer: status, payload (digest bytes or rows), error, seconds, row count."""

    status: str
    payload: Any = None
    error: str | None = None
    seconds: float = 0.0
    rows: int = 0


class _Worker:
    def __init__(self, proc: subprocess.Popen, conn: Connection) -> None:
        self.proc = proc
        self.conn = conn
        self.ready = False  # its ("ready", pid) message has been read

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.conn.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def exit_description(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


class WorkerStartError(RuntimeError):
    """A worker process could not be started."""


def _launch(settings_json: str) -> _Worker:
    parent_end, child_end = Pipe(duplex=True)
    fd = child_end.fileno()
    try:
        # -I: ignore PYTHON* variables and user site; -S: no site-packages at all.
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", _WORKER_SCRIPT, str(fd), settings_json],
            pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd="/",
        )
    except OSError as exc:
        parent_end.close()
        raise WorkerStartError(f"cannot start SQL worker {sys.executable!r}: {exc}") from None
    finally:
        child_end.close()
    return _Worker(proc, parent_end)


def _await_ready(workers: list[_Worker]) -> tuple[list[_Worker], list[str]]:
    """Wait for each worker's ready message; kill those that fail. Returns (ready, errors)."""
    pending = {w.conn: w for w in workers}
    ready: list[_Worker] = []
    errors: list[str] = []
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while pending:
        for conn in wait(list(pending), timeout=max(0.0, deadline - time.monotonic())):
            worker = pending.pop(conn)
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = None
            if isinstance(message, tuple) and message[:1] == ("ready",):
                worker.ready = True
                ready.append(worker)
            else:
                worker.kill()
                errors.append(f"SQL worker died while starting ({worker.exit_description()})")
        if time.monotonic() >= deadline:
            for worker in pending.values():
                worker.kill()
                errors.append(f"SQL worker did not start within {BOOT_TIMEOUT_S:g} s")
            break
    return ready, errors


class WorkerPool:
    """``size`` persistent workers, started on first use and shut down by :meth:`close`."""

    def __init__(self, size: int, settings: dict) -> None:
        if size < 1:
            raise ValueError(f"workers must be at least 1, got {size}")
        self.size = size
        self._settings_json = json.dumps(settings)
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._out = 0  # workers checked out by running calls
        self._closed = False
        self.last_start_error: str | None = None
        self.kills = 0  # workers killed after outliving a deadline
        self.runs = 0  # calls of run() with tasks
        self.tasks_run = 0  # tasks sent to workers
        _LIVE_POOLS.add(self)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start missing workers now instead of on first use."""
        with self._cond:
            self._top_up()

    def _top_up(self) -> None:
        missing = self.size - len(self._idle) - self._out
        if missing <= 0 or self._closed:
            return
        launched = []
        try:
            for _ in range(missing):
                launched.append(_launch(self._settings_json))
        except WorkerStartError as exc:
            self.last_start_error = str(exc)
        ready, errors = _await_ready(launched)
        if errors:
            self.last_start_error = errors[0]
        self._idle.extend(ready)

    def close(self) -> None:
        """Stop every idle worker; workers in use by a running call are killed on return."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for worker in idle:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in idle:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=2)
            worker.kill()
        _LIVE_POOLS.discard(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def pids(self) -> list[int]:
        """Process ids of the idle workers (for tests)."""
        with self._cond:
            return [w.proc.pid for w in self._idle]

    # -- checkout ----------------------------------------------------------------------------------

    def _checkout(self, want: int) -> list[_Worker]:
        with self._cond:
            if self._closed:
                raise RuntimeError("the SQL verifier is closed")
            self._top_up()
            while not self._idle:
                if self._out == 0:  # nobody will return a worker: none could be started
                    return []
                self._cond.wait()
                if self._closed:
                    raise RuntimeError("the SQL verifier is closed")
            taken = self._idle[-want:]
            del self._idle[-want:]
            self._out += len(taken)
            return taken

    def _checkin(self, workers: list[_Worker], taken: int) -> None:
        """Return live ``workers``; ``taken``: how many the call checked out (some died)."""
        with self._cond:
            self._out -= taken
            if self._closed:
                for worker in workers:
                    worker.kill()
            else:
                self._idle.extend(workers)
            self._cond.notify_all()

    def _replace(self, worker: _Worker) -> _Worker | None:
        """Kill ``worker`` and launch a successor; its start is awaited when it is first used."""
        worker.kill()
        if self._closed:
            return None
        try:
            return _launch(self._settings_json)
        except WorkerStartError as exc:
            self.last_start_error = str(exc)
            return None

    def _ensure_ready(self, worker: _Worker) -> bool:
        """Read a fresh worker's ready message (waiting for its start); False if it failed."""
        if worker.ready:
            return True
        ready, errors = _await_ready([worker])
        if errors:
            self.last_start_error = errors[0]
        return bool(ready)

    # -- running -----------------------------------------------------------------------------------

    def run(self, tasks: Sequence[Task]) -> list[Outcome]:
        """Run every task in parallel over the workers this call gets; results in input order.

        Tasks go out in small chunks (one message each) and results come back one per task, so
        the deadline of each task starts when the one before it in the chunk finished.
        """
        results: list[Outcome | None] = [None] * len(tasks)
        if not tasks:
            return []
        workers = self._checkout(len(tasks))
        taken = len(workers)
        with self._cond:
            self.runs += 1
            self.tasks_run += len(tasks)
        idle = list(workers)
        queue = deque(range(len(tasks)))
        busy: dict[Connection, _Flight] = {}

        def deadline(index: int) -> float:
            return time.monotonic() + tasks[index].timeout + KILL_GRACE_S

        def retire(flight: _Flight, head: Outcome) -> None:
            # The head task ends with ``head``; the rest of its chunk goes back to the queue.
            del busy[flight.worker.conn]
            results[flight.indices.popleft()] = head
            queue.extendleft(reversed(flight.indices))
            fresh = self._replace(flight.worker)
            if fresh is not None:
                idle.append(fresh)

        try:
            while queue or busy:
                while idle and queue:
                    worker = idle.pop()
                    if not self._ensure_ready(worker):  # a successor that failed to start
                        continue
                    size = max(1, min(MAX_CHUNK, len(queue) // (2 * (len(idle) + len(busy) + 1))))
                    chunk = [queue.popleft() for _ in range(size)]
                    try:
                        worker.conn.send([tasks[i].message() for i in chunk])
                    except OSError:  # died while idle: replace it and try again
                        queue.extendleft(reversed(chunk))
                        fresh = self._replace(worker)
                        if fresh is not None:
                            idle.append(fresh)
                        continue
                    busy[worker.conn] = _Flight(worker, deque(chunk), deadline(chunk[0]))
                if not busy:  # no worker left to run the rest
                    reason = self.last_start_error or "no SQL worker available"
                    for index in queue:
                        results[index] = Outcome("infra_error", error=reason)
                    queue.clear()
                    break
                first = min(flight.deadline for flight in busy.values())
                for conn in wait(list(busy), timeout=max(0.0, first - time.monotonic())):
                    flight = busy[conn]
                    try:
                        while True:  # every result that has arrived
                            status, payload, error, seconds, rows = conn.recv()
                            results[flight.indices.popleft()] = Outcome(status, payload, error,
                                                                        seconds, rows)
                            if not flight.indices:
                                del busy[conn]
                                idle.append(flight.worker)
                                break
                            flight.deadline = deadline(flight.indices[0])
                            if not conn.poll():
                                break
                    except (EOFError, OSError):
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            flight.worker.proc.wait(timeout=1)  # the exit status, for the message
                        path = tasks[flight.indices[0]].path
                        retire(flight, Outcome(
                            "infra_error", error=f"SQL worker crashed "
                            f"({flight.worker.exit_description()}) while running a query on {path}"
                        ))
                now = time.monotonic()
                for flight in list(busy.values()):
                    if now >= flight.deadline:  # the last resort: SQLite did not stop it in time
                        self.kills += 1
                        timeout = tasks[flight.indices[0]].timeout
                        retire(flight, Outcome("timeout", error=f"timed out after {timeout:g} s "
                                               "(worker killed)", seconds=timeout + KILL_GRACE_S))
        finally:
            for flight in busy.values():  # interrupted mid-call: their state is unknown
                flight.worker.kill()
            self._checkin(idle, taken)
        return [r if r is not None else Outcome("infra_error", error="not run") for r in results]


@dataclass
class _Flight:
    """A chunk of tasks out at one worker; ``deadline`` belongs to the first unfinished one."""

    worker: _Worker
    indices: deque[int]
    deadline: float


_LIVE_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


@atexit.register
def _close_all_pools() -> None:
    for pool in list(_LIVE_POOLS):
        pool.close()


def default_workers() -> int:
    """The number of CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
