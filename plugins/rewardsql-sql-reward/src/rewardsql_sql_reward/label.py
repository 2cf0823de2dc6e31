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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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


__all__ = ["SEARCHES", "Complete", "Judge", "PrefixValues", "StepLabels", "label_response"]
