"""The imperfect teacher of the example's SFT demonstrations.

Real SFT data comes from an imperfect teacher, and what RL and a process reward model are for is
fixing what the policy inherited from it. So in the example, in three of the ten templates, a
stated share of the train split's demonstrations carries one systematic near-miss in one step:
the kind of mistake an execution check catches and a step-level PRM can localise. The rate is
above one half, so that greedy decoding after SFT makes the mistake in these contexts while the
right form stays within reach of sampling: the headroom GRPO and best-of-N turn into accuracy.
Because the mistakes belong to templates, not to values, fixing them carries over to dev.

The gold SQL of every split (``query``: rewards, labels, every evaluation) is always correct;
only ``sft_train.jsonl``'s assistant turns, and ``train.json``'s ``demonstration``, carry them.

Each near-miss can also be found again (:meth:`NearMiss.step`): the step of a demonstration, or of
a policy's sample, that carries it. The teacher knows where its mistakes are, so the demo reports
whether the PRM flags those steps (:mod:`rewardsql.demo.near_miss`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Share of a planted template's train demonstrations that carry its near-miss.
TEACHER_ERROR_RATE = 0.65


@dataclass(frozen=True)
class NearMiss:
    """One systematic mistake of the teacher, in one template: ``apply`` plants it in gold SQL,
    ``detect`` finds the wrong form in any SQL (and never the template's gold form)."""

    template: str
    kind: str
    description: str
    apply: Callable[[str], str]
    detect: re.Pattern[str]

    def step(self, steps: Sequence[str]) -> int | None:
        """The index of the first of ``steps`` (CoCTE steps of one SQL) that carries the
        near-miss, or None."""
        return next((k for k, step in enumerate(steps) if self.detect.search(step)), None)


def _once(pattern: str, replacement: str) -> Callable[[str], str]:
    def apply(sql: str) -> str:
        wrong, n = re.subn(pattern, replacement, sql, count=1)
        if n != 1:
            raise ValueError(f"the near-miss {pattern!r} does not apply to: {sql}")
        return wrong

    return apply


# ``detect`` patterns allow any spacing (a policy's sample need not space as the teacher does)
# and catch the mistake, not only the teacher's spelling of it: an implied ascending order is the
# same wrong order, and any COUNT(DISTINCT ...) in these counts is the same wrong count. The
# gold form of the template never matches (tests/demo/test_near_miss.py).
NEAR_MISSES: dict[str, NearMiss] = {m.template: m for m in (
    NearMiss("group_having", "strict_comparison",
             "'at least k' written as HAVING COUNT(*) > k",
             _once(r"HAVING COUNT\(\*\) >= ", "HAVING COUNT(*) > "),
             re.compile(r"HAVING\s+COUNT\(\s*\*\s*\)\s*>(?!=)")),
    NearMiss("top_total", "wrong_order",
             "'highest total' ordered ascending (ORDER BY total ASC)",
             _once(r"ORDER BY totals\.total DESC", "ORDER BY totals.total ASC"),
             re.compile(r"ORDER\s+BY\s+totals\.total\b(?!\s+DESC\b)")),
    NearMiss("having_children", "count_distinct",
             "children counted with COUNT(DISTINCT fk) instead of COUNT(*)",
             _once(r"counts AS \(SELECT (\w+), COUNT\(\*\) AS n",
                   r"counts AS (SELECT \1, COUNT(DISTINCT \1) AS n"),
             re.compile(r"COUNT\(\s*DISTINCT\b")),
)}


def demonstrations(templates: list[str], queries: list[str], seed: int
                   ) -> list[tuple[str, str | None]]:
    """The teacher's demonstration of each train question: ``(sql, near-miss kind or None)``.

    In each planted template exactly ``round(TEACHER_ERROR_RATE * n)`` of its n questions,
    drawn from the teacher's own random stream (so the questions do not depend on the teacher),
    carry the near-miss: the stated rate is the rate, not an expectation.
    """
    rng = random.Random(f"{seed}:teacher")
    wrong: set[int] = set()
    for template in sorted(NEAR_MISSES):
        where = [i for i, t in enumerate(templates) if t == template]
        wrong |= set(rng.sample(where, round(TEACHER_ERROR_RATE * len(where))))
    return [(NEAR_MISSES[t].apply(q), NEAR_MISSES[t].kind) if i in wrong else (q, None)
            for i, (t, q) in enumerate(zip(templates, queries, strict=True))]


def describe() -> dict[str, object]:
    """The teacher as the demo's report states it."""
    return {"error_rate": TEACHER_ERROR_RATE,
            "near_misses": {m.template: {"kind": m.kind, "description": m.description}
                            for m in NEAR_MISSES.values()}}
