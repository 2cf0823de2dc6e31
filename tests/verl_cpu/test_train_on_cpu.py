"""``rewardsql train --engine verl --device cpu``: verl 0.9.1's real Ray PPO trainer, FSDP2 on
gloo and vLLM's CPU build, on the tiny model and the tiny example. Nothing is mocked.

Two invocations share one output directory: the first trains 2 GRPO steps with a reward that
varies and saves a checkpoint; the second resumes from it and trains 2 more with ``sql_verifier``
and rewardsql's ``grpo_weighted`` estimator. A third trains 2 steps with process rewards
(``sql_prm``, ``grpo_process_avg_unique``) on verl's colocated reward-model path. The figures
come from verl's own metrics log (``trainer.logger=file``) and rollout dumps
(``trainer.rollout_data_dir``). Each invocation ends by exporting its last checkpoint to
``OUT/hf_model``; the first two runs' checkpoints are exported again and used to generate and
rerank (no further training).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny_helpers import quick_example, tiny_model
from rewardsql.demo.tiny import CONFIG_DIR
from rewardsql.training.run_watchdog import RUN_MARKER, TIMEOUT_EXIT
from rewardsql.training.verl_cpu import TIMEOUT_VAR

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vLLM's CPU build is not installed (nox -s verl_cpu)")

HERE = Path(__file__).resolve().parent
#: Each invocation's limit: the watchdog's, and (longer) the test's own.
WATCHDOG_S = 300


@dataclass
class Run:
    result: subprocess.CompletedProcess[str]
    metrics: dict[int, dict[str, Any]]  # step -> verl's logged metrics
    seconds: float


def _train(out: Path, metrics: Path, *overrides: str, watchdog_s: float = WATCHDOG_S) -> Run:
    """One ``rewardsql train`` invocation as a user runs it; ``out``'s parent holds the example
    and the model."""
    example = out.parent / "example"
    env = {**os.environ, "VERL_FILE_LOGGER_PATH": str(metrics), TIMEOUT_VAR: str(watchdog_s)}
    args = [
        sys.executable, "-m", "rewardsql", "train", "--engine", "verl", "--device", "cpu",
        "--config", str(CONFIG_DIR / "grpo.yaml"), "--output-dir", str(out),
        f"data.train_files={example / 'rl.parquet'}", f"data.val_files={example / 'dev.parquet'}",
        f"actor_rollout_ref.model.path={out.parent / 'model'}",
        "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.rollout.n=4", "data.max_response_length=32",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16",
        "trainer.test_freq=-1", "trainer.save_freq=2", "trainer.resume_mode=auto",
        "trainer.logger=[console,file]", *overrides,
    ]
    start = time.monotonic()
    result = subprocess.run(args, capture_output=True, text=True, env=env,
                            timeout=WATCHDOG_S + 120)
    seconds = time.monotonic() - start
    logged: dict[int, dict[str, Any]] = {}
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            logged[int(record["step"])] = record["data"]
    return Run(result, logged, seconds)


def _workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the quick example and the tiny model (built once per session)."""
    root = tmp_path_factory.mktemp("verl-cpu")
    example = quick_example(tmp_path_factory)
    model = tiny_model(tmp_path_factory, "tiny")  # head size 32: one vLLM's CPU kernels take
    (root / "example").symlink_to(example.out_dir)
    (root / "model").symlink_to(model)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Run]:
    root = _workspace(tmp_path_factory)
    example = quick_example(tmp_path_factory)
    out = root / "out"
    varied = _train(
        out, root / "first.jsonl",
        "reward.reward_manager.name=naive", "~rewardsql.reward_manager",
        f"reward.custom_reward_function.path={HERE / 'varied_reward.py'}",
        "reward.custom_reward_function.name=score", "trainer.total_training_steps=2")
    verifier = _train(
        out, root / "second.jsonl",
        f"rewardsql.reward_manager.db_root={example.db_root}",
        "trainer.total_training_steps=4")
    print(f"\nverl on the CPU: first run {varied.seconds:.0f} s, resumed run "
          f"{verifier.seconds:.0f} s", file=sys.stderr)
    return varied, verifier


