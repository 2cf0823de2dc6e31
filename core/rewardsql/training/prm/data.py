"""PRM training examples: step-labelled records to token ids, tag positions and targets.

A record (one JSON object per line, as ``rewardsql rm label`` writes them) has ``prompt``,
``steps`` (and ``annotated_steps`` when the PRM reads execution results), ``labels`` ("+"/"-",
one per step) and, for soft targets, ``soft_labels`` (probability of "+"). Ids are built
segment by segment (:func:`~rewardsql.training.prm.encode.encode`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rewardsql.errors import ConfigError
from rewardsql.training.prm.config import PRMConfig
from rewardsql.training.prm.encode import encode, targets_for


@dataclass
class PRMExamples:
    """Encoded examples and what was left out."""

    examples: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0  # records whose first step does not fit max_length
    cut_steps: int = 0  # labelled steps past max_length (left out, dropped records' included)
    steps: int = 0
    positives: int = 0


def steps_key(config: PRMConfig) -> str:
    """The record key of the step texts the PRM reads under these settings."""
    return "annotated_steps" if config.execution_results else "steps"


def check_record(record: Any, config: PRMConfig, where: str) -> tuple[str, list[str], list[float]]:
    """``(prompt, steps, targets)`` of one record, or a ConfigError naming ``where``."""
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: expected an object, got {type(record).__name__}")
    key = steps_key(config)
    steps = record.get(key)
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        hint = (" (execution_results is true: the data must carry the annotated steps; set "
                "execution_results to false to train on plain steps)" if key == "annotated_steps"
                else "")
        raise ConfigError(f"{where}: missing or malformed {key!r}{hint}")
    prompt = record.get("prompt", "")
    if not isinstance(prompt, str):
        raise ConfigError(f"{where}: 'prompt' must be a string (the rendered prompt text)")
    label_key = "soft_labels" if config.label_type == "soft" else "labels"
    labels = record.get(label_key)
    if not isinstance(labels, list) or len(labels) != len(steps):
        raise ConfigError(f"{where}: {label_key!r} must be a list with one label per step "
                          f"({len(steps)} steps)")
    settings = record.get("settings")
    if config.execution_results and isinstance(settings, dict):
        for name in ("result_rows", "result_chars"):
            if name in settings and settings[name] != getattr(config, name):
                raise ConfigError(f"{where}: the data was annotated with {name}={settings[name]}"
                                  f" but the config says {getattr(config, name)}; the PRM must "
                                  "be trained on the annotation it will be scored with",
                                  key=name)
    targets = targets_for(labels, config.candidate_tokens, soft=config.label_type == "soft",
                          where=where)
    return prompt, steps, targets


def encode_records(records: list[Any], config: PRMConfig, tokenizer: Any, tag_id: int,
                   source: str) -> PRMExamples:
    """Encode checked records; steps past ``max_length`` are cut, records left empty dropped."""
    out = PRMExamples()
    for number, record in enumerate(records, 1):
        prompt, steps, targets = check_record(record, config, f"{source}, example {number}")
        encoded = encode(tokenizer, prompt, steps, tag_id, max_length=config.max_length)
        n = len(encoded.tag_positions)
        out.cut_steps += len(steps) - n
        if n == 0:
            out.dropped += 1
            continue
        out.examples.append({"input_ids": encoded.input_ids,
                             "tag_positions": encoded.tag_positions, "targets": targets[:n]})
        out.steps += n
        out.positives += sum(t >= 0.5 for t in targets[:n])
    return out


class PRMCollator:
    """Right-pads a batch; tag positions and targets go flat, with the row of each tag."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad = pad_token_id

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        rows: list[int] = []
        cols: list[int] = []
        targets: list[float] = []
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            mask[i, :n] = 1
            rows += [i] * len(b["tag_positions"])
            cols += b["tag_positions"]
            targets += b["targets"]
        return {"input_ids": ids, "attention_mask": mask, "tag_rows": torch.tensor(rows),
                "tag_cols": torch.tensor(cols), "targets": torch.tensor(targets)}


__all__ = ["PRMCollator", "PRMExamples", "check_record", "encode_records", "steps_key"]
