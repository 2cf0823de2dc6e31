"""Questions and a policy for the PRM commands (``rm label``, ``rerank``): Spider/BIRD JSON or
verl parquet questions, and sampling from a Hugging Face causal LM with transformers."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardsql.errors import ConfigError, require

from rewardsql_sql_reward.data.prepare import GOLD_KEY, database_path
from rewardsql_sql_reward.data.prepare import load_questions as load_json_questions
from rewardsql_sql_reward.data.prompts import build_messages, schema_ddl


@dataclass(frozen=True)
class Question:
    """One question: its id, position, database, chat messages and gold SQL."""

    question_id: Any
    index: int
    db_id: str
    messages: list[dict[str, str]]
    gold: str


def _json_format(path: Path) -> str:
    import json

    try:
        first = json.loads(path.read_text(encoding="utf-8"))[0]
    except (ValueError, IndexError, KeyError, TypeError):
        return "spider"  # load_questions reports what is wrong
    return "bird" if isinstance(first, dict) and "SQL" in first else "spider"


def load_questions(path: Path, db_root: Path, *, sample_values: int = 3) -> list[Question]:
    """Questions of a Spider/BIRD JSON file (prompts built as ``rewardsql data prepare`` does)
    or of a verl parquet file (its prompts as they are)."""
    if not path.is_file():
        raise ConfigError("no such file", source=path)
    if path.suffix == ".parquet":
        require("pandas", "reading verl parquet questions", "data")
        import pandas as pd

        out = []
        for i, row in enumerate(pd.read_parquet(path).to_dict(orient="records")):
            try:
                info = row["extra_info"]
                messages = [dict(m) for m in row["prompt"]]
                out.append(Question(info.get("question_id", i), i, str(info["db_id"]), messages,
                                    str(row["reward_model"]["ground_truth"])))
            except (KeyError, TypeError) as exc:
                raise ConfigError(f"row {i}: not a verl RL row (prompt, reward_model."
                                  f"ground_truth, extra_info.db_id): missing {exc}",
                                  source=path) from None
        return out
    fmt = _json_format(path)
    schemas: dict[str, str] = {}
    out = []
    for i, item in enumerate(load_json_questions(path, fmt)):
        db_id = item["db_id"]
        if db_id not in schemas:
            db = database_path(db_root, db_id)
            if not db.is_file():
                raise ConfigError(f"question {i}: no database {db}", source=path)
            schemas[db_id] = schema_ddl(db, sample_values=sample_values)
        out.append(Question(item.get("question_id", i), i, db_id,
                            build_messages(schemas[db_id], item["question"],
                                           item.get("evidence")), item[GOLD_KEY[fmt]].strip()))
    return out


def stable_seed(*parts: Any) -> int:
    """A seed from values, the same in every process (``hash`` of a str is salted)."""
    return zlib.crc32(repr(parts).encode("utf-8"))


def _verl_checkpoint_hint(path: Path) -> str:
    """What to do when ``path`` is one of verl's checkpoints (a run's output directory,
    ``global_step_N`` or its ``actor/``): its FSDP shards are not a model directory."""
    if any((path / name).is_file() for name in (
            "latest_checkpointed_iteration.txt", "fsdp_config.json", "actor/fsdp_config.json")):
        return (f"; it is a verl checkpoint: `rewardsql export --checkpoint {path}` makes one "
                "(`rewardsql train` writes OUT/hf_model when it ends)")
    return ""


class Policy:
    """A Hugging Face causal LM that samples SQL responses (transformers, CPU or GPU).

    Every call is seeded, so the same question, prefix and seed give the same text in a later
    run (a resumed ``rm label`` repeats nothing and changes nothing).
    """

    def __init__(self, model_dir: str | Path, *, device: str = "auto", temperature: float = 1.0,
                 max_new_tokens: int = 256, batch_size: int = 16) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path} is not a Hugging Face model directory (no config.json)"
                              + _verl_checkpoint_hint(path), source="--policy")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = "auto" if device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        self.device = device
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        ends = [self.tokenizer.eos_token_id,
                self.tokenizer.convert_tokens_to_ids("<|im_end|>")]
        self.stop = sorted({e for e in ends if isinstance(e, int) and e >= 0
                            and e != self.tokenizer.unk_token_id})
        self.name = str(path)

    def prompt_text(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt as the policy reads it (its chat template, ready for the answer)."""
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=True)

    def generate(self, text: str, n: int, *, seed: int, greedy: bool = False) -> list[str]:
        """``n`` continuations of ``text`` (sampled at ``temperature``, or greedy)."""
        import torch

        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")
        out: list[str] = []
        for start in range(0, n, self.batch_size):
            count = min(self.batch_size, n - start)
            torch.manual_seed(seed + start)
            with torch.inference_mode():
                tokens = self.model.generate(
                    input_ids=ids["input_ids"].to(self.device),
                    attention_mask=ids["attention_mask"].to(self.device),
                    do_sample=not greedy, temperature=None if greedy else self.temperature,
                    top_p=None, top_k=None, num_return_sequences=count,
                    max_new_tokens=self.max_new_tokens, eos_token_id=self.stop or None,
                    pad_token_id=self.tokenizer.pad_token_id)
            width = ids["input_ids"].shape[1]
            out += self.tokenizer.batch_decode(tokens[:, width:], skip_special_tokens=True)
        return out


__all__ = ["Policy", "Question", "load_questions", "stable_seed"]
