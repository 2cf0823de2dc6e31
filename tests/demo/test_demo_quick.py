"""``rewardsql demo --quick`` end to end, as a user runs it: a subprocess, real everything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _train_helpers import kill_when
from rewardsql.demo import pipeline as demo
from rewardsql.training.cpu_math import (
    CLASS_ENV,
    REPRODUCIBLE_THREADS,
    cpu_class,
    cpu_flags,
    cpu_model,
)

pytestmark = pytest.mark.slow

REPORT_KEYS = {"sft", "grpo", "improvement", "timings", "settings", "environment", "teacher",
               "dev_per_template", "prm", "best_of_n", "grpo_process", "improvement_process",
               "improvement_best_of_n"}


def test_demo_quick_killed_in_grpo_finishes_and_writes_the_report(tmp_path: Path):
    """Killed (SIGKILL) during its first GRPO run, then run again with the same command: the
    finished stages (SFT, labels, PRM) are reused, not made again; GRPO keeps no checkpoints
    (``save_freq: -1``: an output directory may be reused with other settings), so it starts
    again, and the finished run is an uninterrupted one's (issue 26). Then the report (issue 25).
    """
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "rewardsql", "demo", "--quick", "--output-dir", str(out)]
    metrics = out / "grpo" / "metrics.jsonl"
    # no pipes: nothing reads them while it runs, and a full pipe would stall the demo
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    kill_when(proc, lambda: metrics.is_file() and metrics.read_text().count("\n") >= 1,
              "a GRPO step", limit=600)
    kept = ("prm/labels.jsonl", "sft/sft_result.json", "sft/model.safetensors",
            "prm/model/prm_result.json", "prm/model/model.safetensors")
    before = {name: (out / name).read_bytes() for name in kept}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in kept:  # SFT, labels and PRM were not made again (a result records its time)
        assert (out / name).read_bytes() == before[name], name
    assert "dev accuracy: GRPO outcome + process" in proc.stdout

    report = json.loads((out / "report.json").read_text())
    assert set(report) >= REPORT_KEYS
    for stage in ("sft", "grpo", "grpo_process"):
        assert 0.0 <= report[stage]["dev_accuracy"] <= 1.0
    for stage in ("sft", "grpo"):
        assert 0.0 <= report[stage]["own_prompts_accuracy"] <= 1.0
    # every stage ran for real: the PRM trained on at least 200 labelled steps of the policy's
    # answers, some of them right and some wrong; best-of-8 scored dev; both GRPO runs stepped
    # with rewards that varied inside a group, so the policy had a gradient
    for run in ("grpo", "grpo_process"):
        assert report[run]["steps"] == 3
        assert report[run]["groups_with_variance"] > 0, report[run]
        assert report[run]["grad_norm_max"] > 0, report[run]
        # the third step revisits the first step's questions: two updates did not wreck them
        assert report[run]["reward_mean_last"] >= 0.5 * report[run]["reward_mean_first"], \
            report[run]
        assert 0.0 <= report[run]["accuracy_last"] <= 1.0
    # the process run's PRM score on its own samples, beside their outcome accuracy
    assert 0.0 < report["grpo_process"]["prm_step_score_last"] < 1.0
    assert report["grpo"]["prm_step_score_last"] is None  # no PRM in the outcome run
    # SFT saw the whole small train split: it answers some dev questions it never saw
    assert report["sft"]["dev_accuracy"] > 0
    assert report["prm"]["positive_steps"] > 0 and report["prm"]["negative_steps"] > 0
    assert report["prm"]["steps"] >= 200 and report["prm"]["train_steps"] >= 1
    assert report["prm"]["steps"] == report["prm"]["positive_steps"] + \
        report["prm"]["negative_steps"]
    assert 0.0 <= report["prm"]["held_out"]["step_accuracy"] <= 1.0
    # steps past the PRM's max_length are counted (neither trained nor scored)
    assert 0 <= report["prm"]["train_cut_steps"] < report["prm"]["steps"]
    # the PRM on the teacher's near-miss steps, in its demonstrations and best-of-8 samples
    near_miss = report["prm"]["near_miss"]
    assert set(near_miss) == set(report["teacher"]["near_misses"])
    for value in near_miss.values():
        teacher, policy, labels = value["teacher"], value["policy"], value["labels"]
        assert teacher["near_miss"]["n"] + teacher["near_miss"]["unscored"] > 0
        assert 0 < labels["answers"] <= report["prm"]["responses"]
        for steps, key in ((teacher["near_miss"], "flagged"), (teacher["clean"], "passed"),
                           (policy["near_miss"], "flagged"), (policy["right_step"], "passed"),
                           (labels["near_miss"], "flagged"), (labels["right_step"], "passed")):
            assert steps["n"] >= 0 and (steps[key] is None) == (steps["n"] == 0), steps
            assert steps[key] is None or 0.0 <= steps[key] <= 1.0
    assert sum(v["policy"]["questions"] for v in near_miss.values()) <= \
        report["sft"]["dev_count"]
    assert "group_having near-miss flagged: labels / PRM teacher / PRM samples" in proc.stdout
    best = report["best_of_n"]
    assert best["n"] == 8 and best["questions"] == report["sft"]["dev_count"]
    assert best["accuracy"]["pass@8"] >= max(best["accuracy"]["prm_min"],
                                             best["accuracy"]["majority_vote"])
    # --quick: 3 steps of 4 prompts, cycling over the first 8 train questions
    assert report["grpo"]["own_prompts_count"] == demo.QUICK_GRPO_QUESTIONS
    assert report["improvement"] == pytest.approx(
        report["grpo"]["dev_accuracy"] - report["sft"]["dev_accuracy"])
    # the teacher is stated; per-template dev accuracy adds up to the overall figure
    assert report["teacher"]["error_rate"] == 0.65
    assert set(report["teacher"]["errors"]) == {"strict_comparison", "wrong_order",
                                                "count_distinct"}
    per_template = report["dev_per_template"]
    assert sum(v["n"] for v in per_template.values()) == report["sft"]["dev_count"]
    for stage in ("sft", "grpo", "grpo_process"):
        total = sum(v[stage] * v["n"] for v in per_template.values())
        assert total / report["sft"]["dev_count"] == pytest.approx(report[stage]["dev_accuracy"])
    assert "SFT teacher's near-miss in group_having" in proc.stdout
    assert set(report["timings"]) >= {"build_s", "sft_s", "sft_eval_s", "near_miss_s", "grpo_s",
                                       "own_prompts_eval_s", "total_s"}
    assert report["settings"]["quick"] is True
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"  # --device auto
    assert report["environment"]["device"] == device
    assert report["environment"]["cpu"] == cpu_model()
    assert f"{cpu_model()}" in proc.stdout  # the summary names the CPU the figures came from
    # the GRPO run's own record of its environment agrees with the report's
    run = json.loads((out / "grpo" / "run.json").read_text())
    assert run["starts"][-1]["environment"]["cpu_math"] == report["environment"]["cpu_math"]
    # --cpu-math reproducible (the default): this CPU's class pinned, MKL's reproducible mode
    assert report["environment"]["torch_threads"] == REPRODUCIBLE_THREADS
    math = report["environment"]["cpu_math"]
    name = cpu_class(cpu_flags())
    if name is not None:
        assert math["mode"] == "reproducible" and math["class"] == name
        assert {key: math[key] for key in CLASS_ENV[name]} == CLASS_ENV[name]
    assert report["settings"]["grpo"]["trainer"]["device"] == device
    assert report["settings"]["grpo"]["algorithm"]["adv_estimator"] == "grpo_weighted"
    # --quick's GRPO trains on train questions (its short SFT is right on no new one; the full
    # demo's trains on the rl split), and evaluates on dev
    data = report["settings"]["grpo"]["data"]
    assert Path(data["train_files"]).name == "train.parquet"
    assert Path(data["val_files"]).name == "dev.parquet"
    history = report["grpo"]["dev_history"]
    assert history[0][0] == 0 and history[-1][0] == report["grpo"]["steps"] > 0
    # the GRPO run's own files
    steps = [json.loads(x) for x in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(1, report["grpo"]["steps"] + 1))

    png = out / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[0] > 200 and image.shape[1] > 400
    assert not list(out.glob(".*.tmp"))  # nothing half-written left behind

    # the killed run left nothing torn or doubled
    assert report["sft"]["steps"] == demo.QUICK_SFT["max_steps"]
    text = metrics.read_text()
    assert text.endswith("\n")
    for path in out.rglob("*.json"):
        json.loads(path.read_text())
    assert not list(out.rglob(".*.tmp"))


def test_demo_without_output_dir_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "rewardsql", "demo", "--quick"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert "--output-dir" in proc.stderr


def test_demo_device_cuda_without_a_gpu_fails_before_any_work(tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "rewardsql", "demo", "--quick", "--device", "cuda",
                           "--output-dir", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "key 'device': CUDA is not available" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "cache").exists()  # nothing was built


def test_demo_unknown_device_names_the_value_and_the_choices(tmp_path: Path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "rewardsql", "demo", "--quick", "--device", "gpu",
                           "--output-dir", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert """key 'device': expected "auto", "cpu" or "cuda", got 'gpu'""" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "cache").exists()


def test_demo_unknown_cpu_math_names_the_value_and_the_choices(tmp_path: Path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "rewardsql", "demo", "--quick", "--cpu-math",
                           "fast", "--output-dir", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "--cpu-math must be one of reproducible, native, got 'fast'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_demo_without_the_sql_plugin_says_how_to_install_it_before_any_work(tmp_path: Path):
    code = ("import runpy, sys; sys.modules['rewardsql_sql_reward'] = None; "
            "sys.argv = ['rewardsql', *sys.argv[1:]]; "
            "runpy.run_module('rewardsql', run_name='__main__')")
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-c", code, "demo", "--quick", "--output-dir",
                           str(out)], capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "rewardsql demo needs the SQL plugin" in proc.stderr
    assert "pip install rewardsql-sql-reward" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "cache").exists()
