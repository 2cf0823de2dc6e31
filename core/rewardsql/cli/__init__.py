"""The ``rewardsql`` command line: a shell that mounts every command plugins register.

Commands come through the ``rewardsql_commands`` hook, rewardsql's own included (its ``plugins``
commands, the training wing's ``train`` and ``sft``, the demo's ``demo``). A name with a
space, ``"rm label"``, adds a command to the group ``rm``, whichever plugin registered it. A
command a plugin registers under a name that is taken, or a plugin that fails to load, is
reported by ``rewardsql plugins list``; every other command keeps working. Errors of the
:mod:`rewardsql.errors` hierarchy become one line, ``error: ...``, and their exit code, here and
nowhere else.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

import rewardsql
from rewardsql.components import ComponentKind
from rewardsql.errors import RewardSQLError, RewardSQLWarning, broken_import_error
from rewardsql.registry import get_registry


def build_app() -> typer.Typer:
    """The root app with every registered command mounted, in name order."""
    root = typer.Typer(
        name="rewardsql",
        cls=_ReportingGroup,
        help="Process-supervised RL for text-to-SQL: SFT, GRPO on verl or locally, plugins.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    root.callback()(_root_options)
    commands = get_registry().components(ComponentKind.COMMAND)
    groups: dict[str, typer.Typer] = {}
    # "rm label" joins the group "rm", whoever registered it: plain names first
    for component in sorted(commands, key=lambda c: (" " in c.name, c.name)):
        group_name, _, sub = component.name.partition(" ")
        if sub:
            group = groups.get(group_name)
            if group is None:
                group = groups[group_name] = typer.Typer(no_args_is_help=True)
                root.add_typer(group, name=group_name)
            _mount(group, sub, component.obj, component.summary)
        else:
            _mount(root, group_name, component.obj, component.summary)
            if isinstance(component.obj, typer.Typer):
                groups[group_name] = component.obj
    return root


def _mount(parent: typer.Typer, name: str, command: Any, summary: str) -> None:
    if isinstance(command, typer.Typer):
        parent.add_typer(command, name=name, help=command.info.help or summary or None)
    else:
        parent.command(name, help=(command.__doc__ or summary or None),
                       short_help=summary or None)(command)


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


class _ReportingGroup(TyperGroup):
    """The root group: a :class:`~rewardsql.errors.RewardSQLError` raised by any command becomes
    one line on stderr and the error's exit code (no traceback). So does an import failure
    caused by a broken torch companion (:func:`~rewardsql.errors.broken_import_error`): it
    breaks transformers wherever a command first touches a model class or the Trainer, so it is
    recognised here, once for every command."""

    def invoke(self, ctx: Any) -> Any:
        try:
            with warnings.catch_warnings():  # restores Python's own display afterwards
                warnings.showwarning = _one_line_warnings(warnings.showwarning)
                return super().invoke(ctx)
        except RewardSQLError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except Exception as exc:
            error = broken_import_error(exc)
            if error is None:
                raise
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(error.exit_code) from None


def _one_line_warnings(show: Callable[..., None]) -> Callable[..., None]:
    """``show`` (``warnings.showwarning``) with rewardsql's own warnings as one line,
    ``warning: ...``; any other warning is shown as before."""

    def show_warning(message: Warning | str, category: type[Warning], *args: Any,
                     **kwargs: Any) -> None:
        if issubclass(category, RewardSQLWarning):
            typer.echo(f"warning: {message}", err=True)
        else:
            show(message, category, *args, **kwargs)

    return show_warning


def __getattr__(name: str) -> Any:
    if name == "app":  # built on use: it mounts the commands of the plugins loaded now
        return build_app()
    raise AttributeError(name)


_as_program = False


def running_as_program() -> bool:
    """Whether this process is the ``rewardsql`` program (not a caller running the app in its
    own process, such as a test): only then may a command restart it."""
    return _as_program


def main() -> None:
    """Console-script entry point."""
    global _as_program
    _as_program = True
    build_app()()
