"""``rewardsql demo --quick`` killed with SIGKILL during GRPO, then run again with the same
command, finishes as an uninterrupted run does (issue 26).

The demo's GRPO (--quick: 3 steps) keeps no checkpoints (``save_freq: -1``, ``resume_mode:
disable``: an output directory may be reused with other settings), so a killed GRPO starts
again; the finished SFT is kept (its rerun trains no step more). The finished run has the step
counts of an uninterrupted one, every JSON file parses and metrics.jsonl holds each step once.
A kill during SFT's steps and checkpoint writes is tested on ``rewardsql sft`` itself
(tests/training/test_kill_resume.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two demo runs: minutes on 2 busy cores


def _run_until(args: list[str], ready, what: str, limit: float = 600) -> None:
    """Start the demo, SIGKILL it once ``ready(stdout_so_far)``; fail if it ends first."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(proc.stdout), daemon=True)
    reader.start()
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if ready("".join(seen)):
            proc.kill()
            proc.wait()
            return
        if proc.poll() is not None:
            reader.join(5)
            pytest.fail(f"the demo ended (code {proc.returncode}) before {what}: "
                        f"{''.join(seen)[-2000:]}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no {what} within {limit} s")


def test_demo_killed_during_grpo_finishes_as_uninterrupted(tmp_path: Path):
    out = tmp_path / "demo"
    args = [sys.executable, "-m", "rewardsql", "demo", "--quick", "--output-dir", str(out)]
    metrics = out / "grpo" / "metrics.jsonl"

    _run_until(args, lambda _: metrics.is_file() and metrics.read_text().count("\n") >= 1,
               "a GRPO step")
    done = subprocess.run(args, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    assert report["sft"]["steps"] == 30 and report["grpo"]["steps"] == 3
    text = metrics.read_text()
    assert text.endswith("\n")
    assert [json.loads(line)["step"] for line in text.splitlines()] == [1, 2, 3]
    for path in out.rglob("*.json"):
        json.loads(path.read_text())
    assert not list(out.rglob(".*.tmp"))
