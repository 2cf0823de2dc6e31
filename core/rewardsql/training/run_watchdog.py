"""A watchdog for a run that waits on other processes (verl's trainer on Ray, vLLM's workers).

The run's processes are found by a marker in their environment, which every process the run
starts inherits (Ray's services and workers, vLLM's workers, even those in sessions of their
own), and only they: concurrent runs carry other markers. After its time the watchdog prints
why, ends them and exits this process with status 124 (the main thread waits on Ray and cannot
be interrupted); however the run ends, Ray is shut down and the run's processes still alive are
ended.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

logger = logging.getLogger(__name__)

#: The environment variable that marks the processes of a run.
RUN_MARKER = "REWARDSQL_VERL_CPU_RUN"
#: The exit status of a run the watchdog ended (as timeout(1)).
TIMEOUT_EXIT = 124


def run_processes(marker: str) -> list[Any]:
    """The live processes (other than this one) whose environment carries ``marker``."""
    import psutil

    out = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(RUN_MARKER) == marker:
                out.append(proc)
        except (psutil.Error, OSError):  # gone, a zombie, or not ours to read
            continue
    return out


def end_processes(marker: str, grace_s: float = 5.0) -> int:
    """End every process of the run: SIGTERM, then SIGKILL after ``grace_s``. Returns how many
    were still running."""
    import psutil

    procs = run_processes(marker)
    for proc in procs:
        with suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    return len(procs)


class _Run:
    """The run of this process: its marker, and the thread that waits for its end."""

    def __init__(self, timeout_s: float, message: str) -> None:
        self.timeout_s, self.message = timeout_s, message
        self.marker = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.done = threading.Event()
        self.expired = False
        self.started = time.monotonic()
        os.environ[RUN_MARKER] = self.marker  # before Ray starts: all its processes inherit it
        threading.Thread(target=self._expire, name="rewardsql-watchdog", daemon=True).start()
        atexit.register(finish_run)

    def _expire(self) -> None:
        if self.done.wait(self.timeout_s):
            return
        self.expired = True  # whoever ends the process now ends it with TIMEOUT_EXIT
        print(f"error: {self.message.format(timeout=self.timeout_s)}", file=sys.stderr,
              flush=True)
        end_processes(self.marker)
        os._exit(TIMEOUT_EXIT)


_run: _Run | None = None
_run_lock = threading.Lock()


def start_run(timeout_s: float, message: str) -> str:
    """Start this process's run under the watchdog, once; later calls return the same run's
    marker. ``message`` (``{timeout}`` is filled in) says why the watchdog ended a run."""
    global _run
    with _run_lock:
        if _run is None:
            _run = _Run(timeout_s, message)
        return _run.marker


def finish_run() -> int:
    """End this process's run: stop the watchdog, shut Ray down, end every process of the run
    still alive. Returns how many there were (also called at exit)."""
    global _run
    with _run_lock:
        run, _run = _run, None
    if run is None:
        return 0
    run.done.set()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    left = end_processes(run.marker)
    if left:
        logger.info("ended %d process(es) left behind by the run after %.0f s", left,
                    time.monotonic() - run.started)
    os.environ.pop(RUN_MARKER, None)
    if run.expired:  # the main thread got there first (its Ray call failed as we ended it)
        sys.stderr.flush()
        os._exit(TIMEOUT_EXIT)
    return left


@contextmanager
def guarded_run(timeout_s: float, message: str) -> Iterator[str]:
    """The block is this process's run (:func:`start_run`), finished however it ends."""
    marker = start_run(timeout_s, message)
    try:
        yield marker
    finally:
        finish_run()
