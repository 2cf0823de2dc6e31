"""``rewardsql sft``: supervised fine-tuning from a JSON/YAML config."""

from __future__ import annotations

from typing import Any

from rewardsql.training.config_command import DryRunReport, config_command


def _dry_run(settings: Any) -> DryRunReport:
    from rewardsql.training.sft.data import to_chat

    def describe(rows: list[dict[str, Any]], path: str) -> str:
        for i, row in enumerate(rows):
            to_chat(row, f"{path}, example {i}")
        return f"{len(rows)} examples"

    return DryRunReport(describe)


sft = config_command(
    name="SFT", override_example="learning_rate=2e-5 lora.r=8", checked="files",
    doc="Supervised fine-tuning with transformers: loss on response tokens only, resumable.",
    config_class="rewardsql.training.sft.config:SFTConfig", dry_run=_dry_run,
    trainer="rewardsql.training.sft.train:run_sft")