def _ok(run: Run) -> None:
    assert run.result.returncode == 0, run.result.stderr[-4000:]


def test_a_varied_reward_trains_the_actor(runs: tuple[Run, Run]) -> None:
    first, _ = runs
    _ok(first)
    assert sorted(first.metrics) == [1, 2]
    step1, step2 = first.metrics[1], first.metrics[2]
    assert step1["critic/score/max"] > step1["critic/score/min"]  # the rewards vary
    assert step1["actor/grad_norm"] > 0
    # the ref is the initial model: a KL above 0 at step 2 means step 1 moved the actor ...
    assert step2["actor/kl_loss"] > 0
    # ... and vLLM sampled with the moved weights: its log-probs are FSDP's (weight sync)
    assert step2["training/rollout_probs_diff_max"] < 1e-2


def test_a_second_invocation_resumes_with_sql_verifier(runs: tuple[Run, Run]) -> None:
    first, second = runs
    _ok(first)
    _ok(second)
    out = Path(_output_dir(second))
    assert (out / "global_step_2" / "actor").is_dir()
    assert (out / "global_step_4" / "actor").is_dir()
    assert (out / "latest_checkpointed_iteration.txt").read_text().strip() == "4"
    assert sorted(second.metrics) == [3, 4]  # resumed at step 3, not trained from scratch
    assert "Load from checkpoint folder" in second.result.stdout + second.result.stderr
    # the restored actor is the trained one: it differs from the ref (the initial model) at once
    assert second.metrics[3]["actor/kl_loss"] > 0
    assert "reward manager: sql_verifier" in second.result.stdout
    assert "estimator:      grpo_weighted" in second.result.stdout
    for step in (3, 4):  # the untrained model's SQL never runs: every score is 0
        assert second.metrics[step]["critic/score/max"] == 0
    # each invocation ends by merging its last checkpoint into OUT/hf_model (the second's
    # replaces the first's)
    for run, step in ((first, 2), (second, 4)):
        assert (f"final model: {out / 'hf_model'} (a Hugging Face model directory, "
                f"global_step_{step} merged by verl's model merger)") in run.result.stdout
    assert json.loads((out / "hf_model" / "rewardsql_export.json").read_text())["step"] == 4


