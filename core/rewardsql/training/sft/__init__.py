"""Supervised fine-tuning (``rewardsql sft``): config schema, data loading and training."""

from rewardsql.training.sft.config import LoraSettings, SFTConfig, check_paths
from rewardsql.training.sft.train import SFTResult, run_sft

__all__ = ["LoraSettings", "SFTConfig", "SFTResult", "check_paths", "run_sft"]
