"""``rewardsql data``: turn text-to-SQL datasets into training data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rewardsql.errors import RewardSQLError

app = typer.Typer(help="Prepare text-to-SQL data for training.", no_args_is_help=True)


@app.command("prepare")
def prepare_command(
    fmt: Annotated[str, typer.Option("--format", help="Input format: spider or bird.")],
    input_path: Annotated[
        Path, typer.Option("--input", help="Questions: Spider train_spider.json, BIRD train.json.")
    ],
    db_root: Annotated[
        Path, typer.Option(help="Databases, laid out as DB_ROOT/<db_id>/<db_id>.sqlite.")
    ],
    output: Annotated[Path, typer.Option(help="The training parquet to write.")],
    tables: Annotated[
        Path | None,
        typer.Option(help="tables.json: only the databases it lists are used (the schema is "
                          "always read from the database itself)."),
    ] = None,
    val_fraction: Annotated[
        float, typer.Option(help="Fraction of questions held out for validation.")
    ] = 0.0,
    val_output: Annotated[
        Path | None,
        typer.Option(help="Where the validation split goes (default: val.parquet beside "
                          "--output)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the validation split.")] = 0,
    data_source: Annotated[
        str | None, typer.Option(help="The data_source column (default: the format's name).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per gold query.")] = 30.0,
    sample_values: Annotated[
        int, typer.Option(help="Example values shown per column in the prompt.")
    ] = 3,
    drop_failing_gold: Annotated[
        bool, typer.Option(help="Leave out questions whose gold query fails (default: keep).")
    ] = False,
    model: Annotated[
        Path | None,
        typer.Option(help="A model directory (its tokenizer and config.json): warn, with the "
                          "count, when prompts are longer than its context."),
    ] = None,
) -> None:
    """Spider/BIRD questions -> verl RL parquet: prompt (Chain-of-CTEs instructions, schema,
    sample values, question, BIRD evidence), data_source, reward_model.ground_truth, extra_info.

    Every gold query is executed; failures are reported. Questions whose database is missing are
    reported and left out.
    """
    from rewardsql_sql_reward.data.prepare import prepare

    try:
        report = prepare(
            fmt, input_path, db_root, output, tables=tables, val_fraction=val_fraction,
            val_output=val_output, seed=seed, data_source=data_source, timeout=timeout,
            sample_values=sample_values, drop_failing_gold=drop_failing_gold, model=model,
        )
    except OSError as exc:
        raise RewardSQLError(f"{type(exc).__name__}: {exc}") from None
    for line in report.lines():
        typer.echo(line)
    warning = report.prompt_fit.warning() if report.prompt_fit is not None else None
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    if sum(report.written.values()) == 0:
        raise RewardSQLError("no question could be prepared")
