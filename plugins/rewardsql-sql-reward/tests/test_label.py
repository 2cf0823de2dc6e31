"""Step labels by execution against a loop oracle written from spec/prm.md, on hand-made CoCTE
responses and the real verifier; completions come from a deterministic stand-in for the policy
(the labelling logic needs no model)."""

from __future__ import annotations

import json

import pytest
from rewardsql.errors import ConfigError
from rewardsql_sql_reward import STEP_TAG, SQLVerifier, extract_sql
from rewardsql_sql_reward.prm.label import PrefixValues, label_response
from rewardsql_sql_reward.rewards.annotate import Annotation, build_prm_inputs
from rewardsql_sql_reward.verifier.extract import CTE_DEF

GOLD = "SELECT name FROM singer WHERE country = 'US' AND age > 30"
US = "WITH us AS (SELECT * FROM singer WHERE country = 'US')"
UK = "WITH us AS (SELECT * FROM singer WHERE country = 'UK')"
RESPONSES = {
    "correct chain": [US, "older AS (SELECT * FROM us WHERE age > 30)",
                      "SELECT name FROM older"],
    "wrong middle step": [US, "older AS (SELECT * FROM us WHERE age > 40)",
                          "SELECT name FROM older"],
    "failing step": [US, "older AS (SELECT * FROM us WHERE agee > 30)",
                     "SELECT name FROM older"],
    "wrong first step": [UK, "older AS (SELECT * FROM us WHERE age > 30)",
                         "SELECT name FROM older"],
    "wrong third of five": [US, "a AS (SELECT * FROM us WHERE age > 0)",
                            "b AS (SELECT * FROM a WHERE age > 40)", "c AS (SELECT * FROM b)",
                            "SELECT name FROM c"],
    "wrong last step": [US, "older AS (SELECT * FROM us WHERE age > 30)",
                        "SELECT name FROM us"],
    "no tags, correct": "SELECT name FROM singer WHERE country = 'US' AND age > 30",
    "no tags, wrong": "SELECT name FROM singer WHERE country = 'US'",
}


def _tagged(steps) -> str:
    return "".join(step + STEP_TAG for step in steps)


def complete(prefix, m):
    """Two continuations of the prefix's last CTE, alternated: one right when the CTE holds the
    US singers (filtered or not), one right only when it holds exactly the answer rows."""
    name = CTE_DEF.match(prefix[-1]).group(1)
    rests = [f"SELECT name FROM {name} WHERE age > 30", f"SELECT name FROM {name}"]
    return [_tagged([*prefix, rests[i % 2]]) for i in range(m)]


def oracle(steps, failed, outcome, judge, m):
    """The spec, step by step: every prefix is sampled (Math-Shepherd, plus the response's own
    continuation), a failing step and every step after the first "-" are "-"."""
    labels, soft = [], []
    for k in range(len(steps)):
        if "-" in labels or failed[k]:
            labels.append("-")
            soft.append(0.0)
        elif k == len(steps) - 1:
            labels.append("+" if outcome else "-")
            soft.append(1.0 if outcome else 0.0)
        else:
            correct = sum(judge(complete(steps[:k + 1], m))) + outcome
            labels.append("+" if correct else "-")
            soft.append(correct / (m + 1) if correct else 0.0)
    return labels, soft


@pytest.fixture
def judge(verifier: SQLVerifier):
    def run(responses):
        verdicts = verifier.verify_batch([("concert", extract_sql(r), GOLD) for r in responses])
        return [v.correct for v in verdicts]
    return run


