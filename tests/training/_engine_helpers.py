"""Fixtures of the local-engine tests: the bundled example, a tiny model, and a policy that
answers some training questions right, so that GRPO groups get different rewards.

Everything is real: the example's SQLite databases and parquet files (rewardsql.demo.tiny), a tiny
Qwen2 model with its trained tokenizer, and a few steps of teacher forcing on two gold answers.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pandas as pd
import torch

#: Teacher forcing stops once the mean response-token loss is below this: the gold answer then
#: has a sizeable but not overwhelming probability, so sampled groups mix right and wrong answers.
TARGET_LOSS = 0.05
MAX_STEPS = 150


def build_fixture(root: Path) -> dict[str, Path]:
    """Example (quick scale), a 2-prompt training parquet, and a partly trained tiny model."""
    from rewardsql.demo.tiny import build_example, build_tiny_model

    example = build_example(root / "example", seed=0, scale="quick")
    base = build_tiny_model(root / "base_model", example.corpus(), seed=0, size="tiny")
    train = pd.read_parquet(example.train_parquet)
    # the two questions with the shortest gold SQL: the quickest to learn
    lengths = train["reward_model"].map(lambda rm: len(rm["ground_truth"]))
    picked = train.loc[lengths.sort_values(kind="stable").index[:2]].reset_index(drop=True)
    train_file = root / "train2.parquet"
    picked.to_parquet(train_file)
    dev = pd.read_parquet(example.dev_parquet).head(4)
    dev_file = root / "dev4.parquet"
    dev.to_parquet(dev_file)
    policy = root / "policy"
    if not (policy / "config.json").is_file():
        teach(base, picked, policy)
    return {"train": train_file, "dev": dev_file, "model": policy, "base": base,
            "db_root": example.db_root}


def teach(model_dir: Path, rows: pd.DataFrame, out: Path) -> None:
    """Teacher-force the gold answers of ``rows`` until the loss reaches TARGET_LOSS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    batch_ids, batch_labels = [], []
    for _, row in rows.iterrows():
        prompt = tokenizer.apply_chat_template(list(row["prompt"]), add_generation_prompt=True,
                                               tokenize=True, return_dict=False)
        answer = tokenizer(row["reward_model"]["ground_truth"] + "<|im_end|>")["input_ids"]
        batch_ids.append(list(prompt) + answer)
        batch_labels.append([-100] * len(prompt) + answer)
    width = max(len(x) for x in batch_ids)
    pad = tokenizer.pad_token_id or 0
    ids = torch.tensor([x + [pad] * (width - len(x)) for x in batch_ids])
    labels = torch.tensor([x + [-100] * (width - len(x)) for x in batch_labels])
    mask = (labels != -100) | (torch.arange(width) < torch.tensor(
        [len(x) for x in batch_ids]).unsqueeze(1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(MAX_STEPS):
        loss = model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss
        if loss.item() < TARGET_LOSS:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def engine_config(fixture: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    """A small GRPO config in verl's key names, as the demo builds one (no Hydra)."""
    config: dict[str, Any] = {
        "data": {"train_files": str(fixture["train"]), "val_files": str(fixture["dev"]),
                 "train_batch_size": 2, "max_prompt_length": 256, "max_response_length": 40,
                 "seed": 0},
        "actor_rollout_ref": {
            "model": {"path": str(fixture["model"])},
            "actor": {"optim": {"lr": 1e-4}, "ppo_mini_batch_size": 1,
                      "ppo_micro_batch_size_per_gpu": 4, "use_kl_loss": True,
                      "kl_loss_coef": 0.01, "entropy_coeff": 0.001},
            "rollout": {"n": 6, "temperature": 1.0, "seed": 0},
        },
        "algorithm": {"adv_estimator": "grpo_weighted", "weight_factor": 0.5},
        "reward": {"reward_manager": {"name": "sql_verifier"}},
        "rewardsql": {"reward_manager": {"db_root": str(fixture["db_root"]), "timeout": 5.0,
                                         "workers": 1}},
        "trainer": {"total_training_steps": 2, "save_freq": 1, "test_freq": -1,
                    "val_before_train": False, "resume_mode": "auto", "device": "cpu",
                    "logger": ["console", "tensorboard"]},
    }
    return merge(config, overrides)


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
