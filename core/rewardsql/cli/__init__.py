"""The ``rewardsql`` command line.

Each command group lives in its own module under ``rewardsql.cli`` and exposes ``app`` (a
``typer.Typer``) or ``register(root)``; add a module's name to ``COMMAND_GROUPS`` to mount it.
Modules import heavy libraries (torch, verl) inside their commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
from typing import Annotated

import typer

import rewardsql

#: Command modules, mounted in this order. Each mounts itself under its own name.
COMMAND_GROUPS: tuple[str, ...] = ("plugins",)

app = typer.Typer(
    name="rewardsql",
    help="Process-supervised RL for text-to-SQL: SFT, PRM training, GRPO on verl, plugins.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"rewardsql {rewardsql.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    """rewardsql: train text-to-SQL models with process rewards."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


for _module_name in COMMAND_GROUPS:
    _module = importlib.import_module(f"rewardsql.cli.{_module_name}")
    if hasattr(_module, "register"):
        _module.register(app)
    else:
        app.add_typer(_module.app, name=_module_name.replace("_", "-"))


def main() -> None:
    """Console-script entry point."""
    app()
