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


class ResponseSearch:
    """One response's search for its first error, one probe at a time, so that the probes of
    many responses can be sampled together (:func:`run_label`) or one by one
    (:func:`label_response`).

    ``failed[k]``: step k's SQL fails to execute; ``outcome``: the whole response is correct.
    :meth:`next_probe` is the step whose prefix value is needed next (None: the search is
    over), :meth:`record` takes that value, :meth:`result` gives the labels.
    """

    def __init__(self, steps: Sequence[str], failed: Sequence[bool], outcome: bool,
                 search: str = "binary") -> None:
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
        self.steps = list(steps)
        self.k_steps = len(steps)
        self.fail = next((k for k, bad in enumerate(failed) if bad), self.k_steps)
        self.outcome = bool(outcome)
        self.own = int(self.outcome)
        self.every = search == "every"
        probes = min(self.fail, self.k_steps - 1)  # steps labelled by rollouts: 0 .. probes-1
        self.probes = probes
        # the first prefix with value 0 lies in [lo, hi] (hi = probes: none); every: lo walks
        # from the start, binary: bisection. A correct response completes every prefix itself.
        self.lo, self.hi = (probes if outcome and not self.every else 0), probes
        self.measured: dict[int, tuple[int, int]] = {}

    def next_probe(self) -> int | None:
        """The step whose prefix's completions are needed next; None when the search is over."""
        if self.lo >= self.hi:
            return None
        return self.lo if self.every else (self.lo + self.hi) // 2

    def prefix(self, k: int) -> list[str]:
        """Steps 1..k+1 (the prefix probed for step k)."""
        return self.steps[:k + 1]

    def record(self, k: int, correct: int, sampled: int) -> None:
        """Step k's prefix value: ``correct`` of ``sampled`` completions reach the gold result
        (the response itself counts as one more continuation)."""
        self.measured[k] = (correct + self.own, sampled + 1)
        if correct + self.own > 0:
            self.lo = k + 1
        else:  # every: k == lo, so the walk stops here
            self.hi = k

    def result(self, rollouts: int) -> StepLabels:
        """The labels, once :meth:`next_probe` is None; ``rollouts``: completions generated
        for this response."""
        k_steps, fail, measured = self.k_steps, self.fail, self.measured
        zero = self.lo
        first = zero if zero < self.probes else (fail if fail < k_steps else (
            None if self.outcome else k_steps - 1))
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
            elif k == k_steps - 1 or (self.outcome and not measured):
                soft.append(1.0)  # the verifier's outcome, or a correct response's own prefix
            else:  # inferred "+": the nearest measured positive prefix after it
                later = min(j for j in measured if j > k and measured[j][0])
                soft.append(measured[later][0] / measured[later][1])
        return StepLabels(labels, soft, counts, first, rollouts)


def label_response(steps: Sequence[str], failed: Sequence[bool], outcome: bool,
                   values: PrefixValues, search: str = "binary") -> StepLabels:
    """Labels of one response's steps, its probes sampled one at a time through ``values``
    (see the module docstring and :class:`ResponseSearch`).

    ``failed[k]``: step k's SQL fails to execute; ``outcome``: the whole response is correct.
    """
    state = ResponseSearch(steps, failed, outcome, search)
    before = values.generated
    while (k := state.next_probe()) is not None:
        state.record(k, *values.value(state.prefix(k)))
    return state.result(values.generated - before)


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
    top_p: float = 1.0
    sampler: str = "transformers"  # which draws the samples: vllm or transformers

    def check(self) -> None:
        if self.n < 1 or self.m < 1 or self.max_new_tokens < 1:
            raise ConfigError("--n, --m and --max-new-tokens must be positive")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p {self.top_p}: must be in (0, 1]")
        if self.search not in SEARCHES:
            raise ConfigError(f"--search {self.search!r}: choose one of {', '.join(SEARCHES)}")
        if self.temperature <= 0:
            raise ConfigError("--temperature must be positive (labels need sampling)")


#: Settings recorded since (lines written before lack them, and were made so).
_LATER_SETTINGS = {"top_p": 1.0, "sampler": "transformers"}


