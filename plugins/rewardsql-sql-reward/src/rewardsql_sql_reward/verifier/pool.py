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
import itertools
import json
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Pipe, wait
from pathlib import Path
from typing import Any

#: Time a worker may take beyond a task's own timeout before it is killed and replaced. The
#: in-SQLite progress handler normally ends the query well before.
KILL_GRACE_S = 0.5
#: Most tasks in flight at one worker: the one running and a few waiting in its pipe, so the
#: worker need not wait for the parent between tasks (a worker is topped up in one message when
#: only its running task is left), yet few tasks sit behind a slow one.
PIPELINE = 8
#: A task waiting behind another that has run this long is also sent to another worker (the
#: first answer wins): a runaway query delays nothing else for more than this.
STALL_S = 0.1
#: Time a new worker may take to start.
BOOT_TIMEOUT_S = 60.0
#: The error of a task still unfinished when its call's ``deadline`` passed (status timeout).
DEADLINE_ERROR = "unfinished at the batch deadline"

_WORKER_SCRIPT = str(Path(__file__).with_name("_worker.py"))
#: Ids of tasks sent to workers, unique in the process, so a skip notice names exactly one.
_TASK_IDS = itertools.count()


@dataclass(frozen=True)
class Task:
    """One query for a worker: ``op`` ``digest`` (a digest of kind ``kind``) or ``rows``.
    ``cpu_slice``: seconds of CPU time after which the worker stops it (a ``timeout`` with the
    worker's ``SLICE_ERROR``), besides ``timeout`` seconds of wall-clock time."""

    op: str
    path: str
    sql: str
    timeout: float
    max_rows: int
    kind: str = "set"
    cpu_slice: float | None = None

    def message(self) -> tuple:
        return (self.op, self.path, self.sql, self.timeout, self.max_rows, self.kind,
                self.cpu_slice)


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

    def read_ready(self) -> bool:
        """Read the worker's first message (it is waiting); True when it says ready, else kill
        the worker and return False."""
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            message = None
        self.ready = isinstance(message, tuple) and message[:1] == ("ready",)
        if not self.ready:
            self.kill()
        return self.ready

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
            if worker.read_ready():
                ready.append(worker)
            else:
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
        self.tasks_run = 0  # tasks asked of the pool
        self.duplicates = 0  # tasks also sent to a second worker because they waited too long
        self.withdrawn = 0  # of those, copies a worker skipped (the other copy ran first)
        #: When a list: every task's first outcome is appended as (task, outcome, monotonic time
        #: it arrived), for tests and diagnostics.
        self.trace: list[tuple[Task, Outcome, float]] | None = None
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

    # -- running -----------------------------------------------------------------------------------

    def run(self, tasks: Sequence[Task], *, deadline: float | None = None) -> list[Outcome]:
        """Run every task in parallel over the workers this call gets; results in input order.

        Each worker has at most :data:`PIPELINE` tasks in flight (one running, the rest waiting
        in its pipe) and answers each as it finishes; a task's deadline starts when the one
        before it finished. A task waiting behind one that has run :data:`STALL_S` is also
        sent to another worker and the first answer wins, so no task waits for another's
        runaway query. Workers that outlive a deadline are killed; their successors boot
        while the other workers keep going.

        ``deadline`` (a ``time.monotonic()`` time): every task unfinished then is a ``timeout``
        (error :data:`DEADLINE_ERROR`) and the call returns; workers still busy are replaced.
        """
        if not tasks:
            return []
        run = _Run(self, tasks, self._checkout(len(tasks)), deadline)
        with self._cond:
            self.runs += 1
            self.tasks_run += len(tasks)
        try:
            run.loop()
        finally:
            for flight in run.flights.values():  # interrupted mid-call: their state is unknown
                flight.worker.kill()
            self._checkin(run.idle + list(run.booting.values()), run.taken)
        with self._cond:
            self.duplicates += run.duplicates
            self.withdrawn += run.withdrawn
        return [r if r is not None else Outcome("infra_error", error="not run")
                for r in run.results]


@dataclass
class _Flight:
    """Tasks out at one worker, in the order it runs them; the first one is running.

    ``indices``: the tasks' indices, ``ids``: the ids they were sent with; ``started``: when the
    running task started (as far as the parent knows); ``deadline``: when its worker is killed;
    ``stolen``: the tasks behind it were offered to idle workers."""

    worker: _Worker
    indices: deque[int]
    started: float
    deadline: float
    stolen: bool = False
    ids: deque[int] = field(default_factory=deque)


