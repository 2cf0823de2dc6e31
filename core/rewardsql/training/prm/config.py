"""``PRMConfig``: the settings of ``rewardsql rm train`` (``rm_config.json``).

Every key of ``rewardsql sft`` (``SFTConfig``: batch sizes, learning rate, DeepSpeed,
FlashAttention, LoRA, bf16, resume, report_to, ...) with the same checks and error messages, plus
the PRM's own keys: the step tag, the two candidate tokens, hard or soft labels, and the
execution-annotation settings the training data was made with.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rewardsql.config import check_known_keys
from rewardsql.errors import ConfigError
from rewardsql.training.prm.encode import DEFAULT_CANDIDATES, DEFAULT_TAG
from rewardsql.training.sft import config as sft_config
from rewardsql.training.sft.config import SFTConfig

LABEL_TYPES = ("hard", "soft")


@dataclass(frozen=True)
class PRMConfig(SFTConfig):
    """PRM training settings: SFT's keys plus these.

    ``step_tag`` and ``candidate_tokens`` ("+" then "-") must each be one token of the model's
    tokenizer. ``label_type``: "hard" trains on the examples' ``labels`` ("+"/"-"), "soft" on
    their ``soft_labels`` (probability of "+"). ``execution_results``: train on the examples'
    ``annotated_steps`` (steps with their execution results, spec/cocte.md) rather than their
    ``steps``; ``result_rows`` and ``result_chars`` are the annotation settings the data must have
    been made with (checked against each example's ``settings`` when it records them).
    """

    step_tag: str = DEFAULT_TAG
    candidate_tokens: tuple[str, ...] = DEFAULT_CANDIDATES
    label_type: str = "hard"
    execution_results: bool = True
    result_rows: int = 50
    result_chars: int = 500

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  source: str | os.PathLike[str] | None = None) -> PRMConfig:
        """Validate a mapping of settings: unknown keys, missing keys and wrong types fail."""
        check_known_keys(data, [f.name for f in dataclasses.fields(cls)], source=source)
        sft_keys = {f.name for f in dataclasses.fields(SFTConfig)}
        for key in sft_config._REQUIRED:
            if data.get(key) in (None, ""):
                raise ConfigError("required key is missing", source=source, key=key)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                check = sft_config._check if f.name in sft_keys else _check
                values[f.name] = check(f.name, data[f.name], source)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["candidate_tokens"] = list(self.candidate_tokens)
        return out

    def replace(self, **changes: Any) -> PRMConfig:
        """A copy with ``changes`` applied and validated like a file's keys."""
        return PRMConfig.from_dict({**self.to_dict(), **changes})

    def annotation(self) -> dict[str, Any]:
        """The annotation settings a consumer must use to score the way the PRM was trained."""
        return {"execution_results": self.execution_results, "result_rows": self.result_rows,
                "result_chars": self.result_chars}


def _check(key: str, value: Any, source: Any) -> Any:
    def fail(message: str) -> ConfigError:
        return ConfigError(f"{message}, got {value!r}", source=source, key=key)

    if key == "step_tag":
        if not isinstance(value, str) or not value:
            raise fail("expected a non-empty string")
        return value
    if key == "candidate_tokens":
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, str) and v for v in value) or value[0] == value[1]):
            raise fail('expected two different tokens, good then bad, e.g. ["+", "-"]')
        return tuple(value)
    if key == "label_type":
        if value not in LABEL_TYPES:
            raise fail('expected "hard" or "soft"')
        return value
    if key == "execution_results":
        if not isinstance(value, bool):
            raise fail("expected true or false")
        return value
    if key in ("result_rows", "result_chars"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail("expected a positive integer")
        return value
    raise AssertionError(f"unchecked key {key}")  # pragma: no cover - every field is listed


__all__ = ["LABEL_TYPES", "PRMConfig"]
