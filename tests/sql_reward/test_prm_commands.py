"""``rewardsql rm label`` and ``rewardsql rerank`` on the tiny example with the tiny model as
policy and as an (untrained) PRM: resume after a kill, best-of-1 is greedy, candidates files
(untagged, all failing), prediction files that ``rewardsql sql score`` reads."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _tiny_helpers import quick_example, read_jsonl, run_cli, tiny_model

LABEL_ARGS = ["--n", "2", "--m", "2", "--max-new-tokens", "16", "--limit", "5",
              "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    example = quick_example(tmp_path_factory)
    model = tiny_model(tmp_path_factory)
    prm = tmp_path_factory.mktemp("prm") / "prm"
    shutil.copytree(model, prm)  # any causal LM has the form of a PRM
    (prm / "prm_config.json").write_text(json.dumps(
        {"step_tag": " и ", "candidate_tokens": ["+", "-"], "execution_results": True,
         "result_rows": 50, "result_chars": 500}))
    return example, model, prm


def _label(example, model, output: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "rewardsql", "rm", "label", "--policy", str(model),
            "--questions", str(example.dev_parquet), "--db-root", str(example.db_root),
            "--output", str(output), *LABEL_ARGS, *args]


def test_rm_label_resumes_after_a_kill(tiny, tmp_path):
    example, model, _ = tiny
    whole = tmp_path / "whole.jsonl"
    # all 5 questions in flight at once here, one at a time below: the same file
    done = subprocess.run(_label(example, model, whole), capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "responses: 10 (0 from an earlier run, 10 now)" in done.stdout
    assert "step labels:" in done.stdout
    if not torch.cuda.is_available():  # auto: vLLM only with a GPU
        assert "sampler: transformers (auto: no GPU)" in done.stdout
    expected = whole.read_text(encoding="utf-8")

    killed = tmp_path / "killed.jsonl"
    process = subprocess.Popen(_label(example, model, killed, "--questions-in-flight", "1"),
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if killed.exists() and killed.read_text(encoding="utf-8").count("\n") >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    lines = killed.read_text(encoding="utf-8").count("\n")
    assert 2 <= lines < 10, "the kill should land mid-run"
    with open(killed, "a", encoding="utf-8") as handle:  # a line torn by the kill
        handle.write('{"question_id": 480, "sample": 1, "prom')
    resumed = run_cli("rm", "label", "--policy", str(model), "--questions",
                      str(example.dev_parquet), "--db-root", str(example.db_root), "--output",
                      str(killed), *LABEL_ARGS, "--questions-in-flight", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert f"({lines} from an earlier run, {10 - lines} now)" in resumed.stdout
    assert killed.read_text(encoding="utf-8") == expected

    rows = read_jsonl(whole)
    assert len({(r["question_id"], r["sample"]) for r in rows}) == 10
    for row in rows:
        assert len(row["labels"]) == len(row["steps"]) == len(row["soft_labels"])
        assert row["text"] == row["prompt"] + "".join(s + " и " for s in row["annotated_steps"])
        assert row["settings"]["n"] == 2 and row["policy"] == str(model)
        assert row["settings"]["sampler"] == "transformers"
    other = run_cli("rm", "label", "--policy", str(model), "--questions",
                    str(example.dev_parquet), "--db-root", str(example.db_root), "--output",
                    str(whole), *LABEL_ARGS[:-4], "--m", "3", "--limit", "5")
    assert other.returncode == 2 and "made with another settings" in other.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--sampler", "vllm"], "error: --sampler vllm: vLLM is not installed here: pip install vllm "
                            "(on a GPU machine), or pip install 'rewardsql[verl-cpu]' for "
                            "vLLM's CPU build"),
    (["--sampler", "nope"], "error: --sampler: 'nope': choose one of auto, vllm, transformers"),
    (["--sampler", "transformers", "--dtype", "float32", "--vllm-option", "enforce_eager=true"],
     "error: --sampler transformers: vLLM engine options (dtype, enforce_eager) need --sampler "
     "vllm"),
    (["--vllm-option", "enforce_eager"], "error: --vllm-option: 'enforce_eager': expected "
                                         "KEY=VALUE"),
    (["--vllm-option", "dtype=float32", "--dtype", "float16"],
     "error: --vllm-option: dtype is given twice (--dtype too)"),
    (["--top-p", "0"], "error: --top-p 0.0: must be in (0, 1]"),
])
def test_sampler_options_are_checked_before_any_model_loads(tiny, tmp_path, args, message):
    example, model, _ = tiny
    if args[:2] == ["--sampler", "vllm"] and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    result = run_cli("rm", "label", "--policy", str(model), "--questions",
                     str(example.dev_parquet), "--db-root", str(example.db_root), "--output",
                     str(tmp_path / "out.jsonl"), *args)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "out.jsonl").exists()


def _rerank(example, prm, out: Path, *args: str):
    return run_cli("rerank", "--prm", str(prm), "--questions", str(example.dev_json),
                   "--db-root", str(example.db_root), "--output-dir", str(out),
                   "--sample-values", str(example.sample_values), "--device", "cpu", *args)


def test_best_of_one_is_greedy(tiny, tmp_path):
    example, model, prm = tiny
    result = _rerank(example, prm, tmp_path / "n1", "--policy", str(model), "--n", "1",
                     "--limit", "4", "--max-new-tokens", "24")
    assert result.returncode == 0, result.stderr
    greedy = (tmp_path / "n1" / "pred_greedy.sql").read_text()
    for name in ("prm_min", "prm_product", "prm_last_step", "prm_average", "majority_vote",
                 "prm_vote"):
        assert (tmp_path / "n1" / f"pred_{name}.sql").read_text() == greedy
    summary = json.loads((tmp_path / "n1" / "summary.json").read_text())
    assert len(set(summary["accuracy"].values())) == 1


def test_rerank_a_candidates_file(tiny, tmp_path):
    example, _, prm = tiny
    questions = json.loads(example.dev_json.read_text())[:3]
    gold = [q["query"] for q in questions]
    candidates = [
        # tagged and untagged candidates, a failing one, the gold twice (a majority)
        {"question_id": questions[0]["question_id"],
         "candidates": [gold[0].replace("\n\n", " и "), "SELECT nope FROM nowhere",
                        gold[0], "SELECT 1"]},
        # every candidate fails
        {"question_id": questions[1]["question_id"],
         "candidates": ["SELECT nope FROM nowhere", "SELEC 2"], "greedy": "SELEC 2"},
        # one candidate, no step tag
        {"question_id": questions[2]["question_id"], "candidates": ["SELECT 1"]},
    ]
    (tmp_path / "questions.json").write_text(json.dumps(questions))
    (tmp_path / "cands.jsonl").write_text("".join(json.dumps(c) + "\n" for c in candidates))
    out = tmp_path / "out"
    result = run_cli("rerank", "--prm", str(prm), "--questions", str(tmp_path / "questions.json"),
                     "--db-root", str(example.db_root), "--output-dir", str(out),
                     "--candidates", str(tmp_path / "cands.jsonl"), "--sample-values", "0")
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out / "questions.jsonl")
    first, failing, single = records
    assert first["picks"]["majority_vote"] in (0, 2) and first["correct"]["majority_vote"]
    assert not first["candidates"][1]["executes"]
    assert all(p != 1 for name, p in first["picks"].items() if name != "greedy")
    assert first["correct"]["pass@N"] and first["candidates"][0]["steps"] == 2
    best = max((0, 2, 3), key=lambda i: (first["candidates"][i]["min"], -i))
    assert first["picks"]["prm_min"] == best
    assert failing["all_failed"] and not failing["correct"]["pass@N"]
    assert single["candidates"][0]["steps"] == len(single["candidates"][0]["step_scores"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"]["pass@4"] == pytest.approx(1 / 3)
    assert "majority_vote" in result.stdout
    # the prediction files score the same with `rewardsql sql score`, in both formats
    for kind in ("spider", "bird"):
        scored = run_cli("sql", "score", "--db-root", str(example.db_root), "--gold",
                         str(tmp_path / "questions.json"), "--pred",
                         summary["files"]["majority_vote"][kind], "--json")
        assert scored.returncode == 0, scored.stderr
        assert json.loads(scored.stdout)["accuracy"] == summary["accuracy"]["majority_vote"]


def test_rerank_scores_its_own_output_and_the_questions_a_file_covers(tiny, tmp_path):
    example, _, prm = tiny
    questions = json.loads(example.dev_json.read_text())[:3]
    (tmp_path / "questions.json").write_text(json.dumps(questions))
    # candidates for 2 of the 3 questions
    (tmp_path / "cands.jsonl").write_text("".join(json.dumps(
        {"question_id": q["question_id"], "candidates": [q["query"], "SELECT 1"]}) + "\n"
        for q in questions[:2]))

    def rerank(candidates, out):
        return run_cli("rerank", "--prm", str(prm), "--questions",
                       str(tmp_path / "questions.json"), "--db-root", str(example.db_root),
                       "--output-dir", str(out), "--candidates", str(candidates),
                       "--sample-values", "0")

    first = rerank(tmp_path / "cands.jsonl", tmp_path / "first")
    assert first.returncode == 0, first.stderr
    assert "2 questions (the candidates cover 2 of 3), N = 2" in first.stdout
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert (summary["questions"], summary["questions_asked"]) == (2, 3)
    for files in summary["files"].values():  # predictions for exactly the covered questions
        assert len(Path(files["spider"]).read_text().splitlines()) == 2
        assert len(json.loads(Path(files["bird"]).read_text())) == 2
    # rerank's own output (candidates as objects with "sql") is a candidates file
    again = rerank(tmp_path / "first" / "questions.jsonl", tmp_path / "again")
    assert again.returncode == 0, again.stderr
    before = read_jsonl(tmp_path / "first" / "questions.jsonl")
    after = read_jsonl(tmp_path / "again" / "questions.jsonl")
    assert [r["question_id"] for r in after] == [r["question_id"] for r in before]
    for b, a in zip(before, after, strict=True):
        assert [c["sql"] for c in a["candidates"]] == [c["sql"] for c in b["candidates"]]
        for ca, cb in zip(a["candidates"], b["candidates"], strict=True):
            # the same steps, scored again (in batches of another make-up: float32 rounding)
            assert ca["step_scores"] == pytest.approx(cb["step_scores"], abs=1e-3)
        assert a["greedy"]["sql"] == b["greedy"]["sql"]
    # a file that covers none of the questions is a one-line error
    (tmp_path / "none.jsonl").write_text(json.dumps({"question_id": -5, "candidates": ["x"]}))
    none = rerank(tmp_path / "none.jsonl", tmp_path / "none")
    assert none.returncode == 2
    assert none.stderr.strip() == "error: --candidates: covers none of the 3 questions"


def test_rerank_needs_one_source_of_candidates(tiny, tmp_path):
    example, _, prm = tiny
    result = _rerank(example, prm, tmp_path / "x")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: give either --policy (generate candidates) or "
                                     "--candidates")