@pytest.mark.parametrize("name", sorted(RESPONSES))
@pytest.mark.parametrize("m", [1, 4])
def test_labels_agree_with_the_loop_oracle(name, m, verifier, judge):
    response = RESPONSES[name]
    text = response if isinstance(response, str) else _tagged(response)
    prm_input = build_prm_inputs([("", text, "concert")], verifier)[0]
    steps, failed = prm_input.steps, prm_input.failed
    outcome = judge([text])[0]
    expected, expected_soft = oracle(steps, failed, outcome, judge, m)
    every = label_response(steps, failed, outcome, PrefixValues(complete, judge, m), "every")
    binary = label_response(steps, failed, outcome, PrefixValues(complete, judge, m), "binary")
    assert every.labels == binary.labels == expected
    assert every.soft == pytest.approx(expected_soft)
    assert every.first_error == (expected.index("-") if "-" in expected else None)
    assert binary.first_error == every.first_error
    assert all(s >= 0.5 for s, lab in zip(binary.soft, binary.labels, strict=True) if lab == "+"
               and m == 1)


def test_the_cases_cover_what_the_spec_names(verifier, judge):
    got = {}
    rollouts = {"binary": 0, "every": 0}
    for name, response in RESPONSES.items():
        text = response if isinstance(response, str) else _tagged(response)
        prm_input = build_prm_inputs([("", text, "concert")], verifier)[0]
        for search in rollouts:
            labels = label_response(prm_input.steps, prm_input.failed, judge([text])[0],
                                    PrefixValues(complete, judge, 2), search)
            rollouts[search] += labels.rollouts
        got[name] = labels.labels
    # an early error costs binary search more than a walk from the start; in total it is less
    assert rollouts["binary"] < rollouts["every"]
    assert got["correct chain"] == ["+", "+", "+"]
    assert got["wrong middle step"] == ["+", "-", "-"]
    assert got["failing step"] == ["+", "-", "-"]
    assert got["wrong first step"] == ["-", "-", "-"]
    assert got["wrong third of five"] == ["+", "+", "-", "-", "-"]
    assert got["wrong last step"] == ["+", "+", "-"]
    assert got["no tags, correct"] == ["+"] and got["no tags, wrong"] == ["-"]


def test_a_correct_response_needs_no_rollouts_and_prefixes_are_reused(judge):
    values = PrefixValues(complete, judge, 4)
    steps = RESPONSES["correct chain"]
    assert label_response(steps, [False] * 3, True, values).rollouts == 0
    wrong = RESPONSES["wrong middle step"]
    first = label_response(wrong, [False] * 3, False, values)
    # another sample of the question with the same first two steps
    again = label_response([*wrong[:2], "SELECT name FROM older"], [False] * 3, False, values)
    assert first.rollouts > 0 and again.rollouts == 0  # the same prefixes: sampled once


def test_annotation_builder(verifier):
    steps = RESPONSES["failing step"]
    annotated, plain = (build_prm_inputs([("Q:", steps, "concert")], verifier, Annotation(e))[0]
                        for e in (True, False))
    assert annotated.failed == plain.failed == [False, True, True]
    assert annotated.annotated_steps[0] == f"{US}<result>{{(3, 'Cy', 33, 'US'): 1, " \
                                           "(4, 'Di', 29, 'US'): 1}</result>"
    assert "no such column: agee" in annotated.annotated_steps[1]
    assert plain.annotated_steps == steps and plain.text == "Q:" + _tagged(steps)
    unexecuted = build_prm_inputs([("Q:", _tagged(steps), "concert")], None)[0]
    assert unexecuted.failed == [False] * 3 and unexecuted.steps == steps


class StandIn:
    """A stand-in for the policy in ``run_label``: each question's responses are the cases
    above (rotated), a prefix's completions are :func:`complete`'s; every ``generate_many``
    call is recorded."""

    name = "stand-in"
    kind = "transformers"

    def __init__(self, prompts):
        self.answers = {p: [_tagged(r) if isinstance(r, list) else r for r in
                            [*CASES[i:], *CASES[:i]]] for i, p in enumerate(prompts)}
        self.calls = []

    def prompt_text(self, messages):
        return messages[0]["content"]

    def generate_many(self, requests):
        self.calls.append(list(requests))
        out = []
        for text, n, *_ in requests:
            prompt = next(p for p in self.answers if text.startswith(p))
            head = text[len(prompt):]
            if not head:
                out.append(self.answers[prompt][:n])
            else:
                prefix = [s for s in head.split(STEP_TAG) if s]
                out.append([c[len(head):] for c in complete(prefix, n)])
        return out


