"""``rewardsql rm label --workers 2``: the questions sampled on two Ray actors (a Ray instance
of the run's own, transformers samplers with the tiny model on the CPU; vLLM engines take the
same path). A kill -9 of a worker stops the run with one line naming it; after a kill -9 of a
worker or of the driver, the same command writes each question once, samples no finished
question again, and the file is the one an in-process run writes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from _tiny_helpers import quick_example, tiny_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="Ray is not installed")

QUESTIONS = 24
ARGS = ["--n", "2", "--m", "2", "--max-new-tokens", "48", "--limit", str(QUESTIONS),
        "--device", "cpu", "--sampler", "transformers", "--questions-in-flight", "1"]
WORKER = re.compile(r"worker (\d+): pid (\d+) on ")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    example = quick_example(tmp_path_factory)
    model = tiny_model(tmp_path_factory)
    # a Ray instance of the test's own, its files apart (not the one another process started)
    ray_dir = tempfile.mkdtemp(prefix="rsql-ray-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_dir, "OMP_NUM_THREADS": "1"}
    yield example, model, env
    shutil.rmtree(ray_dir, ignore_errors=True)


def _command(example, model, output: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "rewardsql", "rm", "label", "--policy", str(model),
            "--questions", str(example.dev_parquet), "--db-root", str(example.db_root),
            "--output", str(output), *ARGS, *args]


def _lines(output: Path) -> int:
    return output.read_text().count("\n") if output.exists() else 0


def _start_and_wait(command: list[str], env, output: Path, log: Path):
    """The run, once both workers are up and it wrote 2 lines: (process, worker pids)."""
    before = _lines(output)
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        pids = {int(w): int(p) for w, p in WORKER.findall(log.read_text(errors="replace"))}
        if len(pids) == 2 and _lines(output) >= before + 2:
            return process, pids
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the run did not start: " + log.read_text(errors="replace")[-3000:])


def _finished(output: Path) -> int:
    """Questions with both answers in the file (whole lines: a kill may tear the last)."""
    text = output.read_text()
    rows = [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]
    return sum(1 for q in {r["question_id"] for r in rows}
               if sum(r["question_id"] == q for r in rows) == 2)


def test_a_killed_worker_stops_the_run_and_the_same_command_goes_on(setup, tmp_path):
    import psutil

    example, model, env = setup
    reference = tmp_path / "in_process.jsonl"
    alone = subprocess.run(_command(example, model, reference), capture_output=True,
                           text=True, timeout=300, env=env)
    assert alone.returncode == 0, alone.stderr[-3000:]
    expected = reference.read_text()
    assert expected.count("\n") == 2 * QUESTIONS

    # kill -9 of a worker: one line naming it, exit code 1
    output = tmp_path / "labels.jsonl"
    command = _command(example, model, output, "--workers", "2")
    process, pids = _start_and_wait(command, env, output, tmp_path / "first.log")
    os.kill(pids[0], signal.SIGKILL)
    assert process.wait(timeout=120) == 1
    last = (tmp_path / "first.log").read_text().strip().splitlines()[-1]
    assert re.fullmatch(rf"error: worker 0 \(pid {pids[0]} on [0-9a-f.:]+\) died: .+; run the "
                        r"same command again to go on \(finished questions are kept\)", last), last
    assert 2 <= _lines(output) < 2 * QUESTIONS, "the kill should land mid-run"

    # the same command goes on; a kill -9 of its driver takes its workers with it
    process, pids = _start_and_wait(command, env, output, tmp_path / "second.log")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _lines(output) < 2 * QUESTIONS, "the kill should land mid-run"
    deadline = time.monotonic() + 60
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
              for p in pids.values()):
        assert time.monotonic() < deadline, "the workers outlived their driver"
        time.sleep(0.5)

    # and once more: each question once, finished ones not sampled again
    finished, kept = _finished(output), _lines(output)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (f"questions: {QUESTIONS} ({finished} finished in an earlier run, "
            f"{QUESTIONS - finished} now)") in done.stdout
    assert f"({kept} from an earlier run, {2 * QUESTIONS - kept} now)" in done.stdout
    assert output.read_text() == expected  # as an uninterrupted run writes it


def test_workers_on_a_ray_cluster_started_apart(setup, tmp_path):
    """``--ray-address`` joins a cluster another process started (``ray start --head`` here, on
    this machine: no second node is to be had); the run leaves the cluster running."""
    example, model, env = setup
    limit = ["--limit", "6"]
    reference = tmp_path / "in_process.jsonl"
    alone = subprocess.run(_command(example, model, reference, *limit), capture_output=True,
                           text=True, timeout=300, env=env)
    assert alone.returncode == 0, alone.stderr[-3000:]
    ray = str(Path(sys.executable).with_name("ray"))
    port = 6300 + os.getpid() % 500
    started = subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2",
                              "--include-dashboard=false", "--disable-usage-stats"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        output = tmp_path / "labels.jsonl"
        run = subprocess.run(_command(example, model, output, *limit, "--workers", "2",
                                      "--ray-address", f"127.0.0.1:{port}"),
                             capture_output=True, text=True, timeout=300, env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        assert len(WORKER.findall(run.stdout + run.stderr)) == 2
        assert output.read_text() == reference.read_text()
        # `ray start` turned Ray's token authentication on; `ray status` sends the token only
        # in token mode (rm label does that itself)
        status = subprocess.run([ray, "status", f"--address=127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=60,
                                env={**env, "RAY_AUTH_MODE": "token"})
        assert status.returncode == 0, status.stderr[-2000:]  # still up after the run
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120, env=env)
    # a cluster that is not there is one line naming the address
    gone = subprocess.run(_command(example, model, tmp_path / "x.jsonl", *limit, "--workers", "2",
                                   "--ray-address", f"127.0.0.1:{port}"),
                          capture_output=True, text=True, timeout=300, env=env)
    assert gone.returncode == 2
    lines = gone.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: --ray-address: 127.0.0.1:{port}: no Ray cluster to join")