class _Run:
    """The state of one :meth:`WorkerPool.run` call: the tasks to send, the workers' flights and
    each task's first outcome.

    ``queue`` holds tasks no worker has; ``stolen`` holds tasks waiting behind a stalled one
    (one copy in flight). A stolen task goes only to an idle worker, which starts it at once,
    and while one waits no worker gets a second task, so the next worker to finish takes it;
    a task is never in flight more than twice.
    """

    def __init__(self, pool: WorkerPool, tasks: Sequence[Task], workers: list[_Worker],
                 deadline: float | None = None) -> None:
        self.pool = pool
        self.call_deadline = deadline
        self.tasks = tasks
        self.taken = len(workers)
        self.results: list[Outcome | None] = [None] * len(tasks)
        self.pending = len(tasks)  # tasks without an outcome
        self.queue: deque[int] = deque(range(len(tasks)))
        self.stolen: deque[int] = deque()
        self.copies = [0] * len(tasks)  # copies of each task in flight
        self.idle = [w for w in workers if w.ready]
        self.booting: dict[Connection, _Worker] = {w.conn: w for w in workers if not w.ready}
        self.boot_deadline = time.monotonic() + BOOT_TIMEOUT_S
        self.flights: dict[Connection, _Flight] = {}
        self.duplicates = 0
        self.withdrawn = 0

    # -- bookkeeping ------------------------------------------------------------------------------

    def finish(self, index: int, outcome: Outcome) -> None:
        """Record the first outcome of a task; later ones (a duplicate's) are dropped."""
        if self.results[index] is None:
            self.results[index] = outcome
            self.pending -= 1
            trace = self.pool.trace
            if trace is not None:
                trace.append((self.tasks[index], outcome, time.monotonic()))

    def _unsent(self, index: int) -> bool:
        return self.results[index] is None and self.copies[index] == 0

    def _waiting(self, index: int) -> bool:
        """One copy in flight, waiting behind another task (not running)."""
        return (self.results[index] is None and self.copies[index] == 1
                and all(f.indices[0] != index for f in self.flights.values()))

    def _next_stolen(self) -> int | None:
        while self.stolen:
            index = self.stolen.popleft()
            if self._waiting(index):
                return index
        return None

    def _stolen_waiting(self) -> bool:
        while self.stolen and not self._waiting(self.stolen[0]):
            self.stolen.popleft()
        return bool(self.stolen)

    def _take(self, count: int) -> list[int]:
        batch: list[int] = []
        while len(batch) < count and self.queue:
            index = self.queue.popleft()
            if self._unsent(index):
                batch.append(index)
        return batch

    def deadline(self, index: int, now: float) -> float:
        return now + self.tasks[index].timeout + KILL_GRACE_S

    # -- dispatch ---------------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Stolen tasks to idle workers first; then fill idle workers and, unless a stolen task
        waits, the free pipeline slots of workers whose running task is not stalled."""
        while self.idle:
            index = self._next_stolen()
            batch = [index] if index is not None else []
            if not self._stolen_waiting():
                batch += self._take(PIPELINE - len(batch))
            if not batch:
                return
            worker = self.idle.pop()
            now = time.monotonic()
            flight = _Flight(worker, deque(), now, self.deadline(batch[0], now))
            if self._send(flight, batch):
                self.flights[worker.conn] = flight
                if index is not None:
                    self._skip_original(index, flight)
        if not self.queue or self._stolen_waiting():
            return
        now = time.monotonic()
        for flight in list(self.flights.values()):
            # Topped up in one message once only the running task is left.
            if len(flight.indices) == 1 and now - flight.started < STALL_S:
                batch = self._take(PIPELINE - 1)
                if not batch or not self._send(flight, batch):
                    return

    def _skip_original(self, index: int, copy: _Flight) -> None:
        """Tell the worker holding the original of a re-dispatched task not to start it."""
        for flight in self.flights.values():
            if flight is not copy and index in flight.indices:
                task_id = flight.ids[flight.indices.index(index)]
                with contextlib.suppress(OSError):  # a dead worker is noticed when read
                    flight.worker.conn.send(("skip", task_id))
                return

    def _send(self, flight: _Flight, batch: list[int]) -> bool:
        ids = [next(_TASK_IDS) for _ in batch]
        try:
            flight.worker.conn.send([(task_id, *self.tasks[i].message())
                                     for task_id, i in zip(ids, batch, strict=True)])
        except OSError:  # died while waiting: put the tasks back, replace it
            for index in reversed(batch):
                (self.queue if self.copies[index] == 0 else self.stolen).appendleft(index)
            self._retire_worker(flight, None)
            return False
        for index in batch:
            self.duplicates += self.copies[index] > 0
            self.copies[index] += 1
        flight.indices.extend(batch)
        flight.ids.extend(ids)
        return True

    def _retire_worker(self, flight: _Flight, head: Outcome | None) -> None:
        """Kill a flight's worker (``head``: the running task's outcome), put its other tasks
        back in the queue and boot a successor."""
        self.flights.pop(flight.worker.conn, None)
        if head is not None and flight.indices:
            index = flight.indices.popleft()
            self.copies[index] -= 1
            self.finish(index, head)
        for index in reversed(flight.indices):
            self.copies[index] -= 1
            if self._unsent(index):
                self.queue.appendleft(index)
        flight.indices.clear()
        flight.ids.clear()
        fresh = self.pool._replace(flight.worker)
        if fresh is not None:
            self.booting[fresh.conn] = fresh
            self.boot_deadline = time.monotonic() + BOOT_TIMEOUT_S

    # -- the loop ---------------------------------------------------------------------------------

    def loop(self) -> None:
        while self.pending:
            self.dispatch()
            if not self.flights and not self.booting:  # no worker left to run the rest
                reason = self.pool.last_start_error or "no SQL worker available"
                for index in range(len(self.tasks)):
                    self.finish(index, Outcome("infra_error", error=reason))
                return
            ready = wait([*self.flights, *self.booting], timeout=self._next_event())
            for conn in ready:
                if conn in self.booting:
                    self._boot(conn)
                else:
                    self._receive(self.flights[conn])
            self._check_clocks()
        # Every task has its outcome; duplicates may still be out. A worker must be idle to be
        # reused: wait a moment for them, then replace the workers still busy (a duplicate of a
        # runaway query would hold the call for its whole timeout).
        until = time.monotonic() + STALL_S
        while self.flights and time.monotonic() < until:
            for conn in wait(list(self.flights), timeout=max(0.0, until - time.monotonic())):
                self._receive(self.flights[conn])
        for flight in list(self.flights.values()):
            self._retire_worker(flight, None)

    def _next_event(self) -> float:
        times = [f.deadline for f in self.flights.values()]
        if self.call_deadline is not None:
            times.append(self.call_deadline)
        times += [f.started + STALL_S for f in self.flights.values()
                  if not f.stolen and len(f.indices) > 1]
        if self.booting:
            times.append(self.boot_deadline)
        return max(0.0, min(times) - time.monotonic())

    def _boot(self, conn: Connection) -> None:
        worker = self.booting.pop(conn)
        if worker.read_ready():
            self.idle.append(worker)
        else:
            self.pool.last_start_error = (
                f"SQL worker died while starting ({worker.exit_description()})")

    def _receive(self, flight: _Flight) -> None:
        conn = flight.worker.conn
        try:
            while True:  # every answer that has arrived
                status, payload, error, seconds, rows = conn.recv()
                index = flight.indices.popleft()
                flight.ids.popleft()
                self.copies[index] -= 1
                if status != "skipped":
                    self.finish(index, Outcome(status, payload, error, seconds, rows))
                else:
                    self.withdrawn += 1
                    if self._unsent(index):  # its other copy was lost with its worker
                        self.queue.appendleft(index)
                if not flight.indices:
                    del self.flights[conn]
                    self.idle.append(flight.worker)
                    return
                now = time.monotonic()
                flight.started, flight.stolen = now, False
                flight.deadline = self.deadline(flight.indices[0], now)
                if not _has_message(conn):
                    return
        except (EOFError, OSError):
            with contextlib.suppress(subprocess.TimeoutExpired):
                flight.worker.proc.wait(timeout=1)  # the exit status, for the message
            path = self.tasks[flight.indices[0]].path
            self._retire_worker(flight, Outcome(
                "infra_error", error=f"SQL worker crashed ({flight.worker.exit_description()}) "
                f"while running a query on {path}"))

    def _check_clocks(self) -> None:
        now = time.monotonic()
        if self.call_deadline is not None and now >= self.call_deadline:
            for index in range(len(self.tasks)):  # the loop ends; busy workers are replaced
                self.finish(index, Outcome("timeout", error=DEADLINE_ERROR))
            return
        for flight in list(self.flights.values()):
            if now >= flight.deadline:  # the last resort: SQLite did not stop it in time
                self.pool.kills += 1
                timeout = self.tasks[flight.indices[0]].timeout
                self._retire_worker(flight, Outcome(
                    "timeout", error=f"timed out after {timeout:g} s (worker killed)",
                    seconds=timeout + KILL_GRACE_S))
            elif not flight.stolen and len(flight.indices) > 1 and now - flight.started >= STALL_S:
                # The running task is slow (maybe a runaway): the tasks waiting behind it go to
                # other workers as well, and the first answer wins.
                flight.stolen = True
                self.stolen.extend(list(flight.indices)[1:])
        for conn, worker in list(self.booting.items()):
            if now >= self.boot_deadline:
                del self.booting[conn]
                worker.kill()
                self.pool.last_start_error = f"SQL worker did not start within {BOOT_TIMEOUT_S:g} s"


def _has_message(conn: Connection) -> bool:
    """``conn.poll()`` without the selector it builds per call (which costs more than a fast
    query); ``select.poll`` has no limit on descriptor numbers, unlike ``select.select``."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


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
