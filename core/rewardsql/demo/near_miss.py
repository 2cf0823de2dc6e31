"""The PRM on the teacher's near-misses: does it flag the steps the demo knows are wrong?

The imperfect teacher (:mod:`rewardsql.demo.tiny.teacher`) knows which step of which
demonstration carries its near-miss, and :meth:`~rewardsql.demo.tiny.teacher.NearMiss.step` finds
that step in any SQL. :func:`near_miss_report` gives, per planted template, the PRM's accuracy on
that step (a score below :data:`THRESHOLD` flags it, the "-" side of the PRM's tag):

* ``teacher``: the train split's demonstrations, scored here as ``rewardsql rerank`` scores a
  candidate (the prompt in the PRM's chat template, each step annotated with its execution
  result, the PRM's own ``prm_config.json``): the share of near-miss steps flagged, and the share
  of the same step of clean demonstrations (the gold step) passed;
* ``policy``: the SFT policy's best-of-N samples on dev (``questions.jsonl`` of the best-of-N
  stage, its step scores as they are, nothing scored again): the share flagged of the samples
  that repeat the near-miss, and the share passed of the samples whose step there is the gold's.

* ``labels`` (when the PRM's training labels are given): what the automatic step labels, which
  the PRM learned from, say of the same steps in the policy's labelled answers: the share of
  near-miss steps labelled "-" (``flagged``) and of right-form steps labelled "+" (``passed``;
  "-" there means an earlier step was already wrong; ``mean_score``: the share of "+",
  ``unscored``: steps past the labelled ones). Labels that tell the two apart and a PRM
  that does not point at the PRM's training, not at the labels.

A step the PRM did not score (its input was cut at the PRM's ``max_length``, which drops whole
trailing steps) counts in ``unscored``, not in the share; so does a sample whose steps cannot be
matched with its scores (``unaligned``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rewardsql.demo.tiny.teacher import NEAR_MISSES, NearMiss

Split = Callable[[str], list[str]]  # CoCTE steps of SQL (the SQL plugin's split_steps)

#: Train demonstrations scored per planted template and kind (with its near-miss; clean): the
#: first ones of train.json, whose order is the generator's random draw, so the choice is
#: deterministic; enough for a share to mean something, few enough to take seconds.
TEACHER_PER_KIND = 40
#: A step score below this flags the step as wrong; at or above it passes it.
THRESHOLD = 0.5


def _share(scores: Iterable[float | None], *, flagged: bool) -> dict[str, Any]:
    """``n`` scored steps, the share the PRM got right (``flagged``: scored below THRESHOLD,
    else ``passed``: at or above it; None without any step), their mean score, and ``unscored``
    steps."""
    scores = list(scores)
    seen = [s for s in scores if s is not None]
    right = sum((s < THRESHOLD) == flagged for s in seen)
    return {"n": len(seen), "flagged" if flagged else "passed": right / len(seen) if seen else None,
            "mean_score": sum(seen) / len(seen) if seen else None,
            "unscored": len(scores) - len(seen)}


def _score_at(scores: Sequence[float], index: int) -> float | None:
    return float(scores[index]) if index < len(scores) else None


def _near_miss_index(miss: NearMiss, gold: str, split: Split) -> int:
    """The step of ``gold`` that the near-miss changes (where the teacher plants it)."""
    index = miss.step(split(miss.apply(gold)))
    if index is None:
        raise ValueError(f"{miss.template}: the detect pattern misses its own near-miss: {gold}")
    return index


def _same_step(a: str, b: str) -> bool:
    """Two steps alike but for spacing and the separator at their end (``rerank`` stores the
    extracted SQL, whose final semicolon is dropped and whose CTE commas are repaired)."""
    def norm(step: str) -> str:
        return " ".join(step.split()).rstrip(";,").rstrip()

    return norm(a) == norm(b)


def _candidate_steps(candidate: dict[str, Any], split: Split) -> list[str] | None:
    """A best-of-N candidate's steps as its ``step_scores`` count them, or None.

    ``rerank`` scored the sampled text but stores the extracted SQL (``sql``): steps separated by
    blank lines stay so, but steps the sample separated with step tags are joined one per line.
    The step count ``rerank`` saw (``steps``) says which splitting holds.
    """
    sql = candidate["sql"]
    count = candidate.get("steps", len(candidate["step_scores"]))
    steps = split(sql)
    if len(steps) == count:
        return steps
    lines = [line.strip() for line in sql.split("\n") if line.strip()]
    return lines if len(lines) == count else None


def _teacher(example: Any, scorer: Any, verifier: Any) -> dict[str, dict[str, Any]]:
    """The PRM's accuracy on the near-miss step of the first TEACHER_PER_KIND demonstrations with
    the near-miss, and on the same step of as many clean ones, per planted template."""
    from rewardsql_sql_reward.prm.policy import chat_prompt, load_questions
    from rewardsql_sql_reward.rewards.annotate import Annotation, build_prm_inputs
    from rewardsql_sql_reward.rewards.cocte import split_steps

    train = json.loads(Path(example.train_json).read_text(encoding="utf-8"))
    # the prompts SFT trained on (train.parquet's rows are train.json's questions, in order)
    messages = {str(q.question_id): q.messages
                for q in load_questions(Path(example.train_parquet), Path(example.db_root))}
    items: list[tuple[str, bool, int, str, list[str], str]] = []  # template, wrong, step, ...
    for template, miss in NEAR_MISSES.items():
        for wrong in (True, False):
            chosen = [q for q in train if q["template"] == template
                      and q["teacher_error"] == (miss.kind if wrong else None)]
            for q in chosen[:TEACHER_PER_KIND]:
                steps = split_steps(q["demonstration"])
                index = _near_miss_index(miss, q["query"], split_steps)
                if wrong and miss.step(steps) != index:
                    raise ValueError(f"{template}: the near-miss is not where the teacher put "
                                     f"it: {q['demonstration']}")
                prompt = chat_prompt(scorer.tokenizer, messages[str(q["question_id"])])
                items.append((template, wrong, index, prompt, steps, q["db_id"]))
    annotation = Annotation.from_prm_config(scorer.settings)
    inputs = build_prm_inputs([(prompt, steps, db) for *_, prompt, steps, db in items], verifier,
                              annotation)
    scores = scorer.score_many([(i.prompt, i.annotated_steps) for i in inputs])
    out: dict[str, dict[str, Any]] = {}
    for template in NEAR_MISSES:
        mine = [(wrong, _score_at(s, index)) for (t, wrong, index, *_), s
                in zip(items, scores, strict=True) if t == template]
        out[template] = {
            "per_kind": TEACHER_PER_KIND,
            "near_miss": _share((s for wrong, s in mine if wrong), flagged=True),
            "clean": _share((s for wrong, s in mine if not wrong), flagged=False)}
    return out


def _policy(example: Any, questions_jsonl: Path) -> dict[str, dict[str, Any]]:
    """The PRM's accuracy, from the scores best-of-N stored, on the near-miss step of the
    samples that repeat it and on the same step of the samples that write it as gold does."""
    from rewardsql_sql_reward.rewards.cocte import split_steps

    templates = {str(q["question_id"]): q["template"]
                 for q in json.loads(Path(example.dev_json).read_text(encoding="utf-8"))}
    found: dict[str, dict[str, Any]] = {
        t: {"questions": 0, "candidates": 0, "unaligned": 0, "near_miss": [], "right_step": []}
        for t in NEAR_MISSES}
    for raw in Path(questions_jsonl).read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        record = json.loads(raw)
        template = templates.get(str(record["question_id"]))
        if template not in NEAR_MISSES:
            continue
        miss, into = NEAR_MISSES[template], found[template]
        gold = split_steps(record["gold"])
        at = _near_miss_index(miss, record["gold"], split_steps)
        into["questions"] += 1
        for candidate in record["candidates"]:
            into["candidates"] += 1
            steps = _candidate_steps(candidate, split_steps)
            if steps is None:
                into["unaligned"] += 1
                continue
            index = miss.step(steps)
            if index is not None:
                into["near_miss"].append(_score_at(candidate["step_scores"], index))
            elif at < len(steps) and _same_step(steps[at], gold[at]):
                into["right_step"].append(_score_at(candidate["step_scores"], at))
    return {t: {**{k: v for k, v in f.items() if k not in ("near_miss", "right_step")},
                "near_miss": _share(f["near_miss"], flagged=True),
                "right_step": _share(f["right_step"], flagged=False)}
            for t, f in found.items()}


def _labels(example: Any, labels_jsonl: Path) -> dict[str, dict[str, Any]]:
    """What the step labels of ``labels_jsonl`` (``rm label``'s output) say of the near-miss
    step and of the same step written right, per planted template."""
    from rewardsql_sql_reward.rewards.cocte import split_steps

    questions = {str(q["question_id"]): q for path in (example.train_json, example.rl_json)
                 for q in json.loads(Path(path).read_text(encoding="utf-8"))}  # --quick: train
    found: dict[str, dict[str, Any]] = {
        t: {"answers": 0, "near_miss": [], "right_step": []} for t in NEAR_MISSES}
    for raw in Path(labels_jsonl).read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        line = json.loads(raw)
        question = questions.get(str(line["question_id"]))
        if question is None or question["template"] not in NEAR_MISSES:
            continue
        miss, into = NEAR_MISSES[question["template"]], found[question["template"]]
        steps, labels = line["steps"], line["labels"]
        into["answers"] += 1
        gold = split_steps(question["query"])
        at = _near_miss_index(miss, question["query"], split_steps)
        index = miss.step(steps)
        # a label as a score, "+" 1.0 and "-" 0.0, so that _share counts it
        if index is not None:
            into["near_miss"].append(_label_at(labels, index))
        elif at < len(steps) and _same_step(steps[at], gold[at]):
            into["right_step"].append(_label_at(labels, at))
    return {t: {"answers": f["answers"],
                "near_miss": _share(f["near_miss"], flagged=True),
                "right_step": _share(f["right_step"], flagged=False)}
            for t, f in found.items()}


def _label_at(labels: Sequence[str], index: int) -> float | None:
    return (1.0 if labels[index] == "+" else 0.0) if index < len(labels) else None


def near_miss_report(example: Any, prm_dir: Path, questions_jsonl: Path, *, device: str,
                     labels_jsonl: Path | None = None) -> dict[str, dict[str, Any]]:
    """Per planted template: its near-miss ``kind``, the PRM's accuracy on the near-miss step in
    the teacher's demonstrations (``teacher``: ``near_miss.flagged``, ``clean.passed``) and in
    the best-of-N samples of ``questions_jsonl`` (``policy``: ``near_miss.flagged`` over the
    samples that repeat it, ``right_step.passed`` over those whose step there is the gold's),
    each with its counts (see the module docstring); with ``labels_jsonl`` (the PRM's training
    labels), ``labels``: how they mark the same steps. ``example``: what
    :func:`~rewardsql.demo.tiny.build_example` returned; ``prm_dir``: the PRM; ``device``: where
    it scores the demonstrations."""
    from rewardsql_sql_reward.verifier import SQLVerifier

    from rewardsql.training.prm import open_scorer

    scorer = open_scorer(Path(prm_dir), device=device)
    with SQLVerifier(Path(example.db_root)) as verifier:
        teacher = _teacher(example, scorer, verifier)
    policy = _policy(example, Path(questions_jsonl))
    labels = _labels(example, Path(labels_jsonl)) if labels_jsonl is not None else None
    return {t: {"kind": m.kind, "teacher": teacher[t], "policy": policy[t],
                **({"labels": labels[t]} if labels is not None else {})}
            for t, m in NEAR_MISSES.items()}


__all__ = ["TEACHER_PER_KIND", "THRESHOLD", "near_miss_report"]
