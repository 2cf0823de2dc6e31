"""The reward function: how many of the gold query's clauses the response also uses."""

from __future__ import annotations

import re
from typing import Any

CLAUSES = (
    "select",
    "distinct",
    "join",
    "where",
    "group by",
    "having",
    "order by",
    "limit",
    "union",
    "intersect",
    "except",
    "with",
    "count",
    "sum",
    "avg",
    "min",
    "max",
)


def _clauses(sql: str) -> set[str]:
    text = " ".join(re.sub(r"'[^']*'", "''", sql.lower()).split())  # ignore string literals
    return {c for c in CLAUSES if re.search(rf"\b{c}\b", text)}


def clause_overlap(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Jaccard overlap of SQL clauses between response and gold, in [0, 1].

    A shaping signal to add to an execution reward, never a replacement for one: it does not
    run the SQL.
    """
    got, want = _clauses(solution_str), _clauses(str(ground_truth))
    union = got | want
    score = len(got & want) / len(union) if union else 1.0
    return {"score": score, "missing": len(want - got), "extra": len(got - want)}
