"""A command the plugin adds to the CLI: ``rewardsql example-reward overlap``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from rewardsql_example_reward.reward import clause_overlap

app = typer.Typer(help="Tools of the example plugin.", no_args_is_help=True)


@app.command("overlap")
def overlap(
    response: Annotated[str, typer.Argument(help="The SQL to score.")],
    gold: Annotated[str, typer.Option("--gold", help="The gold SQL.")],
) -> None:
    """Print the clause overlap of RESPONSE with the gold SQL as JSON."""
    typer.echo(json.dumps(clause_overlap("cli", response, gold)))
