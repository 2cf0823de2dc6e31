"""Held-out PRM metrics: step accuracy, first-error accuracy and AUC of the step scores."""

from __future__ import annotations

import math
from collections.abc import Sequence


def first_error(values: Sequence[float]) -> int | None:
    """Index of the first step below 0.5 (a "-"), or None when every step is "+"."""
    return next((i for i, v in enumerate(values) if v < 0.5), None)


def auc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Area under the ROC curve (rank statistic, ties count half); None with one class only."""
    pairs = sorted(zip(scores, positive, strict=True))
    n_pos = sum(positive)
    n_neg = len(pairs) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = 0.0
    i = 0
    while i < len(pairs):  # average ranks over runs of equal scores
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        rank_sum += sum(p for _, p in pairs[i:j]) * (i + j + 1) / 2
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def prm_metrics(predicted: Sequence[Sequence[float]], targets: Sequence[Sequence[float]]
                ) -> dict[str, float | int | None]:
    """Metrics of predicted step scores against target labels (a target >= 0.5 is "+").

    ``majority_step_accuracy`` is the accuracy of always answering the more frequent label: the
    chance level step accuracy has to beat.
    """
    flat_p = [p for row in predicted for p in row]
    flat_t = [t >= 0.5 for row in targets for t in row]
    if not flat_p:
        return {"steps": 0}
    correct = sum((p >= 0.5) == t for p, t in zip(flat_p, flat_t, strict=True))
    firsts = sum(first_error(p) == first_error(t) for p, t in zip(predicted, targets,
                                                                  strict=True))
    loss = -sum(t * math.log(max(p, 1e-12)) + (1 - t) * math.log(max(1 - p, 1e-12))
                for row_p, row_t in zip(predicted, targets, strict=True)
                for p, t in zip(row_p, row_t, strict=True)) / len(flat_p)
    positives = sum(flat_t)
    return {
        "steps": len(flat_p),
        "examples": len(predicted),
        "loss": loss,
        "step_accuracy": correct / len(flat_p),
        "majority_step_accuracy": max(positives, len(flat_t) - positives) / len(flat_t),
        "first_error_accuracy": firsts / len(predicted),
        "auc": auc(flat_p, flat_t),
    }


__all__ = ["auc", "first_error", "prm_metrics"]
