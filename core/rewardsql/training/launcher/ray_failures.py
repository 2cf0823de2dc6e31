"""A failure inside verl's Ray processes, told in one line: the worker, the root cause, the logs.

verl's driver waits on its TaskRunner actor (``ray.get``), which waits on the workers it starts
(FSDP and rollout workers, reward-loop workers). An exception in any of them reaches the driver
as a ``RayTaskError`` whose text is the chain of tracebacks, one per process it crossed, each
headed ``ray::Class.method()``; a worker that failed in ``__init__`` or whose process died
reaches it as an ``ActorDiedError``. Left alone, that is a screen of tracebacks ending in
rewardsql's own. :func:`reported_ray_failures` turns it into a :class:`LaunchError` that names
the innermost worker (where it arose) and the root cause, and writes the whole text to a file
in the run's output folder, which the line names with Ray's session logs (the workers' output).

Ray is imported by verl; this module only looks at what is already imported.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rewardsql.errors import LaunchError
from rewardsql.io import atomic_write_text

#: The file of the run's output folder that receives the full text of a Ray failure.
RAY_FAILURE_LOG = "ray_failure.log"

_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
#: A traceback's header in Ray's text: ``ray::RewardLoopWorker.compute_score()``.
_WORKER = re.compile(r"ray::([^\s()]+)\(\)")
#: An actor that died without a traceback (its process ended): ``class_name: RewardLoopWorker``.
_CLASS_NAME = re.compile(r"class_name: (\S+)")
_PID = re.compile(r"pid[=:] ?(\d+)")
_EXIT = re.compile(r"Worker exit type: (\w+)(?: Worker exit detail: ([^.]*\.))?")


@dataclass(frozen=True)
class RayFailure:
    """What one Ray failure says, colour codes removed."""

    #: ``Class.method`` where the exception arose, the dead actor's class, or None.
    worker: str | None
    #: The root cause: ``ValueError: message`` (its first line).
    cause: str
    #: The process id of that worker, when Ray gives it.
    pid: int | None
    #: Everything Ray reported: each process's traceback, outermost first.
    text: str


def is_ray_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is one of Ray's errors (a task's exception, a dead actor, a lost node)."""
    exceptions = sys.modules.get("ray.exceptions")
    return exceptions is not None and isinstance(exc, exceptions.RayError)


def describe_ray_failure(exc: BaseException) -> RayFailure:
    """The worker and root cause of a Ray error (:func:`is_ray_failure`)."""
    text = _COLOUR.sub("", str(exc)).strip()
    # the innermost process is named last: a traceback's header, or a dead actor's class
    named = sorted((m.start(), m.group(1)) for pattern in (_WORKER, _CLASS_NAME)
                   for m in pattern.finditer(text))
    worker = named[-1][1] if named else None
    pids = _PID.findall(text)
    return RayFailure(worker, _root_cause(exc, text), int(pids[-1]) if pids else None, text)


def _root_cause(exc: BaseException, text: str) -> str:
    """The exception raised in the worker, as ``Type: first line of its message``."""
    from ray.exceptions import RayError, RayTaskError

    cause: BaseException = exc
    # a RayTaskError carries the worker's exception object (through nested workers, the
    # innermost one's); Ray puts a plain RayError there when that exception would not pickle
    while isinstance(cause, RayTaskError) and isinstance(cause.cause, BaseException):
        cause = cause.cause
    if not isinstance(cause, RayError):
        lines = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    ended = _EXIT.search(text)
    if ended:  # the process died: no exception, Ray says how it ended
        detail = f": {ended.group(2)}" if ended.group(2) else ""
        return f"its process died ({ended.group(1)}{detail})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__  # a traceback ends with "Type: message"


def ray_logs_dir() -> str | None:
    """The logs folder of this process's Ray session while Ray is up (None otherwise): where
    each worker's output is, ``worker-*-<pid>.out`` and ``.err``."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        # Ray has no public call for it; its node object, which started the session, knows it
        from ray._private import worker

        return str(worker._global_node.get_logs_dir_path())
    except Exception:  # another Ray release: the line then says where Ray keeps them by default
        return None


def failure_message(failure: RayFailure, log_file: Path | None, logs_dir: str | None) -> str:
    """The one line: the worker and the cause, then where the full text and the logs are."""
    who = f"verl's Ray worker {failure.worker}" if failure.worker else "a Ray process of verl"
    places = [f"full error in {log_file}"] if log_file else []
    if logs_dir:
        own = f" (this worker's: worker-*-{failure.pid}.out, .err)" if failure.pid else ""
        places.append(f"Ray's logs in {logs_dir}{own}")
    else:
        places.append("Ray's logs in its session folder (/tmp/ray/session_latest/logs unless "
                      "ray_kwargs.ray_init._temp_dir says otherwise)")
    return f"{who} failed: {failure.cause}; {'; '.join(places)}"


@contextmanager
def reported_ray_failures(output_dir: Path) -> Iterator[None]:
    """Within the block, a Ray error becomes a :class:`LaunchError` of one line
    (:func:`failure_message`), its full text written to ``output_dir/ray_failure.log``. Use it
    inside whatever shuts Ray down, so that the session's logs folder can still be asked for.
    Any other exception passes through unchanged."""
    try:
        yield
    except Exception as exc:
        if not is_ray_failure(exc):
            raise
        failure = describe_ray_failure(exc)
        log_file: Path | None = output_dir / RAY_FAILURE_LOG
        try:
            atomic_write_text(log_file, failure.text + "\n")
        except OSError:  # the line still names the worker, the cause and Ray's logs
            log_file = None
        raise LaunchError(failure_message(failure, log_file, ray_logs_dir())) from None
