"""The training wing's plugin: registers ``rewardsql train``, ``rewardsql export``, ``rewardsql
sft`` and ``rewardsql rm`` (the PRM group; ``rm train``, ``rm serve``)."""

from __future__ import annotations

from rewardsql.hookspec import Register, hookimpl
from rewardsql.training.export_command import export
from rewardsql.training.prm.serve import serve as rm_serve
from rewardsql.training.rm_command import app as rm_app
from rewardsql.training.sft_command import sft
from rewardsql.training.train_command import train


@hookimpl
def rewardsql_commands(register: Register) -> None:
    register("train", train, summary="RL training (GRPO, PPO, ...) on verl or the local engine.")
    register("export", export, summary="A verl checkpoint of the policy as a Hugging Face "
             "model directory.")
    register("sft", sft, summary="Supervised fine-tuning with transformers.")
    register("rm", rm_app, summary="The process reward model: train, serve (and label, with the "
             "SQL plugin).")
    register("rm serve", rm_serve, summary="Serve a PRM with vLLM for sql_prm and rerank.")
