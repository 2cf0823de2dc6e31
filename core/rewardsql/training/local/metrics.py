"""Step metrics: ``metrics.jsonl`` (one JSON object per step, appended), TensorBoard, console.

Keys written every training step (``None`` where a value does not apply, e.g. ``actor/kl_loss``
without ``use_kl_loss``, ``accuracy`` for a reward that reports no ``acc``):

``step``, ``epoch``, ``reward/mean``, ``reward/std``, ``accuracy``, ``status/<status>`` (one count
per verifier status seen in the step), ``reward/groups_with_variance`` (fraction of prompt groups
whose rewards differ), ``advantage/mean``, ``advantage/std``, ``actor/kl_loss``,
``actor/entropy``, ``actor/pg_loss``, ``actor/loss``, ``actor/grad_norm``, ``actor/pg_clipfrac``,
``actor/ppo_kl``, ``actor/lr``, ``response_length/mean``, ``response_length/clip_ratio``,
``perf/tokens_per_s``, ``perf/step_s``, ``perf/generate_s``; and ``dev/accuracy`` on steps with a
dev evaluation (``null`` otherwise).

Besides, the batch mean of each numeric key of the reward's ``extra`` under that key's name, the
name verl reports it by (``acc``, ``sql_seconds``, ``status_<status>``; ``sql_prm``'s
``prm_status_<status>``, ``prm_steps``, ``prm_reward_tokens``, ``prm_step_score``,
``prm_seconds``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rewardsql.io import atomic_write_text

METRICS_FILE = "metrics.jsonl"

#: Keys every step's record has (status counts and the reward's extra come in addition).
STEP_KEYS = (
    "step", "epoch", "reward/mean", "reward/std", "accuracy", "reward/groups_with_variance",
    "advantage/mean", "advantage/std", "actor/kl_loss", "actor/entropy", "actor/pg_loss",
    "actor/loss", "actor/grad_norm", "actor/pg_clipfrac", "actor/ppo_kl", "actor/lr",
    "response_length/mean", "response_length/clip_ratio", "perf/tokens_per_s", "perf/step_s",
    "perf/generate_s", "dev/accuracy",
)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def truncate_after(path: Path, step: int) -> None:
    """Keep the records of a JSON-lines file up to ``step`` (a resumed run logs the later ones
    again), dropping a last line torn by a kill in the middle of an append."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # torn: only the last line can be, and its step is redone
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


class MetricsWriter:
    """Appends step records to ``metrics.jsonl`` and TensorBoard."""

    def __init__(self, output_dir: Path, *, tensorboard: bool = True) -> None:
        self.path = output_dir / METRICS_FILE
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (a resumed run logs them again)."""
        truncate_after(self.path, step)

    def reset(self) -> None:
        if self.path.exists():
            atomic_write_text(self.path, "")

    def write(self, record: Mapping[str, Any]) -> None:
        clean = {key: _clean(value) for key, value in record.items()}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(clean, sort_keys=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if self.writer is not None:
            step = int(record["step"])
            for key, value in clean.items():
                numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
                if key != "step" and numeric:
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_metrics(output_dir: Path) -> list[dict[str, Any]]:
    """The records of ``output_dir/metrics.jsonl``, in order."""
    path = output_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]
