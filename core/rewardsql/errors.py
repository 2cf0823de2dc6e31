"""The one error hierarchy of rewardsql.

Every error a user can cause or meet derives from :class:`RewardSQLError`, which carries the exit
code the CLI uses: 2 for usage and configuration errors (fix the command or the file), 1 for
failures at run time (the work started and could not finish). The CLI turns them into one line,
``error: <message>``, in one place (:func:`rewardsql.cli.main`); the message names the file, key
or value at fault.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from typing import Any


class RewardSQLError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class ConfigError(RewardSQLError):
    """A config file, option or value is missing, malformed or not allowed.

    ``source`` names the file (or option) and ``key`` the dotted key at fault; both are put in
    front of the message.
    """

    exit_code = 2

    def __init__(
        self, message: str, *, source: str | os.PathLike[str] | None = None, key: str | None = None
    ) -> None:
        self.source = str(source) if source is not None else None
        self.key = key
        self.message = message
        where = ": ".join(p for p in (self.source, f"key {key!r}" if key else None) if p)
        super().__init__(f"{where}: {message}" if where else message)

    def at(self, *, source: str | os.PathLike[str] | None = None,
           key: str | None = None) -> ConfigError:
        """The same error, placed at ``source`` and ``key`` where it had none."""
        return type(self)(self.message, source=self.source or source, key=self.key or key)


class MissingDependencyError(ConfigError):
    """What was asked for needs an optional package that is not installed; the message says
    which extra to install."""


class PluginError(ConfigError):
    """A plugin could not be loaded, or a component is unknown or claimed twice (a config names
    it, so it is a configuration error)."""


class UnknownComponentError(PluginError, LookupError):
    """No component of that kind goes by that name."""

    def __init__(self, kind: Any, name: str, available: list[str], note: str = "",
                 *, key: str | None = None) -> None:
        self.kind, self.name, self.available, self.note = kind, name, available, note
        close = difflib.get_close_matches(name, available, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(available) if available else "none (is the plugin installed?)"
        extra = f" ({note})" if note else ""
        super().__init__(f"Unknown {kind.label} {name!r}.{hint} Available: {listing}.{extra}",
                         key=key)

    def at(self, *, source: str | os.PathLike[str] | None = None,
           key: str | None = None) -> UnknownComponentError:
        return UnknownComponentError(self.kind, self.name, self.available, self.note,
                                     key=self.key or key)


class ComponentConflictError(PluginError):
    """Two plugins claim the same name for the same kind of component."""

    def __init__(self, kind: Any, name: str, first: str, second: str,
                 *, key: str | None = None) -> None:
        self.kind, self.name, self.plugins = kind, name, (first, second)
        super().__init__(
            f"{kind.label} {name!r} is provided by two plugins: {first!r} and {second!r}; "
            f"uninstall one, or select plugins with REWARDSQL_PLUGINS.", key=key
        )

    def at(self, *, source: str | os.PathLike[str] | None = None,
           key: str | None = None) -> ComponentConflictError:
        return ComponentConflictError(self.kind, self.name, *self.plugins, key=self.key or key)


class LaunchError(RewardSQLError):
    """Training cannot start or go on here (no GPU, no engine); the message says what to do."""


def require(module: str, purpose: str, extra: str) -> None:
    """Raise :class:`MissingDependencyError` when ``module`` is not importable.

    ``purpose`` says what needs it, ``extra`` which extra of ``rewardsql`` installs it.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent package missing, or blocked (sys.modules None)
        spec = None
    if spec is None:
        raise MissingDependencyError(
            f"{purpose} needs {module}, which is not installed here: pip install "
            f"'rewardsql[{extra}]' (from a checkout: pip install -c constraints.txt -e "
            f"'.[{extra}]')")


def require_verl(purpose: str) -> None:
    """Raise :class:`MissingDependencyError` naming ``purpose`` when verl is not installed."""
    require("verl", purpose, "verl")
