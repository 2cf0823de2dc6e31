"""The PRM on the teacher's near-misses (``rewardsql.demo.near_miss``): each near-miss is found
where the teacher planted it and never in gold SQL; the report on a hand-written best-of-N file,
with the untrained tiny model as the PRM (any causal LM has the form of one)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from _tiny_helpers import quick_example, tiny_model
from rewardsql.demo.near_miss import TEACHER_PER_KIND, near_miss_report
from rewardsql.demo.tiny import TinyExample
from rewardsql.demo.tiny.teacher import NEAR_MISSES
from rewardsql_sql_reward.rewards.cocte import split_steps
from rewardsql_sql_reward.verifier.extract import extract_sql


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> TinyExample:
    return quick_example(tmp_path_factory)


def _split(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_each_near_miss_is_found_at_the_step_the_teacher_changed(example: TinyExample) -> None:
    found: Counter[str] = Counter()
    for q in _split(example.train_json):
        miss = NEAR_MISSES.get(q["template"])
        if miss is None or q["teacher_error"] is None:
            continue
        taught, gold = split_steps(q["demonstration"]), split_steps(q["query"])
        assert len(taught) == len(gold)
        changed = [k for k, (a, b) in enumerate(zip(taught, gold, strict=True)) if a != b]
        assert len(changed) == 1 and miss.step(taught) == changed[0], q["demonstration"]
        found[q["template"]] += 1
    assert set(found) == set(NEAR_MISSES)
    # no gold SQL of a planted template, in any split, carries its near-miss (clean
    # demonstrations are gold: tests/demo/test_tiny_example.py)
    golds: Counter[str] = Counter()
    for path in (example.train_json, example.rl_json, example.dev_json):
        for q in _split(path):
            miss = NEAR_MISSES.get(q["template"])
            if miss is not None:
                assert miss.step(split_steps(q["query"])) is None, q["query"]
                golds[q["template"]] += 1
    assert set(golds) == set(NEAR_MISSES)


@pytest.mark.parametrize(("template", "sql", "step"), [
    ("group_having", "WITH counts AS (SELECT city FROM c GROUP BY city HAVING COUNT( * )>4)", 0),
    ("group_having", "WITH counts AS (SELECT city FROM c GROUP BY city HAVING COUNT(*) >= 4)",
     None),
    ("top_total", "WITH totals AS (SELECT 1)\nSELECT x FROM totals ORDER BY totals.total LIMIT 1",
     1),
    ("top_total", "WITH totals AS (SELECT 1)\nSELECT x FROM totals ORDER BY  totals.total  DESC",
     None),
    ("having_children", "WITH counts AS (SELECT a, COUNT( DISTINCT a) AS n FROM t GROUP BY a)", 0),
    ("having_children", "WITH counts AS (SELECT a, COUNT(*) AS n FROM t GROUP BY a)", None),
])
def test_a_samples_spelling_of_the_near_miss_is_found(template: str, sql: str,
                                                      step: int | None) -> None:
    assert NEAR_MISSES[template].step(sql.split("\n")) == step


def _labels_file(example: TinyExample, path: Path) -> Path:
    """``rm label``-shaped lines for one rl question of each planted template (and one of
    another template): each answer's steps and "+"/"-" labels, as the report reads them."""
    lines = []
    rl = _split(example.rl_json)
    other = next(q for q in rl if q["template"] not in NEAR_MISSES)
    lines.append({"question_id": other["question_id"], "steps": split_steps(other["query"]),
                  "labels": ["+"] * len(split_steps(other["query"]))})
    for miss in NEAR_MISSES.values():
        q = next(q for q in rl if q["template"] == miss.template)
        gold, wrong = split_steps(q["query"]), split_steps(miss.apply(q["query"]))
        at = miss.step(wrong)
        assert at is not None

        def marks(at_step: str, n: int = len(gold), at: int = at) -> list[str]:
            return ["+" if k < at else at_step for k in range(n)]

        for steps, labels in ((wrong, marks("-")), (wrong, marks("+")), (wrong, marks("-")[:at]),
                              (gold, marks("+")), (gold, ["-"] * len(gold))):
            lines.append({"question_id": q["question_id"], "steps": steps, "labels": labels})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def _scores(n: int, at: int, value: float) -> list[float]:
    return [value if k == at else 0.9 for k in range(n)]


