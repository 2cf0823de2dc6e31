"""Automatic step labels by execution (``rewardsql rm label``): Math-Shepherd and OmegaPRM.

For one sampled CoCTE response (spec/prm.md, "Automatic labels"):

* every step prefix is executed; the first step whose SQL fails and every step after it are
  "-" (soft 0) with no rollouts;
* the final step takes the verifier's outcome (the response's SQL against the gold);
* every other step k is labelled by the value of its prefix: the fraction of continuations from
  steps 1..k that reach the gold result. The continuations are ``m`` completions sampled from
  the prefix plus the response itself (whose outcome is known). Hard label: "+" when any is
  correct (Math-Shepherd); soft label: the fraction; and every step after the first "-" is "-".

Two searches give the same hard labels when values only fall along a chain (once a prefix cannot
be completed correctly, no longer one can):

* ``every`` (Math-Shepherd): sample ``m`` completions from each prefix in turn, up to the first
  "-".
* ``binary`` (OmegaPRM, the default): a correct response needs no rollout (it completes every
  prefix itself); otherwise binary-search the first prefix whose completions all fail, and infer
  the other labels: a prefix before a positive one is "+", one after a zero is "-". Completions
  are reused: prefixes shared by several responses of a question are sampled once. Inferred
  steps record 0 rollouts in ``counts``; an inferred "+" takes the soft value of the nearest
  measured positive prefix after it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rewardsql.errors import ConfigError

SEARCHES = ("binary", "every")

#: ``(prefix_steps, m) -> m completed responses`` (the prefix included), for one question.
Complete = Callable[[Sequence[str], int], list[str]]
#: ``responses -> correct?`` for one question (the verifier against the gold SQL).
Judge = Callable[[Sequence[str]], list[bool]]


@dataclass
class StepLabels:
    """One response's labels: hard ("+"/"-"), soft (P(+)), ``[correct, continuations]`` per
    step (``[0, 0]``: not measured), the first "-" (None: none), completions generated."""

    labels: list[str]
    soft: list[float]
    counts: list[list[int]]
    first_error: int | None
    rollouts: int


@dataclass
class PrefixValues:
    """Completions' outcomes per prefix (a tuple of steps), shared by a question's responses."""

    complete: Complete
    judge: Judge
    m: int
    seen: dict[tuple[str, ...], tuple[int, int]] = field(default_factory=dict)
    generated: int = 0

    def value(self, prefix: Sequence[str]) -> tuple[int, int]:
        """``(correct, sampled)`` of ``m`` completions from ``prefix`` (sampled once)."""
        key = tuple(prefix)
        if key not in self.seen:
            completions = self.complete(prefix, self.m)
            self.generated += len(completions)
            self.seen[key] = (sum(self.judge(completions)), len(completions))
        return self.seen[key]


def label_response(steps: Sequence[str], failed: Sequence[bool], outcome: bool,
                   values: PrefixValues, search: str = "binary") -> StepLabels:
    """Labels of one response's steps (see the module docstring).

    ``failed[k]``: step k's SQL fails to execute; ``outcome``: the whole response is correct.
    """
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    k_steps = len(steps)
    before = values.generated
    fail = next((k for k, bad in enumerate(failed) if bad), k_steps)
    own = int(bool(outcome))
    probes = min(fail, k_steps - 1)  # steps labelled by rollouts: 0 .. probes-1
    measured: dict[int, tuple[int, int]] = {}

    def probe(k: int) -> bool:
        correct, total = values.value(steps[:k + 1])
        measured[k] = (correct + own, total + 1)
        return correct + own > 0

    if search == "every" or not outcome:
        if search == "every":
            zero = next((k for k in range(probes) if not probe(k)), probes)
        else:  # the first prefix with value 0, in log2(probes) rollout rounds
            lo, hi = 0, probes
            while lo < hi:
                mid = (lo + hi) // 2
                if probe(mid):
                    lo = mid + 1
                else:
                    hi = mid
            zero = lo
    else:
        zero = probes  # a correct response completes every prefix itself
    first = zero if zero < probes else (fail if fail < k_steps else (None if outcome else
                                                                     k_steps - 1))
    labels, soft, counts = [], [], []
    for k in range(k_steps):
        good = first is None or k < first
        labels.append("+" if good else "-")
        correct, total = measured.get(k, (0, 0))
        counts.append([correct, total])
        if not good:
            soft.append(0.0)
        elif total:
            soft.append(correct / total)
        elif k == k_steps - 1 or (outcome and not measured):
            soft.append(1.0)  # the verifier's outcome, or a correct response's own prefix
        else:  # inferred "+": the nearest measured positive prefix after it
            later = min(j for j in measured if j > k and measured[j][0])
            soft.append(measured[later][0] / measured[later][1])
    return StepLabels(labels, soft, counts, first, values.generated - before)


@dataclass(frozen=True)
class LabelSettings:
    """What ``rm label`` samples and how it labels (recorded in every output line)."""

    n: int = 4  # responses sampled per question
    m: int = 4  # completions per probed prefix
    search: str = "binary"
    temperature: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    mode: str = "bird"  # the verifier's comparison of results
    execution_results: bool = True
    result_rows: int = 50
    result_chars: int = 500

    def check(self) -> None:
        if self.n < 1 or self.m < 1 or self.max_new_tokens < 1:
            raise ConfigError("--n, --m and --max-new-tokens must be positive")
        if self.search not in SEARCHES:
            raise ConfigError(f"--search {self.search!r}: choose one of {', '.join(SEARCHES)}")
        if self.temperature <= 0:
            raise ConfigError("--temperature must be positive (labels need sampling)")


@dataclass
class LabelReport:
    """Lines in the output (kept from an earlier run, and written now), labels, completions."""

    kept: int = 0
    written: int = 0
    positive: int = 0
    negative: int = 0
    rollouts: int = 0
    measured_steps: int = 0

    def count(self, line: dict[str, Any]) -> None:
        self.positive += line["labels"].count("+")
        self.negative += line["labels"].count("-")

    def lines(self) -> list[str]:
        total = self.positive + self.negative
        share = f"{self.positive / total:.1%}" if total else "-"
        return [f"responses: {self.kept + self.written} ({self.kept} from an earlier run, "
                f"{self.written} now)",
                f"step labels: {total} ({self.positive} \"+\", {self.negative} \"-\"; {share} "
                "positive)",
                f"completions generated now: {self.rollouts} for {self.measured_steps} measured "
                "steps"]


def resume_output(path: Path, policy: str, settings: LabelSettings) -> tuple[set, LabelReport]:
    """The (question_id, sample) pairs already in ``path``, after cutting a torn last line.

    A run killed mid-write leaves at most one partial line at the end: it is cut off, so the
    file holds whole lines only. Lines made with another policy or settings are an error.
    """
    report = LabelReport()
    done: set = set()
    if not path.exists():
        return done, report
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
        data = data[:data.rfind(b"\n") + 1]
    wanted = {"policy": policy, "settings": asdict(settings)}
    for number, raw in enumerate(data.decode("utf-8").splitlines(), 1):
        try:
            line = json.loads(raw)
        except ValueError:
            raise ConfigError(f"line {number} is not JSON; not a rm label output?",
                              source=path) from None
        for key, value in wanted.items():
            if line.get(key) != value:
                raise ConfigError(f"line {number} was made with another {key} ({line.get(key)}"
                                  f" instead of {value}); resume with the same settings or "
                                  "write to another --output", source=path)
        done.add((str(line["question_id"]), line["sample"]))
        report.kept += 1
        report.count(line)
    return done, report


def run_label(policy: Any, questions: Sequence[Any], db_root: Path, output: Path,
              settings: LabelSettings, *, progress: bool = True) -> LabelReport:
    """Sample, execute and label; append one JSON line per response to ``output``.

    ``policy`` is a :class:`~rewardsql_sql_reward.prm.policy.Policy`. Append-only and resumable:
    responses already in ``output`` are skipped, and every call is seeded by question, prefix
    and ``settings.seed``, so a resumed run writes what an uninterrupted one would have.
    """
    from tqdm import tqdm

    from rewardsql_sql_reward.prm.policy import stable_seed
    from rewardsql_sql_reward.rewards.annotate import Annotation, build_prm_inputs
    from rewardsql_sql_reward.verifier import SQLVerifier
    from rewardsql_sql_reward.verifier.extract import STEP_TAG, TAG_PATTERN, extract_sql

    settings.check()
    done, report = resume_output(output, policy.name, settings)
    annotation = Annotation(settings.execution_results, settings.result_rows,
                            settings.result_chars)
    output.parent.mkdir(parents=True, exist_ok=True)
    verdicts: dict[tuple[str, str, str], bool] = {}  # executions cached across the run
    with SQLVerifier(db_root, mode=settings.mode) as verifier, \
            open(output, "a", encoding="utf-8") as out, \
            tqdm(total=len(questions), unit="q", desc="labelling", disable=not progress) as bar:
        for question in questions:
            todo = [j for j in range(settings.n) if (str(question.question_id), j) not in done]
            if not todo:
                bar.update(1)
                continue
            prompt = policy.prompt_text(question.messages)
            base = stable_seed(settings.seed, question.question_id)
            responses = policy.generate(prompt, settings.n, seed=base)

            def judge(texts: Sequence[str], q: Any = question) -> list[bool]:
                sqls = [extract_sql(t) for t in texts]
                new = sorted({s for s in sqls if (q.db_id, s, q.gold) not in verdicts})
                for sql, verdict in zip(new, verifier.verify_batch(
                        [(q.db_id, sql, q.gold) for sql in new]), strict=True):
                    verdicts[(q.db_id, sql, q.gold)] = verdict.correct
                return [verdicts[(q.db_id, s, q.gold)] for s in sqls]

            separator = ["\n\n"]

            def complete(prefix: Sequence[str], m: int, text: str = prompt, base: int = base,
                         sep: list[str] = separator) -> list[str]:
                head = "".join(step + sep[0] for step in prefix)
                return [head + tail for tail in policy.generate(
                    text + head, m, seed=stable_seed(base, tuple(prefix)))]

            values = PrefixValues(complete, judge, settings.m)
            inputs = build_prm_inputs([(prompt, r, question.db_id) for r in responses], verifier,
                                      annotation)
            outcomes = judge(responses)
            for j in range(settings.n):
                separator[0] = STEP_TAG if TAG_PATTERN.search(responses[j]) else "\n\n"
                item = inputs[j]
                # answers written before a kill are labelled again (not written): the prefixes
                # they sampled are reused by later answers, as in an uninterrupted run
                labels = label_response(item.steps, item.failed, outcomes[j], values,
                                        settings.search)
                if j not in todo:
                    continue
                line = {
                    "question_id": question.question_id, "sample": j, "db_id": question.db_id,
                    "prompt": prompt, "response": responses[j], "steps": item.steps,
                    "annotated_steps": item.annotated_steps, "text": item.text,
                    "labels": labels.labels, "soft_labels": labels.soft,
                    "counts": labels.counts, "first_error": labels.first_error,
                    "outcome": outcomes[j], "rollouts": labels.rollouts,
                    "policy": policy.name, "settings": asdict(settings)}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")  # one write per line
                report.written += 1
                report.rollouts += labels.rollouts
                report.measured_steps += sum(1 for c in labels.counts if c[1])
                report.count(line)
            out.flush()
            os.fsync(out.fileno())
            bar.update(1)
            bar.set_postfix(plus=report.positive, minus=report.negative)
    return report


__all__ = ["SEARCHES", "Complete", "Judge", "LabelReport", "LabelSettings", "PrefixValues",
           "StepLabels", "label_response", "resume_output", "run_label"]
