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
COMMAND_GROUPS: tuple[str, ...] = ("plugins", "train", "data", "sql", "sft", "demo")


def build_app(groups: tuple[str, ...] = COMMAND_GROUPS) -> typer.Typer:
    """The root app with every command group mounted.

    A group whose module fails to import (a missing extra, a bug) is mounted as a command that
    reports the error, so every other command keeps working.
    """
    root = typer.Typer(
        name="rewardsql",
        help="Process-supervised RL for text-to-SQL: SFT, GRPO on verl or locally, plugins.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    root.callback()(_root_options)
    for module_name in groups:
        command = module_name.replace("_", "-")
        try:
            module = importlib.import_module(f"rewardsql.cli.{module_name}")
        except Exception as exc:  # keep the rest of the CLI usable
            _mount_broken(root, command, f"{type(exc).__name__}: {exc}")
            continue
        if hasattr(module, "register"):
            module.register(root)
        else:
            root.add_typer(module.app, name=command)
    return root


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"rewardsql {rewardsql.__version__}")
        raise typer.Exit()


def _root_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    """rewardsql: train text-to-SQL models with process rewards."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _mount_broken(root: typer.Typer, command: str, error: str) -> None:
    @root.command(
        command,
        help=f"(unavailable: {error})",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )
    def broken() -> None:
        typer.echo(f"error: the `{command}` command could not be loaded: {error}", err=True)
        raise typer.Exit(1)


app = build_app()


def main() -> None:
    """Console-script entry point."""
    app()
