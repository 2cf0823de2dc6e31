"""A failure inside verl's Ray processes becomes one line naming the worker, the cause and the logs.

What is real here: a local Ray cluster and Ray actors shaped like verl's (a TaskRunner that waits
on a worker it started, as verl's driver waits on its TaskRunner), whose exceptions reach this
process exactly as Ray delivers them; and the context manager ``run_verl`` wraps verl's
``run_ppo`` in (:func:`reported_ray_failures`). What is not: verl's own workers, whose failures
take a multi-minute run to provoke (tests/verl_cpu runs verl's real trainer).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from rewardsql.errors import LaunchError
from rewardsql.training.launcher.ray_failures import RAY_FAILURE_LOG, reported_ray_failures

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # a Ray cluster starts once for the module (seconds)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@ray.remote
class RewardWorker:
    def score(self) -> float:
        raise ValueError("db_root /nope/databases does not exist\nsecond line of the message")


@ray.remote
class TaskRunner:
    def run(self) -> float:
        worker = RewardWorker.remote()
        return ray.get(worker.score.remote())  # verl's TaskRunner waits on its workers so


@ray.remote
class BrokenAtStart:
    def __init__(self) -> None:
        raise KeyError("actor_rollout_ref.model.path")

    def run(self) -> None:
        return None


@ray.remote
class Killed:
    def run(self) -> None:
        os._exit(3)  # as the OOM killer or a crash in native code would end it


def _fail(call, out: Path) -> str:
    with pytest.raises(LaunchError) as caught, reported_ray_failures(out):
        call()
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.__suppress_context__  # `raise ... from None`: no chained traceback
    return message


def test_an_exception_in_a_nested_worker_names_that_worker_and_its_cause(
        cluster: None, tmp_path: Path) -> None:
    message = _fail(lambda: ray.get(TaskRunner.remote().run.remote()), tmp_path)
    assert message.startswith("verl's Ray worker RewardWorker.score failed: ValueError: db_root "
                              "/nope/databases does not exist; ")
    assert "second line" not in message
    log = tmp_path / RAY_FAILURE_LOG
    assert f"full error in {log}" in message
    text = log.read_text()
    # both processes' tracebacks, down to the line that raised, without colour codes
    assert "ray::TaskRunner.run()" in text and "ray::RewardWorker.score()" in text
    assert 'raise ValueError("db_root /nope/databases does not exist' in text
    assert "\x1b[" not in text
    logs_dir = message.split("Ray's logs in ", 1)[1].split(" (", 1)[0]
    assert Path(logs_dir).is_dir() and Path(logs_dir).name == "logs"
    assert "(this worker's: worker-*-" in message


def test_a_worker_that_fails_in_init_is_named_with_its_cause(cluster: None,
                                                             tmp_path: Path) -> None:
    message = _fail(lambda: ray.get(BrokenAtStart.remote().run.remote()), tmp_path)
    assert message.startswith("verl's Ray worker BrokenAtStart.__init__ failed: KeyError: "
                              "'actor_rollout_ref.model.path'; ")


def test_a_worker_whose_process_died_is_named_with_how_it_ended(cluster: None,
                                                               tmp_path: Path) -> None:
    message = _fail(lambda: ray.get(Killed.remote().run.remote()), tmp_path)
    assert message.startswith("verl's Ray worker Killed failed: its process died (SYSTEM_ERROR"), (
        message)


def test_other_exceptions_pass_through(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError), reported_ray_failures(tmp_path):
        1 / 0  # noqa: B018
    assert not (tmp_path / RAY_FAILURE_LOG).exists()
