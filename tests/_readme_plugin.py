"""A third-party plugin written exactly as the original RewardSQL README shows: a reward function
``sql_reward_function(port, db_id, question_id, solution_str, ground_truth, extra_info)`` and a
reward manager of verl's legacy shape, both registered with rewardsql's decorators in a module
that an entry point names. ``install`` writes it as an installed distribution (real dist-info).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

DIST = "readme-sql-plugin"
MODULE = "readme_sql_plugin"

SOURCE = '''
import os
import sqlite3

import torch

import rewardsql

#: (port, db_id, question_id) of every call, to show what was bound
CALLS = []


def _rows(db, sql):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return sorted(map(repr, conn.execute(sql).fetchall()))
    finally:
        conn.close()


@rewardsql.register_reward_function("readme_sql_reward")
def sql_reward_function(port, db_id, question_id, solution_str, ground_truth, extra_info):
    """1.0 when the response returns the gold rows (the README's signature)."""
    CALLS.append((port, db_id, question_id))
    db = os.path.join(extra_info["db_root"], db_id, db_id + ".sqlite")
    try:
        return float(_rows(db, solution_str) == _rows(db, ground_truth))
    except sqlite3.Error:
        return 0.0


@rewardsql.register_reward_manager("readme_manager")
class ReadmeRewardManager:
    """The README's manager: the score on the last response token (spread: config.dense)."""

    def __init__(self, tokenizer, num_examine, config, compute_score=None):
        self.tokenizer = tokenizer
        self.num_examine = num_examine
        self.config = config
        self.compute_score = compute_score

    def __call__(self, data):
        reward = torch.zeros(data.batch["responses"].shape, dtype=torch.float32)
        accs = []
        for i in range(len(data)):
            item = data[i]
            prompt_length = item.batch["prompts"].shape[-1]
            valid = int(item.batch["attention_mask"][prompt_length:].sum())
            text = self.tokenizer.decode(item.batch["responses"][:valid],
                                         skip_special_tokens=True)
            info = item.non_tensor_batch["extra_info"]
            truth = item.non_tensor_batch["reward_model"]["ground_truth"]
            if self.compute_score is not None:
                score = float(self.compute_score(
                    data_source=item.non_tensor_batch["data_source"], solution_str=text,
                    ground_truth=truth, extra_info=info))
            else:
                score = sql_reward_function(self.config.get("port", 0), info["db_id"],
                                            info.get("question_id"), text, truth, info)
            if self.config.get("dense", False) and valid:
                reward[i, :valid] = score / valid
            elif valid:
                reward[i, valid - 1] = score
            accs.append(score)
        return {"reward_tensor": reward, "reward_extra_info": {"acc": accs}}
'''


def install(root: Path) -> Path:
    """Write the plugin into ``root`` as pip would install it; return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{MODULE}.py").write_text(textwrap.dedent(SOURCE))
    info = root / f"{MODULE}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[rewardsql]\n{DIST} = {MODULE}\n")
    (info / "RECORD").write_text(f"{MODULE}.py,,\n{info.name}/METADATA,,\n")
    return root
