"""SFT data: read prompt/response pairs or chat messages, tokenize with the chat template.

Accepted rows (JSON list, JSONL or parquet):

- ``{"messages": [..., {"role": "assistant", "content": ...}]}``: the last message is the
  response, everything before it the prompt;
- ``{"prompt": str | messages, "response": str}`` (``completion`` is accepted for ``response``);
- verl's RL format, ``{"prompt": messages, "reward_model": {"ground_truth": ...}}``: the gold
  answer becomes the response, so ``rewardsql data prepare`` output can be used for SFT as is.

Loss is on response tokens only: the labels of the prompt (the chat template's rendering of the
prompt messages with the generation prompt) are -100.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardsql.errors import ConfigError

log = logging.getLogger(__name__)
IGNORE_INDEX = -100

Messages = list[dict[str, str]]


def read_rows(path: str | Path, key: str = "train_file") -> list[dict[str, Any]]:
    """The rows of a JSON (list), JSONL or parquet file."""
    file = Path(path)
    suffix = file.suffix.lower()
    try:
        if suffix == ".parquet":
            import pandas as pd

            return pd.read_parquet(file).to_dict(orient="records")
        text = file.read_text(encoding="utf-8")
        if suffix == ".jsonl":
            rows = []
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as exc:
                        raise ConfigError(f"{file}: invalid JSON on line {number}: {exc}",
                                          key=key) from None
            return rows
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot read {file}: {exc}", key=key) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ConfigError(f"{file}: expected a JSON list of examples", key=key)
    return data


def _plain(value: Any) -> Any:
    """Parquet gives numpy arrays and dicts; make them lists and dicts."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_chat(row: Mapping[str, Any], where: str) -> tuple[Messages, str]:
    """(prompt messages, response text) of one row; ``where`` names it in errors."""
    row = _plain(row)
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: expected an object, got {type(row).__name__}")
    if "messages" in row:
        messages = _messages(row["messages"], where)
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise ConfigError(f"{where}: 'messages' must end with an assistant message after a "
                              "prompt")
        return messages[:-1], messages[-1]["content"]
    if "prompt" in row:
        prompt = row["prompt"]
        prompt_msgs = ([{"role": "user", "content": prompt}] if isinstance(prompt, str)
                       else _messages(prompt, where))
        response = row.get("response", row.get("completion"))
        if response is None and isinstance(row.get("reward_model"), dict):
            response = row["reward_model"].get("ground_truth")
        if not isinstance(response, str) or not response:
            raise ConfigError(f"{where}: no response: expected 'response', 'completion' or "
                              "'reward_model.ground_truth' text")
        return prompt_msgs, response
    raise ConfigError(f"{where}: expected 'messages' or 'prompt' and 'response', found keys "
                      f"{sorted(row)}")


def _messages(value: Any, where: str) -> Messages:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: messages must be a non-empty list")
    out = []
    for m in value:
        if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)):
            raise ConfigError(f"{where}: each message needs 'role' and 'content' strings, "
                              f"got {m!r}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


@dataclass
class Tokenized:
    """Tokenized examples and how many were dropped because the prompt filled max_length."""

    examples: list[dict[str, list[int]]]
    dropped: int
    truncated: int


def tokenize(rows: Sequence[Mapping[str, Any]], tokenizer, max_length: int,
             source: str = "data") -> Tokenized:
    """Chat-template each row; labels are -100 over the prompt, so loss is on the response."""
    prompts, fulls = [], []
    for i, row in enumerate(rows):
        prompt, response = to_chat(row, f"{source}, example {i}")
        prompts.append(_render(tokenizer, prompt, None))
        fulls.append(_render(tokenizer, prompt, response))
    # One batched call: much faster than tokenizing rows one by one
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(fulls, add_special_tokens=False)["input_ids"]
    examples, dropped, truncated, mismatched = [], 0, 0, 0
    for p, f in zip(prompt_ids, full_ids, strict=True):
        n = len(p)
        if f[:n] != p:
            # A template that renders the prompt differently once a reply follows: mask the
            # common prefix only
            mismatched += 1
            n = next((k for k, (a, b) in enumerate(zip(p, f, strict=False)) if a != b),
                     min(len(p), len(f)))
        if n >= max_length:
            dropped += 1
            continue
        if len(f) > max_length:
            truncated += 1
            f = f[:max_length]
        examples.append({"input_ids": f, "labels": [IGNORE_INDEX] * n + f[n:]})
    if mismatched:
        log.warning("%s: for %d examples the chat template renders the prompt differently when a "
                    "response follows; only their common prefix is masked", source, mismatched)
    if dropped:
        log.warning("%s: %d examples dropped: the prompt alone is max_length or longer", source,
                    dropped)
    if not examples:
        raise ConfigError(f"{source}: no example fits in max_length={max_length}",
                          key="max_length")
    return Tokenized(examples, dropped, truncated)


def _render(tokenizer, prompt: Messages, response: str | None) -> str:
    if getattr(tokenizer, "chat_template", None):
        if response is None:
            return tokenizer.apply_chat_template(prompt, tokenize=False,
                                                 add_generation_prompt=True)
        return tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": response}], tokenize=False)
    # A base model without a chat template: plain text, the response ended by EOS
    text = "\n\n".join(m["content"] for m in prompt) + "\n\n"
    return text if response is None else text + response + (tokenizer.eos_token or "")


class Collator:
    """Right-pads a batch: pad id for inputs, -100 for labels, a 0/1 attention mask."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad = pad_token_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
