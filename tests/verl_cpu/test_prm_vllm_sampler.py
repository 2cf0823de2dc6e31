"""``rm label`` and ``rerank`` sampling with vLLM (``--sampler vllm``) on vLLM's CPU build: the
tiny model (untrained weights, so its answers fail at the first step) as policy and as PRM.

One engine for the module: the fixture starts it through ``open_sampler`` with the options the
commands are given below, and the commands, run in this process, find it in the process's
engine cache. Labels go through the same checks as transformers' (each line's form; a failing
step and every later one "-" with no rollouts; nothing after the first "-" is "+"); a rerun
with the same seed writes the same file. The rollouts of step prefixes are checked on answers
whose steps execute (the gold answers, one step made wrong: a stand-in for the policy's first
round only): each search round goes to the engine in one call, and its prefix cache serves
them.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from _tiny_helpers import quick_example, read_jsonl, tiny_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vLLM's CPU build is not installed (nox -s verl_cpu)")

#: The engine, as options of open_sampler and as flags of the commands (the same engine).
OPTIONS = {"dtype": "float32", "enforce_eager": True, "disable_log_stats": False}
FLAGS = ["--sampler", "vllm", "--dtype", "float32", "--vllm-option", "enforce_eager=true",
         "--vllm-option", "disable_log_stats=false"]
LABEL_KEYS = {"question_id", "sample", "db_id", "prompt", "response", "steps", "annotated_steps",
              "text", "labels", "soft_labels", "counts", "first_error", "outcome", "rollouts",
              "policy", "settings"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from rewardsql_sql_reward.prm.policy import open_sampler
    from rewardsql_sql_reward.prm.vllm_policy import close_engines

    example = quick_example(tmp_path_factory)
    model = tiny_model(tmp_path_factory, "tiny")  # head size 32: vLLM's CPU kernels take it
    prm = tmp_path_factory.mktemp("prm") / "prm"
    shutil.copytree(model, prm)  # any causal LM has the form of a PRM
    (prm / "prm_config.json").write_text(json.dumps(
        {"step_tag": " и ", "candidate_tokens": ["+", "-"]}))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's default is larger
        policy = open_sampler("vllm", model, max_new_tokens=24, engine_options=OPTIONS)
        yield example, model, prm, policy
    close_engines()


def _cli(*args: str):
    from rewardsql.cli import build_app
    from typer.testing import CliRunner

    return CliRunner().invoke(build_app(), list(args))


def _label(example, model, output: Path, *args: str):
    return _cli("rm", "label", "--policy", str(model), "--questions", str(example.dev_parquet),
                "--db-root", str(example.db_root), "--output", str(output), "--n", "4",
                "--m", "2", "--max-new-tokens", "24", "--limit", "6", *FLAGS, *args)


def test_labels_from_vllm_pass_the_label_checks_and_a_rerun_repeats_them(tiny, tmp_path):
    from rewardsql_sql_reward.rewards.annotate import build_prm_inputs

    example, model, _, _ = tiny
    first = _label(example, model, tmp_path / "first.jsonl")
    assert first.exit_code == 0, first.output
    assert "sampler: vllm (asked for)" in first.output
    assert "responses: 24 (0 from an earlier run, 24 now)" in first.output
    rows = read_jsonl(tmp_path / "first.jsonl")
    assert len({(r["question_id"], r["sample"]) for r in rows}) == 24
    inputs = build_prm_inputs([(r["prompt"], r["response"], r["db_id"]) for r in rows],
                              example.db_root)
    failing = 0
    for row, item in zip(rows, inputs, strict=True):
        assert set(row) == LABEL_KEYS
        assert row["policy"] == str(model)
        assert row["settings"]["sampler"] == "vllm" and row["settings"]["m"] == 2
        k_steps = len(row["steps"])
        assert row["steps"] == item.steps and k_steps >= 1
        assert len(row["labels"]) == len(row["soft_labels"]) == len(row["counts"]) == k_steps
        assert row["text"] == row["prompt"] + "".join(s + " и " for s in row["annotated_steps"])
        assert set(row["labels"]) <= {"+", "-"}
        assert (row["labels"][-1] == "+") == row["outcome"]
        # first-error semantics: nothing after the first "-" is "+"
        first = row["labels"].index("-") if "-" in row["labels"] else None
        assert row["first_error"] == first
        if first is not None:
            assert row["labels"][first:] == ["-"] * (k_steps - first)
        # a step that fails to execute, and every later one: "-", soft 0, no rollouts
        if True in item.failed:
            failing += 1
            fail = item.failed.index(True)
            assert first is not None and first <= fail
            for k in range(fail, k_steps):
                assert row["labels"][k] == "-" and row["soft_labels"][k] == 0.0
                assert row["counts"][k] == [0, 0]
        for (correct, total), soft in zip(row["counts"], row["soft_labels"], strict=True):
            assert total in (0, 2 + 1) and 0 <= correct <= total
            if total:
                assert soft == pytest.approx(correct / total)
    assert failing > 0  # the check above ran

    again = _label(example, model, tmp_path / "again.jsonl")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again.jsonl").read_text() == (tmp_path / "first.jsonl").read_text()


class GoldFirst:
    """The policy with a stand-in for its first round: each question's answers are its gold
    answer and the gold answer with its last step wrong (both execute, so their prefixes are
    probed); every other request (the rollouts) goes to the engine, one call per round."""

    def __init__(self, policy, questions) -> None:
        self.policy, self.name, self.kind = policy, policy.name, policy.kind
        self.answers = {}
        for q in questions:
            steps = q.gold.rstrip(";").split("\n\n")
            wrong = "\n\n".join([*steps[:-1], "SELECT 0"])
            self.answers[policy.prompt_text(q.messages)] = [q.gold, wrong, wrong, q.gold]
        self.engine_calls = []

    def prompt_text(self, messages):
        return self.policy.prompt_text(messages)

    def generate_many(self, requests):
        rollouts = [r for r in requests if r.text not in self.answers]
        if rollouts:
            self.engine_calls.append(rollouts)
        done = iter(self.policy.generate_many(rollouts))
        return [self.answers[r.text][:r.n] if r.text in self.answers else next(done)
                for r in requests]


def test_each_rounds_rollouts_go_to_vllm_in_one_call_and_hit_its_prefix_cache(tiny, tmp_path):
    from rewardsql_sql_reward.prm.label import LabelSettings, run_label
    from rewardsql_sql_reward.prm.policy import load_questions

    example, _, _, policy = tiny
    questions = [q for q in load_questions(example.dev_parquet, example.db_root)
                 if q.gold.count("\n\n") >= 2][:6]  # 3 steps or more: 2 prefixes to probe
    assert len(questions) == 6
    sampler = GoldFirst(policy, questions)
    settings = LabelSettings(n=4, m=4, max_new_tokens=24, sampler="vllm")
    before = policy.prefix_cache()
    report = run_label(sampler, questions, example.db_root, tmp_path / "labels.jsonl",
                       settings, progress=False)
    queries, hits = (a - b for a, b in zip(policy.prefix_cache(), before, strict=True))
    rows = read_jsonl(tmp_path / "labels.jsonl")
    assert report.written == len(rows) == 24
    # binary search: a round probes the middle prefix of every wrong answer of every question
    assert 1 <= len(sampler.engine_calls) <= 2
    prompts = list(sampler.answers)
    first_round = sampler.engine_calls[0]
    assert {next(p for p in prompts if r.text.startswith(p)) for r in first_round} == set(prompts)
    assert all(r.n == settings.m for call in sampler.engine_calls for r in call)
    # the two wrong answers of a question share their prefixes: sampled once
    assert all(len({r.text for r in call}) == len(call) for call in sampler.engine_calls)
    sampled = sum(len(call) for call in sampler.engine_calls) * settings.m
    assert report.rollouts == sum(r["rollouts"] for r in rows) == sampled
    for row in rows:
        if row["outcome"]:  # the gold answer completes every prefix itself
            assert row["labels"] == ["+"] * len(row["steps"]) and row["rollouts"] == 0
        else:
            assert [c[1] for c in row["counts"] if c[1]] and all(
                c[1] in (0, settings.m + 1) for c in row["counts"])
    # the m samples of a prefix share its prompt and prefix, and the second round's prefixes
    # the first round's prompt: computed once (whole 16-token blocks are cached; 0.67 here)
    assert hits / queries > 0.5, (hits, queries)


def test_the_samplers_read_the_settings_alike(tiny):
    from rewardsql_sql_reward.prm.policy import Policy, Request, load_questions
    from rewardsql_sql_reward.prm.vllm_policy import VLLMPolicy

    example, model, _, policy = tiny
    prompts = [policy.prompt_text(q.messages)
               for q in load_questions(example.dev_parquet, example.db_root)[:4]]
    # a batch of mixed requests gives what each request gives alone, in order
    mixed = [Request(prompts[0], 3, 11), Request(prompts[1], 2, 0, greedy=True),
             Request(prompts[0] + "WITH", 2, 7), Request(prompts[1], 2, 11)]
    together = policy.generate_many(mixed)
    assert [len(t) for t in together] == [3, 2, 2, 2]
    assert together == [policy.generate(r.text, r.n, seed=r.seed, greedy=r.greedy)
                        for r in mixed]
    assert together[1][0] == together[1][1]  # greedy
    assert policy.generate(prompts[0], 3, seed=12) != together[0]  # another seed
    # the same prompt ids, stop tokens, token budget and decoding: greedy answers are equal;
    # a top-p that keeps one token is greedy on both
    local = Policy(model, device="cpu", max_new_tokens=16)
    engine = VLLMPolicy(model, max_new_tokens=16, engine_options=OPTIONS)
    greedy = engine.generate_many([Request(p, 1, 0, greedy=True) for p in prompts])
    assert greedy == local.generate_many([Request(p, 1, 0, greedy=True) for p in prompts])
    local.top_p = engine.top_p = 1e-6
    assert engine.generate_many([Request(p, 2, 5) for p in prompts]) == [g * 2 for g in greedy]
    assert local.generate_many([Request(p, 2, 5) for p in prompts]) == [g * 2 for g in greedy]
    assert engine.llm is policy.llm  # one engine per model and options


def test_rerank_with_vllm_feeds_sql_score(tiny, tmp_path):
    example, model, prm, _ = tiny
    questions = tmp_path / "questions.json"
    questions.write_text(json.dumps(json.loads(example.dev_json.read_text())[:4]))
    result = _cli("rerank", "--prm", str(prm), "--policy", str(model), "--questions",
                  str(questions), "--db-root", str(example.db_root), "--output-dir",
                  str(tmp_path / "bon"), "--sample-values", str(example.sample_values),
                  "--n", "4", "--max-new-tokens", "24", "--device", "cpu", *FLAGS)
    assert result.exit_code == 0, result.output
    assert "4 questions, N = 4" in result.output
    records = read_jsonl(tmp_path / "bon" / "questions.jsonl")
    assert [len(r["candidates"]) for r in records] == [4] * 4
    summary = json.loads((tmp_path / "bon" / "summary.json").read_text())
    for method in ("prm_min", "greedy", "majority_vote"):
        for kind in ("spider", "bird"):
            scored = _cli("sql", "score", "--db-root", str(example.db_root), "--gold",
                          str(questions), "--pred", summary["files"][method][kind], "--json")
            assert scored.exit_code == 0, scored.output
            assert json.loads(scored.output)["accuracy"] == summary["accuracy"][method]
