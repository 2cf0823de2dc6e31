"""``rewardsql plugins``: list installed plugins; check that their components keep the contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rewardsql.components import Component, PluginRecord
from rewardsql.hookspec import Register, hookimpl
from rewardsql.registry import get_registry
from rewardsql.section import MANAGER_SETTINGS_KEY

app = typer.Typer(help="List and check rewardsql plugins.", no_args_is_help=True)


@hookimpl
def rewardsql_commands(register: Register) -> None:
    """rewardsql's own plugin: the ``plugins`` commands."""
    register("plugins", app, summary="List and check rewardsql plugins.")


def _component_cell(component: Component) -> str:
    aliases = f" (aliases: {', '.join(component.aliases)})" if component.aliases else ""
    summary = f": {component.summary}" if component.summary else ""
    return f"{component.kind.value} {component.name}{aliases}{summary}"


def _table(records: list[PluginRecord]) -> str:
    rows = [("PLUGIN", "VERSION", "STATUS", "COMPONENTS")]
    for record in records:
        cells = [_component_cell(c) for c in record.components] or ["-"]
        rows.append((record.name, record.version or "-", record.status, cells[0]))
        rows.extend(("", "", "", cell) for cell in cells[1:])
        if record.error:
            rows.append(("", "", "", f"error: {record.error}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ).rstrip()


@app.command("list")
def list_plugins(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array instead of a table.")
    ] = False,
    builtin: Annotated[
        bool, typer.Option("--builtin", help="Also list rewardsql's own plugin (its commands).")
    ] = False,
) -> None:
    """List installed plugins, their status and the components each provides.

    A plugin that fails to load is listed with its error; the command still exits 0.
    """
    records = get_registry().plugin_records(builtin=builtin)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in records], indent=2))
    elif not records:
        typer.echo("No plugins installed.")
    else:
        typer.echo(_table(records))


@app.command("check")
def check_plugins(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Component or plugin names to check (default: every component)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="A training config: reward managers are built with its "
        f"{MANAGER_SETTINGS_KEY} settings, reward functions called with its "
        "reward.custom_reward_function.reward_kwargs.")] = None,
) -> None:
    """Call each component exactly as the trainers do, on a small synthetic batch.

    Exits non-zero, naming the component and the point that failed, when any check fails, a
    named plugin could not be loaded, or a name matches nothing.
    """
    from rewardsql.checks import CheckInputs, check_component

    inputs = CheckInputs.from_config_file(config) if config is not None else CheckInputs()
    records = get_registry().plugin_records(builtin=True)
    wanted = set(names or ())
    components = [
        c for r in records for c in r.components if not wanted or wanted & {r.name, *c.names}
    ]
    broken = [r for r in records if r.error and (not wanted or r.name in wanted)]
    unknown = sorted(wanted - {r.name for r in records} - {n for c in components for n in c.names})
    results = [check_component(c, inputs) for c in components]
    if as_json:
        payload = [
            {
                "plugin": r.component.plugin,
                "kind": r.component.kind.value,
                "name": r.component.name,
                "ok": r.ok,
                "detail": r.detail,
            }
            for r in results
        ]
        typer.echo(json.dumps(payload, indent=2))
    else:
        for result in results:
            c = result.component
            mark = "ok  " if result.ok else "FAIL"
            typer.echo(f"{mark} {c.kind.value} {c.name} [{c.plugin}]: {result.detail}")
    for record in broken:
        typer.echo(f"error: plugin {record.name!r}: {record.error}", err=True)
    for name in unknown:
        typer.echo(f"error: no plugin or component named {name!r}", err=True)
    failed = [r for r in results if not r.ok]
    for result in failed:
        c = result.component
        typer.echo(
            f"error: {c.kind.label} {c.name!r} ({c.plugin}) failed: {result.detail}", err=True
        )
    # a named plugin that registered nothing (e.g. its decorators filed nowhere) is a failure
    empty = sorted(n for n in wanted if not any(n in {c.plugin, *c.names} for c in components)
                   and n not in unknown and not any(r.name == n and r.error for r in records))
    for name in empty:
        typer.echo(f"error: {name} provides no component to check", err=True)
    if failed or broken or unknown or empty:
        raise typer.Exit(1)
    if not results:
        typer.echo("No components to check.")