CASES = [RESPONSES[name] for name in sorted(RESPONSES)]


@pytest.mark.parametrize("search", ["binary", "every"])
def test_run_label_samples_each_round_in_one_call(search, db_root, verifier, judge, tmp_path):
    from rewardsql_sql_reward.prm.label import LabelSettings, run_label
    from rewardsql_sql_reward.prm.policy import Question

    questions = [Question(i, i, "concert", [{"role": "user", "content": f"Q{i}:"}], GOLD)
                 for i in range(3)]
    settings = LabelSettings(n=len(CASES), m=2, search=search)
    files, calls = [], []
    for in_flight in (1, 3):
        policy = StandIn([q.messages[0]["content"] for q in questions])
        files.append(tmp_path / f"in_flight_{in_flight}.jsonl")
        run_label(policy, questions, db_root, files[-1], settings, progress=False,
                  in_flight=in_flight)
        calls.append(policy.calls)
    assert files[0].read_text() == files[1].read_text()
    one, together = calls
    # the same rounds, once per question or for all three questions in one call each
    assert len(together) >= 2 and len(one) == 3 * len(together)
    for call in together:
        assert {r.text.split(":")[0] for r in call} == {"Q0", "Q1", "Q2"}
        assert len({r.text for r in call}) == len(call)  # a prefix is sampled once
    assert [(r.text, r.n) for r in together[0]] == [(f"Q{i}:", len(CASES)) for i in range(3)]
    lines = [json.loads(line) for line in files[1].read_text().splitlines()]
    assert len(lines) == 3 * len(CASES)
    for question in range(3):
        mine = [line for line in lines if line["question_id"] == question]
        probes = sum(1 for call in together[1:]
                     for r in call if r.text.startswith(f"Q{question}:"))
        assert sum(line["rollouts"] for line in mine) == settings.m * probes
        values = PrefixValues(complete, judge, settings.m)  # one response after another
        for line in mine:
            prm_input = build_prm_inputs([("", line["response"], "concert")], verifier)[0]
            expected = label_response(prm_input.steps, prm_input.failed, line["outcome"],
                                      values, search)
            assert line["labels"] == expected.labels
            assert line["soft_labels"] == pytest.approx(expected.soft)
            assert line["counts"] == expected.counts


def test_a_file_written_before_top_p_and_sampler_were_recorded_resumes(db_root, tmp_path):
    from rewardsql_sql_reward.prm.label import LabelSettings, run_label
    from rewardsql_sql_reward.prm.policy import Question

    questions = [Question(i, i, "concert", [{"role": "user", "content": f"Q{i}:"}], GOLD)
                 for i in range(2)]
    settings = LabelSettings(n=len(CASES), m=2)
    whole = tmp_path / "whole.jsonl"
    run_label(StandIn(["Q0:", "Q1:"]), questions, db_root, whole, settings, progress=False)
    lines = whole.read_text().splitlines(keepends=True)
    old = []
    for line in lines[:5]:  # as an earlier release wrote them
        row = json.loads(line)
        del row["settings"]["top_p"], row["settings"]["sampler"]
        old.append(json.dumps(row, ensure_ascii=False) + "\n")
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_text("".join(old))
    report = run_label(StandIn(["Q0:", "Q1:"]), questions, db_root, earlier, settings,
                       progress=False)
    assert (report.kept, report.written) == (5, len(lines) - 5)
    assert earlier.read_text() == "".join(old + lines[5:])
    # another sampler's file is refused
    with pytest.raises(ConfigError, match="made with another settings"):
        run_label(StandIn(["Q0:", "Q1:"]), questions, db_root, earlier,
                  LabelSettings(n=len(CASES), m=2, sampler="vllm"), progress=False)
