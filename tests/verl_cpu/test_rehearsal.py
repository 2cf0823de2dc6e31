"""The recipe's rehearsal (examples/rewardsql/rehearsal.sh) end to end, as a user runs it: every
stage of examples/rewardsql/README.md in order, the same commands and shipped configs at tiny
sizes, on vLLM's CPU build and verl's trainer on the CPU. Nothing is mocked.

The test checks that each stage's output is what the next one read: the prepared data is what
the labels sample and what verl trains on, the SFT model is the labels' policy, the PRM's
initial weights and verl's actor, the labels are the PRM's training data, the PRM is what verl's
reward-model server scores, the exported model is what rerank samples from, and rerank's
prediction file is what ``sql score`` scores, to the same accuracy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _tiny_helpers import read_jsonl

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vLLM's CPU build is not installed (nox -s verl_cpu)")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "rewardsql" / "rehearsal.sh"
STAGES = ["0. the bundled example", "1. data prepare", "2. sft", "3. rm label", "4. rm train",
          "5. train", "6. export", "7. rerank", "8. sql score", "done"]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from rewardsql.training.verl_cpu import TIMEOUT_VAR

    work = tmp_path_factory.mktemp("rehearsal") / "work"
    # this environment's programs, as the script's `rewardsql` and `python`
    env = {**os.environ, TIMEOUT_VAR: "420",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    result = subprocess.run(["bash", str(SCRIPT), str(work)], capture_output=True, text=True,
                            env=env, timeout=1500)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    banners = re.findall(r"^== (.+) \((\d+) s\)$", result.stdout, flags=re.M)
    print("\nrehearsal: " + ", ".join(f"{name.split(':')[0]} at {s} s" for name, s in banners),
          file=sys.stderr)
    return work, result.stdout


def test_the_stages_run_in_the_recipes_order(rehearsal: tuple[Path, str]) -> None:
    _, stdout = rehearsal
    banners = [name for name, _ in re.findall(r"^== (.+) \((\d+) s\)$", stdout, flags=re.M)]
    assert [b for b in banners if not any(b.startswith(s) for s in STAGES)] == []
    assert [next(s for s in STAGES if b.startswith(s)) for b in banners] == STAGES


def test_labels_come_from_the_sft_policy_on_the_prepared_data(
        rehearsal: tuple[Path, str]) -> None:
    import pandas as pd

    work, _ = rehearsal
    data = work / "data"
    splits = {s: pd.read_parquet(data / f"{s}.parquet") for s in ("train", "val")}
    questions = json.loads((work / "tiny" / "example" / "rl.json").read_text())
    assert sum(len(f) for f in splits.values()) == len(questions)  # data prepare kept them all
    for split, limit in (("train", 12), ("val", 4)):
        rows = read_jsonl(data / f"prm_{split}.jsonl")
        ids = [int(x["question_id"]) for x in splits[split]["extra_info"]][:limit]
        # two Ray workers wrote each (question, sample) once, the questions of that split
        assert sorted((r["question_id"], r["sample"]) for r in rows) == sorted(
            (q, s) for q in ids for s in range(4))
        assert {r["policy"] for r in rows} == {str(work / "checkpoints" / "cocte_model")}
        assert {r["settings"]["sampler"] for r in rows} == {"vllm"}
        for r in rows:  # first-error semantics: nothing after the first "-" is "+"
            assert len(r["labels"]) == len(r["steps"]) >= 1
            if "-" in r["labels"]:
                assert set(r["labels"][r["labels"].index("-"):]) == {"-"}


def test_the_prm_trains_on_the_labels_from_the_sft_model(rehearsal: tuple[Path, str]) -> None:
    work, _ = rehearsal
    prm = work / "checkpoints" / "prm_model"
    result = json.loads((prm / "prm_result.json").read_text())
    labelled = read_jsonl(work / "data" / "prm_train.jsonl")
    # every labelled answer, less those whose first step does not fit the PRM's max_length
    assert result["n_examples"] + result["dropped"] == len(labelled)
    steps = sum(len(r["labels"]) for r in labelled)
    positive = sum(r["labels"].count("+") for r in labelled)
    # steps past max_length are cut, and counted
    assert result["n_steps"] > 0 and result["n_steps"] + result["cut_steps"] == steps
    assert result["positive_steps"] <= positive
    assert result["evaluations"], result  # on the held-out labels
    config = json.loads((prm / "rm_config.json").read_text())
    assert config["model_name_or_path"] == str(work / "checkpoints" / "cocte_model")
    assert json.loads((prm / "prm_config.json").read_text())["step_tag"] == " и "


def test_verl_trains_the_sft_model_with_the_prm_and_exports_it(
        rehearsal: tuple[Path, str]) -> None:
    import yaml

    work, stdout = rehearsal
    out = work / "checkpoints" / "grpo_prm"
    resolved = yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert resolved["actor_rollout_ref"]["model"]["path"] == str(work / "checkpoints" /
                                                                 "cocte_model")
    manager = resolved["rewardsql"]["reward_manager"]
    assert manager["prm_path"] == str(work / "checkpoints" / "prm_model")
    assert resolved["reward"]["reward_manager"]["name"] == "sql_prm"
    assert resolved["algorithm"]["adv_estimator"] == "grpo_process_avg_unique"
    assert "the PRM is scored on verl's reward-model server" in stdout
    # verl's file logger: step 1 ran, rewarded by the PRM and the outcome, and moved the actor
    logged = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in logged] == [1]
    assert logged[0]["data"]["actor/grad_norm"] > 0
    for model, step_no in ((out / "hf_model", 1), (out / "hf_model_step_1", 1)):
        assert json.loads((model / "rewardsql_export.json").read_text())["step"] == step_no
        assert (model / "model.safetensors").is_file() and (model / "tokenizer.json").is_file()


def test_the_exported_model_is_reranked_and_scored(rehearsal: tuple[Path, str]) -> None:
    work, _ = rehearsal
    dev = json.loads((work / "tiny" / "example" / "dev.json").read_text())
    runs = work / "runs" / "dev"
    summary = json.loads((runs / "summary.json").read_text())
    assert summary["questions"] == len(dev) and summary["n"] == 4
    rows = read_jsonl(runs / "questions.jsonl")
    assert len(rows) == len(dev)
    assert all(len(r["candidates"]) <= 4 for r in rows)
    score = json.loads((runs / "score.json").read_text())
    # sql score re-executes rerank's picks against the gold: the same accuracy
    assert score["total"] == len(dev)
    assert score["correct"] == sum(1 for r in rows if r["correct"]["prm_min"])
    assert score["accuracy"] == pytest.approx(summary["accuracy"]["prm_min"])
