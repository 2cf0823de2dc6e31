"""Without verl (an optional extra), the commands that need it say how to install it, at once.

verl is installed here, so each command runs in a subprocess where ``sys.modules["verl"] = None``
makes every import of it fail exactly as when it is absent.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

WITHOUT_VERL = ("import runpy, sys; sys.modules['verl'] = None; "
                "sys.argv = ['rewardsql', *sys.argv[1:]]; "
                "runpy.run_module('rewardsql', run_name='__main__')")


def run_without_verl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_VERL, *args], capture_output=True,
                          text=True, timeout=180, check=False)


def test_demo_without_verl_says_how_to_install_it_before_any_work(tmp_path: Path):
    out = tmp_path / "demo"
    proc = run_without_verl("demo", "--quick", "--output-dir", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "rewardsql demo (its GRPO runs on the local engine) needs verl" in proc.stderr
    assert "pip install 'rewardsql[verl]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "cache").exists()  # no data, model or SFT before the error


@pytest.mark.parametrize("engine", ["local", "verl"])
def test_train_without_verl_says_how_to_install_it(tmp_path: Path, engine: str):
    from rewardsql.demo.tiny import CONFIG_DIR

    proc = run_without_verl("train", "--engine", engine, "--dry-run", "--config",
                            str(CONFIG_DIR / "grpo.yaml"), "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert "rewardsql train (verl composes and checks its config, for either engine) needs verl" \
        in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "resolved_config.yaml").exists()


def test_the_local_engine_without_verl_names_what_needs_it(tmp_path: Path):
    code = ("import sys; sys.modules['verl'] = None\n"
            "from rewardsql.config import MissingDependencyError\n"
            "from rewardsql.training.local.local import run_local\n"
            "try:\n"
            "    run_local({'data': {'train_files': 'x.parquet'}}, sys.argv[1])\n"
            "except MissingDependencyError as exc:\n"
            "    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True,
                          text=True, timeout=180, check=True)
    assert proc.stdout.startswith("the local engine (its policy loss, KL and aggregation are "
                                  "verl's core_algos) needs verl, which is not installed here")
