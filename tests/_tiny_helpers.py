"""Helpers for the tiny-example and SFT tests: one quick example and tiny models per session.

``build_example`` and ``build_tiny_model`` cache on disk, so every test module that asks for the
same session directory reuses one build.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rewardsql.demo.tiny import CONFIG_DIR, TinyExample, build_example, build_tiny_model

REPO = Path(__file__).resolve().parents[1]
TINY_SFT_CONFIG = CONFIG_DIR / "sft_config.json"
PAPER_SFT_CONFIG = REPO / "examples" / "rewardsql" / "sft_config.json"


def session_dir(factory: pytest.TempPathFactory) -> Path:
    path = factory.getbasetemp() / "tiny-shared"
    path.mkdir(exist_ok=True)
    return path


def quick_example(factory: pytest.TempPathFactory) -> TinyExample:
    """The quick-scale example, seed 0, built once per test session."""
    return build_example(session_dir(factory) / "example", seed=0, scale="quick")


def tiny_model(factory: pytest.TempPathFactory, size: str = "micro") -> Path:
    """A model trained on the quick example's corpus ("micro" is the fast test size)."""
    example = quick_example(factory)
    return build_tiny_model(session_dir(factory) / f"model-{size}", example.corpus(), size=size)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``rewardsql ARGS`` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "rewardsql", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)