def test_an_exported_checkpoint_generates_and_reranks(
        runs: tuple[Run, Run], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """The run's own export (global_step_4, at its end) and ``rewardsql export`` of the named
    checkpoint global_step_2: Hugging Face directories that transformers loads and generates
    with, holding the weights each step trained, and that ``rerank --policy`` takes as they
    are."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, second = runs
    _ok(second)
    out = Path(_output_dir(second))
    step2 = tmp_path / "step2"
    result = subprocess.run([sys.executable, "-m", "rewardsql", "export", "--checkpoint",
                             str(out / "global_step_2"), "--output", str(step2)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"(global_step_2) to {step2}" in result.stdout
    models = {name: AutoModelForCausalLM.from_pretrained(path) for name, path in (
        ("initial", out.parent / "model"), ("step2", step2), ("step4", out / "hf_model"))}
    weights = {name: m.state_dict() for name, m in models.items()}

    def differ(a: str, b: str) -> bool:
        return any(not torch.equal(weights[a][n].to(torch.bfloat16),
                                   weights[b][n].to(torch.bfloat16)) for n in weights[a])

    # the actor moved at every step, and each export holds its own step's weights
    assert differ("initial", "step2") and differ("step2", "step4")
    tokenizer = AutoTokenizer.from_pretrained(out / "hf_model")
    ids = tokenizer("SELECT", return_tensors="pt")
    for name in ("step2", "step4"):
        tokens = models[name].generate(**ids, max_new_tokens=8, min_new_tokens=8,
                                       do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert tokens.shape[1] == ids["input_ids"].shape[1] + 8
    # best-of-1 with the exported policy (the tiny model stands in for the PRM)
    example = quick_example(tmp_path_factory)
    rerank = subprocess.run(
        [sys.executable, "-m", "rewardsql", "rerank", "--prm", str(out.parent / "model"),
         "--policy", str(out / "hf_model"), "--n", "1", "--limit", "2", "--max-new-tokens", "16",
         "--questions", str(example.dev_json), "--db-root", str(example.db_root),
         "--sample-values", str(example.sample_values), "--device", "cpu",
         "--output-dir", str(tmp_path / "bon")], capture_output=True, text=True, timeout=300)
    assert rerank.returncode == 0, rerank.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "bon" / "questions.jsonl").read_text()
            .splitlines()]
    assert len(rows) == 2


#: The process weight of the sql_prm run.
PROCESS = 0.5


@pytest.fixture(scope="module")
def prm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    """2 GRPO steps with sql_prm: the tiny model is the policy and, untrained, the PRM (its step
    scores vary from step to step; whether they are good does not matter here). Steps are
    scored on every token of the step (``fill``), the published placement. The PRM is scored on
    verl's own reward-model server (vLLM), the default: no reward worker loads it."""
    root = _workspace(tmp_path_factory)
    example = quick_example(tmp_path_factory)
    manager = {"prm_path": str(root / "model"), "device": "cpu", "process_placement": "fill",
               "verifier": {"db_root": str(example.db_root), "workers": 1}}
    rollouts = root / "rollouts"
    run = _train(root / "out", root / "metrics.jsonl",
                 f"rewardsql.reward_manager={json.dumps(manager)}",
                 "reward.reward_manager.name=sql_prm",
                 f"rewardsql.reward_weights.process={PROCESS}",
                 "algorithm.adv_estimator=grpo_process_avg_unique",
                 f"trainer.rollout_data_dir={rollouts}", "trainer.save_freq=-1",
                 "trainer.total_training_steps=2")
    print(f"\nverl on the CPU with sql_prm: {run.seconds:.0f} s", file=sys.stderr)
    return run, rollouts


def test_process_rewards_reach_verl_dense(prm_run: tuple[Run, Path]) -> None:
    run, rollouts = prm_run
    _ok(run)
    assert "reward manager: sql_prm" in run.result.stdout
    assert "verl's colocated reward-model path" in run.result.stdout
    assert "the PRM is scored on verl's reward-model server" in run.result.stdout
    assert sorted(run.metrics) == [1, 2]
    # trainer.save_freq=-1: no checkpoint, so nothing to export, and the run says so
    assert "final model:    none (trainer.save_freq=-1" in run.result.stdout
    assert "warning: no checkpoint was saved" in run.result.stderr
    samples = [json.loads(line) for step in (1, 2)
               for line in (rollouts / f"{step}.jsonl").read_text().splitlines()]
    # the reward worker built no PRM model: the manager's own count, per response
    assert {s["prm_models_loaded"] for s in samples} == {0}
    scored = [s for s in samples if s["prm_status_ok"] == 1]
    assert scored, samples[:2]
    # the untrained policy's SQL never runs (outcome 0), so verl's score of a response, the sum
    # of its token_level_scores, is the PRM's part alone: weight x step score x tokens covered,
    # exactly, for a one-step response (no separator)
    assert all(s["acc"] == 0 for s in samples)
    one_step = [s for s in scored if s["prm_steps"] == 1]
    assert one_step
    for s in one_step:
        assert s["score"] == pytest.approx(PROCESS * s["prm_step_score"] * s["prm_reward_tokens"],
                                           rel=1e-4, abs=1e-6), s
    # dense: more than one rewarded position per response, and responses differ in reward
    assert all(s["prm_reward_tokens"] > 1 for s in one_step)
    assert len({round(s["score"], 6) for s in scored}) > 1
    step1, step2 = run.metrics[1], run.metrics[2]
    assert step1["actor/grad_norm"] > 0
    assert step2["actor/kl_loss"] > 0  # step 1 moved the actor away from the ref


REPO = HERE.parents[1]
#: The first line of docs/training.md's complete verl-on-the-CPU run.
DOCUMENTED_RUN = "python -m rewardsql.demo.tiny --output-dir runs/tiny --quick"


def _documented_block(doc: Path, first_line: str) -> str:
    """The fenced bash block of ``doc`` that starts with ``first_line``, as written."""
    blocks = doc.read_text(encoding="utf-8").split("```bash\n")[1:]
    found = [b.split("```", 1)[0] for b in blocks if b.startswith(first_line)]
    assert len(found) == 1, f"{doc} has {len(found)} blocks starting {first_line!r}"
    return found[0]


def test_the_documented_command_trains_as_written(tmp_path: Path) -> None:
    """docs/training.md's complete run, in bash, word for word: the tiny example and model, then
    the demo's grpo.yaml as it is (its ref micro-batch unset: --device cpu fills it), one step.
    The working directory stands for a checkout (its core/ linked in); the programs are this
    environment's."""
    block = _documented_block(REPO / "docs" / "training.md", DOCUMENTED_RUN)
    (tmp_path / "core").symlink_to(REPO / "core")
    env = {**os.environ, TIMEOUT_VAR: str(WATCHDOG_S),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    result = subprocess.run(["bash", "-ec", block], cwd=tmp_path, capture_output=True, text=True,
                            env=env, timeout=WATCHDOG_S + 180)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert ("note: --device cpu: actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=64"
            in result.stdout)
    # verl's tensorboard logger (the config's; console lines from Ray's workers can be lost at
    # shutdown): the step ran through the actor's update (one step of the tiny untrained model
    # often has no reward variance, so its gradient may be 0: the other tests check it moves)
    out = tmp_path / "runs" / "verl-cpu"
    scalars = _tensorboard_scalars(out / "tensorboard")
    assert "actor/grad_norm" in scalars.get(1, {}), (sorted(scalars), result.stdout[-3000:])
    assert not (tmp_path / "tensorboard_log").exists()  # verl's default, under the cwd
    assert (out / "resolved_config.yaml").is_file()
    assert _marked_processes() == []


def _tensorboard_scalars(directory: Path) -> dict[int, dict[str, float]]:
    """step -> tag -> value, from every event file in ``directory``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[int, dict[str, float]] = {}
    for events in sorted(directory.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                found.setdefault(event.step, {})[tag] = event.value
    return found


def _output_dir(run: Run) -> str:
    for line in run.result.stdout.splitlines():
        if line.startswith("output:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(run.result.stdout)


def _marked_processes() -> list[tuple[int, str, str]]:
    import psutil

    left = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if RUN_MARKER in proc.environ():
                left.append((proc.pid, proc.info["name"], " ".join(proc.info["cmdline"] or [])))
        except (psutil.Error, OSError):
            continue
    return left


def test_no_ray_or_vllm_process_is_left_behind(runs: tuple[Run, Run]) -> None:
    assert _marked_processes() == []


def test_plain_verl_with_the_switch_runs_under_the_watchdog(runs: tuple[Run, Run],
                                                            tmp_path: Path) -> None:
    """``python -m verl.trainer.main_ppo`` with ``REWARDSQL_VERL_CPU=1`` and the first run's
    resolved config: the CPU platform reaches verl's Ray workers, and the watchdog guards the run
    (given far less time than the run needs, as a hung one): it ends it with its message, and
    Ray's and vLLM's processes with it."""
    first, _ = runs
    _ok(first)
    resolved = Path(_output_dir(first)) / "resolved_config.yaml"
    env = {**os.environ, "REWARDSQL_VERL_CPU": "1", TIMEOUT_VAR: "40"}
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={resolved.parent}",
         f"--config-name={resolved.stem}", f"trainer.default_local_dir={tmp_path / 'out'}",
         "trainer.resume_mode=disable", "trainer.save_freq=-1",
         # far more than 40 s on any machine
         "trainer.total_epochs=100", "trainer.total_training_steps=2000"],
        capture_output=True, text=True, env=env, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == TIMEOUT_EXIT, output[-3000:]
    assert time.monotonic() - start < 40 + 90
    assert "error: verl on the CPU did not finish within 40 s" in result.stderr
    # a Ray worker's log line: verl chose the cpu platform there
    assert any(line.startswith("(") and "Platform override from VERL_PLATFORM: cpu" in line
               for line in _plain(output).splitlines())
    assert _marked_processes() == []


def _plain(text: str) -> str:
    """Ray's coloured log prefixes without their escape codes."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
