"""``rewardsql sql``: SQL execution tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rewardsql.errors import ConfigError
from rewardsql.io import atomic_write

from rewardsql_sql_reward.data.evalfiles import EvalFileError, pair_up, score_pairs, summary
from rewardsql_sql_reward.verifier import MODES, SQLVerifier
from rewardsql_sql_reward.verifier.budget import Budget

app = typer.Typer(help="SQL execution: score predictions by execution accuracy.",
                  no_args_is_help=True)

#: Runs with at least this many questions show a progress bar.
PROGRESS_FROM = 500


@app.command("score")
def score(
    db_root: Annotated[Path, typer.Option(
        "--db-root", help="Databases as DIR/<db_id>/<db_id>.sqlite.")],
    gold: Annotated[Path, typer.Option("--gold", help="dev.json or 'SQL<TAB>db_id' lines.")],
    pred: Annotated[Path, typer.Option(
        "--pred", help="One SQL per line in gold order, or a BIRD predict_dev.json.")],
    mode: Annotated[str, typer.Option(
        "--mode", help="bird (sets of rows), multiset (bags), ordered (lists if ORDER BY).")
    ] = "bird",
    output: Annotated[Path | None, typer.Option(
        "--output", help="Write one JSON object per question (JSON lines).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per query.")] = 30.0,
    workers: Annotated[int | None, typer.Option(
        "--workers",
        help="Worker processes (default: $REWARDSQL_SQL_WORKERS, else the CPU count).")] = None,
    training_budget: Annotated[bool, typer.Option(
        "--training-budget",
        help="Use the training-time budget (a prediction may run max(1 s, 10 x its gold "
             "query's time), at most --timeout; 256 questions at most 2 x --timeout) instead of "
             "the official fixed timeout per query.")] = False,
) -> None:
    """Execution accuracy of a text-to-SQL prediction file against gold SQL."""
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    if not db_root.is_dir():
        raise ConfigError(f"--db-root {db_root}: not a directory")
    if timeout <= 0 or (workers is not None and workers < 1):
        raise ConfigError("--timeout and --workers must be positive")
    try:
        pairs = pair_up(gold, pred)
    except EvalFileError as exc:
        raise ConfigError(str(exc)) from None

    from tqdm import tqdm

    budget = Budget() if training_budget else None

    with SQLVerifier(db_root, timeout=timeout, workers=workers, mode=mode) as verifier, tqdm(
        total=len(pairs), unit="q", desc="scoring", disable=True if len(pairs) < PROGRESS_FROM
        else None,
    ) as bar:
        verdicts = score_pairs(verifier, pairs, mode=mode, progress=bar.update, budget=budget)
    result = summary(verdicts)
    result["timeouts"] = (budget.describe(timeout) if budget is not None
                          else f"fixed: {timeout:g} s per query (the official evaluation rule)")
    if output is not None:
        with atomic_write(output) as handle:
            for i, ((question, _), verdict) in enumerate(zip(pairs, verdicts, strict=True)):
                handle.write(json.dumps({"index": i, "db_id": question.db_id,
                                         "correct": verdict.correct, "status": verdict.status,
                                         "error": verdict.error}) + "\n")
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"execution accuracy: {result['accuracy']:.2%} ({result['correct']} of "
               f"{result['total']}, mode {mode})")
    for status, count in result["status_counts"].items():
        typer.echo(f"  {status:<12}{count}")
    typer.echo(f"timeouts: {result['timeouts']}")
