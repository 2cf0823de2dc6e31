"""The bundled example: a deterministic text-to-SQL data set and a tiny model built locally.

``build_example`` writes SQLite databases, Spider-format questions with Chain-of-CTEs gold SQL,
verl RL parquet files and SFT chat files; ``build_tiny_model`` trains a tokenizer on the example's
text and saves a small Qwen2-architecture causal LM. Both are seeded and cached. ``CONFIG_DIR``
holds the SFT and GRPO configs ``rewardsql demo`` runs on them.
"""

from pathlib import Path

from rewardsql.demo.tiny.example import DATA_SOURCE, TinyExample, build_example
from rewardsql.demo.tiny.model import build_tiny_model

#: ``sft_config.json`` and ``grpo.yaml``: the example's SFT and GRPO settings (package data).
CONFIG_DIR = Path(__file__).parent / "configs"

__all__ = ["CONFIG_DIR", "DATA_SOURCE", "TinyExample", "build_example", "build_tiny_model"]