def test_the_report_counts_what_the_prm_flagged(example: TinyExample, tmp_path: Path,
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    dev = _split(example.dev_json)
    lines = [json.dumps({"question_id": q["question_id"], "gold": q["query"],
                         "candidates": [{"sql": "SELECT 1", "steps": 1, "step_scores": [0.1]}]})
             for q in dev if q["template"] not in NEAR_MISSES][:1]  # not planted: not counted
    for template, miss in NEAR_MISSES.items():
        q = next(q for q in dev if q["template"] == template)
        gold, wrong = q["query"], miss.apply(q["query"])
        n = len(split_steps(gold))
        at = miss.step(split_steps(wrong))
        assert at is not None
        # rerank stores the extracted SQL; a sample written with step tags is one step a line
        candidates = [
            {"sql": extract_sql(wrong), "steps": n, "step_scores": _scores(n, at, 0.2)},
            {"sql": "\n".join(split_steps(wrong)), "steps": n, "step_scores": _scores(n, at, 0.7)},
            {"sql": extract_sql(wrong), "steps": n, "step_scores": [0.9] * at},  # cut: unscored
            {"sql": extract_sql(gold), "steps": n, "step_scores": _scores(n, at, 0.8)},
            {"sql": extract_sql(gold), "steps": n, "step_scores": _scores(n, at, 0.3)},
            {"sql": extract_sql(gold), "steps": n + 3, "step_scores": [0.5] * n},  # unaligned
            {"sql": "SELECT 1", "steps": 1, "step_scores": [0.5]},  # neither form: not counted
        ]
        lines.append(json.dumps({"question_id": q["question_id"], "gold": gold,
                                 "candidates": candidates}))
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(lines) + "\n\n", encoding="utf-8")

    prm = tiny_model(tmp_path_factory)
    labels = _labels_file(example, tmp_path / "labels_train.jsonl")
    report = near_miss_report(example, prm, questions, device="cpu", labels_jsonl=labels)
    json.dumps(report)  # the report's own JSON
    assert set(report) == set(NEAR_MISSES)
    taught = Counter((q["template"], q["teacher_error"] is not None)
                     for q in _split(example.train_json))
    for template, value in report.items():
        assert value["kind"] == NEAR_MISSES[template].kind
        assert value["policy"] == {
            "questions": 1, "candidates": 7, "unaligned": 1,
            "near_miss": {"n": 2, "flagged": 0.5, "mean_score": pytest.approx(0.45),
                          "unscored": 1},
            "right_step": {"n": 2, "passed": 0.5, "mean_score": pytest.approx(0.55),
                           "unscored": 0}}
        # labels: near-miss "-" and "+", cut short (unscored); right step "+", and "-" after
        # an earlier error; answers of unplanted questions not counted
        assert value["labels"] == {
            "answers": 5,
            "near_miss": {"n": 2, "flagged": 0.5, "mean_score": 0.5, "unscored": 1},
            "right_step": {"n": 2, "passed": 0.5, "mean_score": 0.5, "unscored": 0}}
        teacher = value["teacher"]
        assert teacher["per_kind"] == TEACHER_PER_KIND
        for part, wrong, key in (("near_miss", True, "flagged"), ("clean", False, "passed")):
            steps = teacher[part]
            assert steps["n"] + steps["unscored"] == min(TEACHER_PER_KIND,
                                                         taught[template, wrong]) > 0
            assert steps["n"] > 0 and 0.0 <= steps[key] <= 1.0
            assert 0.0 < steps["mean_score"] < 1.0