@dataclass
class LabelReport:
    """Lines in the output (kept from an earlier run, and written now), labels, completions."""

    kept: int = 0
    written: int = 0
    positive: int = 0
    negative: int = 0
    rollouts: int = 0
    measured_steps: int = 0
    questions_kept: int = 0  # every answer in the file already: not sampled again
    questions_now: int = 0

    def count(self, line: dict[str, Any]) -> None:
        self.positive += line["labels"].count("+")
        self.negative += line["labels"].count("-")

    def lines(self) -> list[str]:
        total = self.positive + self.negative
        share = f"{self.positive / total:.1%}" if total else "-"
        return [f"questions: {self.questions_kept + self.questions_now} ("
                f"{self.questions_kept} finished in an earlier run, {self.questions_now} now)",
                f"responses: {self.kept + self.written} ({self.kept} from an earlier run, "
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
        if isinstance(line.get("settings"), dict):
            line["settings"] = {**_LATER_SETTINGS, **line["settings"]}
        for key, value in wanted.items():
            if line.get(key) != value:
                raise ConfigError(f"line {number} was made with another {key} ({line.get(key)}"
                                  f" instead of {value}); resume with the same settings or "
                                  "write to another --output", source=path)
        done.add((str(line["question_id"]), line["sample"]))
        report.kept += 1
        report.count(line)
    return done, report


class _Question:
    """One question in flight in :func:`run_label`: its responses (once sampled), their PRM
    inputs and outcomes, one search per response, and the values of the prefixes sampled so
    far (shared by its responses: a prefix is sampled once)."""

    def __init__(self, position: int, question: Any, prompt: str, base: int,
                 todo: list[int]) -> None:
        self.position, self.question, self.prompt = position, question, prompt
        self.base, self.todo = base, todo
        self.responses: list[str] | None = None
        self.inputs: list[Any] = []
        self.outcomes: list[bool] = []
        self.searches: list[ResponseSearch] = []
        self.heads: list[str] = []  # each response's step separator joins its prefixes
        self.values: dict[str, tuple[int, int]] = {}  # prefix text -> (correct, sampled)
        self.rollouts: list[int] = []

    def head(self, j: int, k: int) -> str:
        """Response j's prefix for step k, as the policy continues it."""
        return "".join(step + self.heads[j] for step in self.searches[j].prefix(k))

    def advance(self) -> dict[str, tuple[int, list[str]]]:
        """Feed every search the values known, and return the prefixes still to sample: ``{text:
        (owner, steps)}``, owner the first response that needs it (it is charged the
        completions)."""
        wanted: dict[str, tuple[int, list[str]]] = {}
        for j, state in enumerate(self.searches):
            while (k := state.next_probe()) is not None:
                head = self.head(j, k)
                if head not in self.values:
                    wanted.setdefault(head, (j, state.prefix(k)))
                    break
                state.record(k, *self.values[head])
        return wanted

    def done(self) -> bool:
        return self.responses is not None and all(s.next_probe() is None for s in self.searches)


def run_label(policy: Any, questions: Sequence[Any], db_root: Path, output: Path,
              settings: LabelSettings, *, progress: bool = True,
              in_flight: int = 32) -> LabelReport:
    """Sample, execute and label; append one JSON line per response to ``output``.

    ``policy`` is a :class:`~rewardsql_sql_reward.prm.policy.Sampler` (transformers or vLLM).
    The work goes in rounds over up to ``in_flight`` questions at a time: each round asks the
    policy once (``generate_many``) for everything the questions need next (a new question's
    responses, or the completions of every prefix its searches probe now), so vLLM schedules
    them together and its prefix cache serves completions that share a prompt and prefix. A
    question's lines are written, in question order, once its searches end.

    Append-only and resumable: responses already in ``output`` are skipped, and every call is
    seeded by question, prefix and ``settings.seed``, so a resumed run writes what an
    uninterrupted one would have (with transformers exactly; with vLLM as far as its engine
    repeats itself when the same requests come batched otherwise).
    """
    from tqdm import tqdm

    from rewardsql_sql_reward.prm.policy import Request, stable_seed
    from rewardsql_sql_reward.rewards.annotate import Annotation, build_prm_inputs
    from rewardsql_sql_reward.verifier import SQLVerifier
    from rewardsql_sql_reward.verifier.extract import STEP_TAG, TAG_PATTERN, extract_sql

    settings.check()
    if in_flight < 1:
        raise ConfigError(f"--questions-in-flight {in_flight}: must be positive")
    done, report = resume_output(output, policy.name, settings)
    annotation = Annotation(settings.execution_results, settings.result_rows,
                            settings.result_chars)
    output.parent.mkdir(parents=True, exist_ok=True)
    verdicts: dict[tuple[str, str, str], bool] = {}  # executions cached across the run
    waiting = list(reversed(list(enumerate(questions))))  # popped from the end: in order
    active: list[_Question] = []
    with SQLVerifier(db_root, mode=settings.mode) as verifier, \
            open(output, "a", encoding="utf-8") as out, \
            tqdm(total=len(questions), unit="q", desc="labelling", disable=not progress) as bar:

        def judge(items: Sequence[tuple[Any, str]]) -> list[bool]:
            """Whether each (question, text) reaches the question's gold result (one batch)."""
            keys = [(q.db_id, extract_sql(t), q.gold) for q, t in items]
            new = sorted({k for k in keys if k not in verdicts})
            for key, verdict in zip(new, verifier.verify_batch(new), strict=True):
                verdicts[key] = verdict.correct
            return [verdicts[k] for k in keys]

        def write(item: _Question) -> None:
            q = item.question
            for j in item.todo:
                labels = item.searches[j].result(item.rollouts[j])
                line = {
                    "question_id": q.question_id, "sample": j, "db_id": q.db_id,
                    "prompt": item.prompt, "response": item.responses[j],  # type: ignore[index]
                    "steps": item.inputs[j].steps,
                    "annotated_steps": item.inputs[j].annotated_steps,
                    "text": item.inputs[j].text, "labels": labels.labels,
                    "soft_labels": labels.soft, "counts": labels.counts,
                    "first_error": labels.first_error, "outcome": item.outcomes[j],
                    "rollouts": labels.rollouts, "policy": policy.name,
                    "settings": asdict(settings)}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")  # one write per line
                report.written += 1
                report.rollouts += labels.rollouts
                report.measured_steps += sum(1 for c in labels.counts if c[1])
                report.count(line)
            out.flush()
            os.fsync(out.fileno())

        while waiting or active:
            while waiting and len(active) < in_flight:
                position, q = waiting.pop()
                todo = [j for j in range(settings.n) if (str(q.question_id), j) not in done]
                if not todo:
                    report.questions_kept += 1
                    bar.update(1)
                    continue
                report.questions_now += 1
                # answers written before a kill are labelled again (not written): the prefixes
                # they sample are reused by later answers, as in an uninterrupted run
                active.append(_Question(position, q, policy.prompt_text(q.messages),
                                        stable_seed(settings.seed, q.question_id), todo))
            if not active:
                break
            # this round's requests: new questions' responses, every search's next prefix
            requests: list[Request] = []
            owners: list[tuple[_Question, str | None, int]] = []
            for item in active:
                if item.responses is None:
                    requests.append(Request(item.prompt, settings.n, item.base,
                                            key=item.position))
                    owners.append((item, None, -1))
                    continue
                for head, (j, prefix) in item.advance().items():
                    requests.append(Request(item.prompt + head, settings.m,
                                            stable_seed(item.base, tuple(prefix)),
                                            key=item.position))
                    owners.append((item, head, j))
            texts = policy.generate_many(requests) if requests else []
            completions: list[tuple[Any, str]] = []
            for (item, sampled, _), tails in zip(owners, texts, strict=True):
                completions += [(item.question, (sampled or "") + t) for t in tails]
            correct = iter(judge(completions))
            for (item, sampled, j), tails in zip(owners, texts, strict=True):
                results = [next(correct) for _ in tails]
                if sampled is None:  # the question's responses
                    item.responses = tails
                    item.inputs = build_prm_inputs(
                        [(item.prompt, r, item.question.db_id) for r in tails], verifier,
                        annotation)
                    item.outcomes = results
                    item.heads = [STEP_TAG if TAG_PATTERN.search(r) else "\n\n" for r in tails]
                    item.searches = [ResponseSearch(i.steps, i.failed, o, settings.search)
                                     for i, o in zip(item.inputs, results, strict=True)]
                    item.rollouts = [0] * len(tails)
                else:
                    item.values[sampled] = (sum(results), len(results))
                    item.rollouts[j] += len(results)
            for item in active:
                if item.responses is not None:
                    item.advance()  # record the values just sampled: a search may be over
            while active and active[0].done():  # written in question order
                write(active.pop(0))
                bar.update(1)
                bar.set_postfix(plus=report.positive, minus=report.negative)
    return report


__all__ = ["SEARCHES", "Complete", "Judge", "LabelReport", "LabelSettings", "PrefixValues",
           "ResponseSearch", "StepLabels", "label_response", "resume_output", "run_label"]
