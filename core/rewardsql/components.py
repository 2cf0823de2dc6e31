"""Typed records for plugins and the components they provide."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from rewardsql import schema


class ComponentKind(str, enum.Enum):
    """The kinds of component a plugin can provide."""

    REWARD_FUNCTION = "reward_function"
    REWARD_MANAGER = "reward_manager"
    ADVANTAGE_ESTIMATOR = "advantage_estimator"
    COMMAND = "command"

    @property
    def label(self) -> str:
        """Human wording, e.g. ``advantage estimator``."""
        return self.value.replace("_", " ")


#: Which hook registers which kind.
HOOK_OF_KIND: dict[ComponentKind, str] = {
    ComponentKind.REWARD_FUNCTION: "rewardsql_reward_functions",
    ComponentKind.REWARD_MANAGER: "rewardsql_reward_managers",
    ComponentKind.ADVANTAGE_ESTIMATOR: "rewardsql_advantage_estimators",
    ComponentKind.COMMAND: "rewardsql_commands",
}


@dataclass(frozen=True)
class Component:
    """One registered component: what it is, what it is called, and who supplied it."""

    kind: ComponentKind
    name: str
    obj: Any = field(repr=False, compare=False)
    aliases: tuple[str, ...] = ()
    summary: str = ""
    plugin: str = ""
    version: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """The name followed by its aliases."""
        return (self.name, *self.aliases)


@dataclass
class PluginRecord:
    """One plugin as the manager saw it: loaded fine (``ok``) or not (``error``)."""

    name: str
    version: str
    components: list[Component] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> str:
        """``"ok"`` or ``"error"``."""
        return "error" if self.error else "ok"

    def to_json(self) -> dict[str, Any]:
        """The record as ``rewardsql plugins list --json`` prints it."""
        return {
            "plugin": self.name,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "components": [_component_json(c) for c in self.components],
        }


def _component_json(component: Component) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": component.kind.value, "name": component.name,
                           "aliases": list(component.aliases), "summary": component.summary}
    settings = getattr(component.obj, "Settings", None)
    if component.kind is ComponentKind.REWARD_MANAGER and settings is not None:
        out["settings"] = [
            {"name": f.name, "type": f.type, "default": f.default, "doc": f.doc}
            for f in schema.describe(settings)
        ]
    return out
