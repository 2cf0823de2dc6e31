"""Typed records for plugins and the components they provide, and the errors of lookup."""

from __future__ import annotations

import difflib
import enum
from dataclasses import dataclass, field
from typing import Any


class ComponentKind(str, enum.Enum):
    """The three kinds of component a plugin can provide."""

    REWARD_FUNCTION = "reward_function"
    REWARD_MANAGER = "reward_manager"
    ADVANTAGE_ESTIMATOR = "advantage_estimator"

    @property
    def label(self) -> str:
        """Human wording, e.g. ``advantage estimator``."""
        return self.value.replace("_", " ")


#: Which hook registers which kind.
HOOK_OF_KIND: dict[ComponentKind, str] = {
    ComponentKind.REWARD_FUNCTION: "rewardsql_reward_functions",
    ComponentKind.REWARD_MANAGER: "rewardsql_reward_managers",
    ComponentKind.ADVANTAGE_ESTIMATOR: "rewardsql_advantage_estimators",
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
            "components": [
                {"kind": c.kind.value, "name": c.name, "aliases": list(c.aliases)}
                for c in self.components
            ],
        }


class PluginError(Exception):
    """Base class of the plugin system's errors."""


class UnknownComponentError(PluginError, LookupError):
    """No component of that kind goes by that name."""

    def __init__(
        self, kind: ComponentKind, name: str, available: list[str], note: str = ""
    ) -> None:
        self.kind, self.name, self.available = kind, name, available
        close = difflib.get_close_matches(name, available, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(available) if available else "none (is the plugin installed?)"
        note = f" ({note})" if note else ""
        super().__init__(f"Unknown {kind.label} {name!r}.{hint} Available: {listing}.{note}")


class ComponentConflictError(PluginError):
    """Two plugins claim the same name for the same kind of component."""

    def __init__(self, kind: ComponentKind, name: str, first: str, second: str) -> None:
        self.kind, self.name, self.plugins = kind, name, (first, second)
        super().__init__(
            f"{kind.label} {name!r} is provided by two plugins: {first!r} and {second!r}; "
            f"uninstall one, or select plugins with REWARDSQL_PLUGINS."
        )
