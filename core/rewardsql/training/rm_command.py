"""``rewardsql rm``: the process reward model. ``rm train`` is here; the SQL plugin adds
``rm label`` (step labels by execution) to the same group."""

from __future__ import annotations

from typing import Any

import typer

from rewardsql.training.config_command import DryRunReport, config_command

app = typer.Typer(help="The process reward model (PRM): train it on step labels.",
                  no_args_is_help=True)


def _dry_run(settings: Any) -> DryRunReport:
    from rewardsql.training.prm.data import check_record

    def describe(rows: list[dict[str, Any]], path: str) -> str:
        steps = positives = 0
        for i, row in enumerate(rows, 1):
            _, _, targets = check_record(row, settings, f"{path}, example {i}")
            steps += len(targets)
            positives += sum(t >= 0.5 for t in targets)
        return f"{len(rows)} examples, {steps} steps, {positives} \"+\""

    return DryRunReport(describe, closing=(
        f"the tokenizer must encode {settings.step_tag!r} and each of "
        f"{list(settings.candidate_tokens)} to one token (checked when training)",))


train = config_command(
    name="PRM", override_example="label_type=soft lora.r=8", checked="data",
    doc='Train a PRM: cross-entropy over the "+"/"-" logits at each step tag (hard or soft).',
    config_class="rewardsql.training.prm.config:PRMConfig", dry_run=_dry_run,
    trainer="rewardsql.training.prm.trainer:run_prm")
app.command("train")(train)
