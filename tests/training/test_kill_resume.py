"""kill -9 anywhere loses at most one checkpoint interval and corrupts nothing (issue 26).

Real processes, real SIGKILLs: ``run_local`` (the engine of ``rewardsql train --engine local``),
``rewardsql sft`` and ``rewardsql rm train`` on the tiny model, killed while writing a checkpoint
and during a step,
then run again with the same command: the run finishes with the step count of an uninterrupted
run, every JSON file parses, and no JSON-lines record is duplicated or torn. A kill in the middle
of an append is reproduced by leaving the torn line such a kill leaves on disk.

``rewardsql rm label``'s kill test is in tests/sql_reward/test_prm_commands.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from _tiny_helpers import TINY_SFT_CONFIG, quick_example, tiny_model
from _train_helpers import kill_when, prm_records

pytestmark = pytest.mark.slow  # a minute each on 2 busy cores: three real runs

LOCAL_RUNNER = """
import json, sys, torch
from pathlib import Path
from rewardsql.training.local.local import run_local
torch.set_num_threads(1)
run_local(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
"""


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]


def _jsonl_steps(path: Path) -> list[int]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), f"{path}: last line torn"
    return [json.loads(line)["step"] for line in text.splitlines()]


def _every_json_parses(root: Path) -> int:
    count = 0
    for path in root.rglob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))
        count += 1
    assert not list(root.rglob(".*.tmp")), "a temp directory of a killed write was left"
    return count


def _writing(folder: Path, prefix: str) -> Callable[[], bool]:
    """True while a temp directory of an atomic write of ``prefix*`` exists in ``folder``."""
    def ready() -> bool:
        try:
            return any(e.name.startswith(prefix) and e.name.endswith(".tmp")
                       for e in os.scandir(folder))
        except FileNotFoundError:
            return False
    return ready


def _lines_at_least(path: Path, count: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return path.read_text(encoding="utf-8").count("\n") >= count
        except FileNotFoundError:
            return False
    return ready


def test_local_engine_killed_while_checkpointing_and_mid_step_resumes_cleanly(
        tmp_path_factory, tmp_path):
    example = quick_example(tmp_path_factory)
    steps = 4
    config = {
        "data": {"train_files": str(example.train_parquet), "val_files": str(example.dev_parquet),
                 "train_batch_size": 2, "max_prompt_length": 256, "max_response_length": 12,
                 "seed": 0},
        "actor_rollout_ref": {"model": {"path": str(tiny_model(tmp_path_factory))},
                              "actor": {"ppo_mini_batch_size": 2,
                                        "ppo_micro_batch_size_per_gpu": 4},
                              "rollout": {"n": 2, "seed": 0}},
        "algorithm": {"adv_estimator": "grpo"},
        "reward": {"reward_manager": {"name": "sql_verifier"}},
        "rewardsql": {"reward_manager": {"db_root": str(example.db_root), "workers": 1}},
        "trainer": {"total_training_steps": steps, "save_freq": 1, "test_freq": 2,
                    "val_before_train": False, "resume_mode": "auto", "device": "cpu",
                    "logger": ["console"]},
    }
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    out = tmp_path / "run"
    args = ["-c", LOCAL_RUNNER, str(config_file), str(out)]
    checkpoints = out / "checkpoints"

    # 1. Killed while writing a checkpoint after the first one.
    proc = _start(args)
    kill_when(proc, lambda: (checkpoints / "global_step_1").is_dir()
               and _writing(checkpoints, ".global_step_")(), "a checkpoint write")
    # 2. Resumed, then killed during the next step (its metrics record not yet written).
    done = len(_jsonl_steps(out / "metrics.jsonl")) if (out / "metrics.jsonl").exists() else 0
    proc = _start(args)
    kill_when(proc, _lines_at_least(out / "metrics.jsonl", done + 1), "a step's record")
    # 3. What a kill in the middle of an append leaves: a last line without its end.
    with (out / "metrics.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"step": 3, "reward/me')
    # 4. Resumed to the end.
    _finish(_start(args))

    assert _jsonl_steps(out / "metrics.jsonl") == list(range(1, steps + 1))
    dev_steps = _jsonl_steps(out / "dev.jsonl")
    assert dev_steps == sorted(set(dev_steps)) and dev_steps[-1] == steps
    state = json.loads((checkpoints / f"global_step_{steps}" / "trainer_state.json").read_text())
    assert state["global_step"] == steps
    assert len(json.loads((out / "run.json").read_text())["starts"]) >= 2
    assert _every_json_parses(out) > 0
    assert (out / "final_model" / "config.json").is_file()


def _sft_args(tmp_path_factory, out: Path, steps: int) -> list[str]:
    example = quick_example(tmp_path_factory)
    return ["-m", "rewardsql", "sft", "--config", str(TINY_SFT_CONFIG),
            f"model_name_or_path={tiny_model(tmp_path_factory)}",
            f"train_file={example.sft_train}", f"output_dir={out}", f"max_steps={steps}",
            "save_steps=2", "save_total_limit=null", "eval_file=null",
            "per_device_train_batch_size=2", "logging_steps=1", "resume_from_checkpoint=auto",
            "device=cpu"]


def _rm_train_args(tmp_path_factory, out: Path, steps: int) -> list[str]:
    labels = out.parent / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in prm_records(40, 0)))
    config = out.parent / "rm_config.json"
    config.write_text(json.dumps({
        "model_name_or_path": str(tiny_model(tmp_path_factory)), "train_file": str(labels),
        "output_dir": str(out), "max_length": 256, "learning_rate": 1e-3}))
    return ["-m", "rewardsql", "rm", "train", "--config", str(config), f"max_steps={steps}",
            "save_steps=2", "save_total_limit=null", "per_device_train_batch_size=2",
            "logging_steps=1", "resume_from_checkpoint=auto", "device=cpu"]


@pytest.mark.parametrize(("command", "result_file"), [("sft", "sft_result.json"),
                                                      ("rm train", "prm_result.json")])
def test_trainer_killed_while_checkpointing_and_mid_step_resumes_cleanly(
        tmp_path_factory, tmp_path, command, result_file):
    out = tmp_path / "out"
    steps = 6
    build = _sft_args if command == "sft" else _rm_train_args
    args = build(tmp_path_factory, out, steps)

    def checkpoint_being_written() -> bool:
        # The Trainer writes trainer_state.json last: a directory without it is mid-write.
        return any(not (p / "trainer_state.json").exists() for p in out.glob("checkpoint-*"))

    proc = _start(args)
    kill_when(proc, checkpoint_being_written, "a checkpoint write")
    proc = _start(args)
    kill_when(proc, lambda: (out / "checkpoint-4" / "trainer_state.json").exists(),
               "the step after a checkpoint")
    # What a kill in the middle of the Trainer's (not atomic) state write leaves: a torn file.
    newest = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state_file = newest / "trainer_state.json"
    state_file.write_bytes(state_file.read_bytes()[: state_file.stat().st_size // 2])
    _finish(_start(args))

    result = json.loads((out / result_file).read_text())
    assert result["steps"] == steps
    # Killed after the last checkpoint, before the final model was swapped in: the same command
    # saves that checkpoint's model, without training a step more.
    (out / result_file).unlink()
    _finish(_start(args))
    result = json.loads((out / result_file).read_text())
    assert result["steps"] == steps and result["start_step"] == steps
    assert not (out / f"checkpoint-{steps + 1}").exists()
    assert result["final_loss"] is not None
    # The same command once more: the finished run's result stands, nothing is trained or saved
    recorded = (out / result_file).read_bytes()
    _finish(_start(args))
    assert (out / result_file).read_bytes() == recorded
    state = json.loads((out / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    logged = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert logged == sorted(set(logged)) and logged[-1] == steps  # one history, no repeats
    assert _every_json_parses(out) > 0
