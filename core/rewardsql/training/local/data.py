"""RL data in verl's parquet format: tokenized prompts, ground truth, and a resumable order.

A row has ``prompt`` (chat messages), ``reward_model.ground_truth``, a data-source column
(``data.reward_fn_key``) and ``extra_info``. The order of training batches is a pure function of
the seed and the global step, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rewardsql.errors import ConfigError


@dataclass(frozen=True)
class Prompt:
    """One tokenized prompt with what its reward needs."""

    input_ids: tuple[int, ...]
    text: str
    ground_truth: Any
    data_source: str
    extra_info: dict[str, Any] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """Parquet gives numpy arrays for lists and dicts with numpy values; make them plain."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_rows(files: Sequence[str], *, key: str) -> list[dict[str, Any]]:
    """All rows of the parquet (or JSON/JSONL) files, as plain dicts."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for name in files:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"no such file: {path}", key=key)
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix in (".jsonl", ".json"):
            frame = pd.read_json(path, lines=path.suffix == ".jsonl")
        else:
            raise ConfigError(f"expected a .parquet, .json or .jsonl file: {path}", key=key)
        rows.extend({k: _plain(v) for k, v in rec.items()} for rec in frame.to_dict("records"))
    return rows


def tokenize_prompts(
    rows: Sequence[Mapping[str, Any]], tokenizer: Any, *, prompt_key: str, reward_fn_key: str,
    max_prompt_length: int, truncation: str, filter_overlong: bool, max_samples: int,
    chat_template_kwargs: Mapping[str, Any], key: str,
) -> list[Prompt]:
    """Apply the chat template to each row's messages; filter or truncate long prompts."""
    prompts: list[Prompt] = []
    for i, row in enumerate(rows):
        if 0 <= max_samples <= len(prompts):
            break
        messages = row.get(prompt_key)
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise ConfigError(f"row {i}: column {prompt_key!r} must hold chat messages, "
                              f"got {type(messages).__name__}", key=key)
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False,
            **dict(chat_template_kwargs),
        )
        ids = list(ids["input_ids"] if isinstance(ids, Mapping) else ids)
        if len(ids) > max_prompt_length:
            if filter_overlong:
                continue
            if truncation == "error":
                raise ConfigError(
                    f"row {i}: prompt has {len(ids)} tokens, more than data.max_prompt_length="
                    f"{max_prompt_length} (raise it, or set data.filter_overlong_prompts or "
                    "data.truncation)", key=key)
            if truncation == "left":
                ids = ids[-max_prompt_length:]
            elif truncation == "right":
                ids = ids[:max_prompt_length]
            else:
                half = max_prompt_length // 2
                ids = ids[:half] + ids[len(ids) - (max_prompt_length - half):]
        reward_model = row.get("reward_model") or {}
        if not isinstance(reward_model, Mapping) or "ground_truth" not in reward_model:
            raise ConfigError(f"row {i}: column 'reward_model' has no 'ground_truth'", key=key)
        prompts.append(Prompt(
            input_ids=tuple(int(t) for t in ids),
            text=tokenizer.decode(ids, skip_special_tokens=False),
            ground_truth=reward_model["ground_truth"],
            data_source=str(row.get(reward_fn_key, "")),
            extra_info=dict(row.get("extra_info") or {}),
        ))
    if not prompts:
        raise ConfigError("no usable prompts (all filtered or the file is empty)", key=key)
    return prompts


def drawn_prompts(n_prompts: int, batch_size: int, batches: int, *, seed: int,
                  shuffle: bool) -> list[int]:
    """Indices of the prompts in the first ``batches`` batches drawn, in order (the prompts a run
    sampled from; with dynamic sampling, also those of batches it left out)."""
    return [i for b in range(batches)
            for i in batch_indices(n_prompts, batch_size, b, seed=seed, shuffle=shuffle)[2]]


def batch_indices(n_prompts: int, batch_size: int, step: int, *, seed: int,
                  shuffle: bool) -> tuple[int, int, list[int]]:
    """(epoch, batch in epoch, prompt indices) of global step ``step`` (0-based), drop_last."""
    per_epoch = n_prompts // batch_size
    if per_epoch == 0:
        raise ConfigError(f"{n_prompts} training prompts are fewer than one batch "
                          f"({batch_size})", key="data.train_batch_size")
    epoch, batch = divmod(step, per_epoch)
    order = np.arange(n_prompts)
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(n_prompts)
    return epoch, batch, order[batch * batch_size:(batch + 1) * batch_size].tolist()
