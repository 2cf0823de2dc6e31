"""The plugin registry: finding, loading and indexing plugins.

Plugins are found through the entry-point group ``rewardsql``. Each entry point is loaded on its
own: one that fails to import, implements a misspelt hook, or raises while registering is recorded
with its error and logged once, and the others still load. Components are indexed by kind and by
every name and alias; a name claimed by two plugins is recorded as a conflict and looking it up
raises an error naming both distributions.

rewardsql's own parts are plugins too (conda's model): the ``rewardsql`` distribution declares
entry points for its ``plugins`` commands, its training wing and its demo, which always load,
whatever ``REWARDSQL_PLUGINS`` selects. Whoever must follow the registry (the verl bridge)
subscribes with :func:`on_change`; the registry imports none of them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any

import pluggy

from rewardsql.components import HOOK_OF_KIND, Component, ComponentKind, PluginRecord
from rewardsql.errors import ComponentConflictError, UnknownComponentError
from rewardsql.hookspec import PROJECT_NAME, RewardSQLSpecs
from rewardsql.legacy import is_legacy_manager, legacy_manager_class
from rewardsql.rewards import RewardManager

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "rewardsql"
PLUGINS_ENV = "REWARDSQL_PLUGINS"
#: The pseudo-plugin that owns components registered with the decorators in scripts.
LOCAL_PLUGIN = "<local>"
#: The distribution whose entry points always load: rewardsql's own commands.
BUILTIN_DISTRIBUTION = "rewardsql"


class Registry(pluggy.PluginManager):
    """The plugin registry: pluggy's plugin manager (the hooks) plus an index of every
    registered component. "Manager" in rewardsql means a reward manager; this is the registry."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(RewardSQLSpecs)
        self.records: dict[str, PluginRecord] = {}
        self.selection = "auto"
        self._index: dict[ComponentKind, dict[str, Component]] = {k: {} for k in ComponentKind}
        self._conflicts: dict[tuple[ComponentKind, str], ComponentConflictError] = {}
        self._index_lock = threading.RLock()

    # -- loading -----------------------------------------------------------------------------

    def load_entrypoints(self, selection: str | None = None) -> None:
        """Load every selected entry point of the group ``rewardsql``.

        ``selection`` is ``auto`` (all), ``none``, or a comma-separated list of entry-point or
        distribution names; by default it is read from ``REWARDSQL_PLUGINS``.
        """
        self.selection = (selection or os.environ.get(PLUGINS_ENV) or "auto").strip()
        wanted = None
        if self.selection.lower() == "none":
            wanted = set()
        elif self.selection.lower() != "auto":
            wanted = {_normalize(s) for s in self.selection.split(",") if s.strip()}
        matched: set[str] = set()
        for ep in _entry_points():
            dist_name = ep.dist.name if ep.dist else ep.name
            names = {_normalize(ep.name), _normalize(dist_name)}
            builtin = _normalize(dist_name) == BUILTIN_DISTRIBUTION
            if wanted is not None and not wanted & names and not builtin:
                continue
            matched |= names
            version = ep.dist.version if ep.dist else ""
            record = self.records.setdefault(dist_name, PluginRecord(dist_name, version))
            try:
                plugin = ep.load()
            except Exception as exc:  # any import-time failure of third-party code
                self._fail(record, f"cannot import {ep.value!r}: {type(exc).__name__}: {exc}")
                continue
            self.add_plugin(plugin, record, plugin_id=f"{dist_name}:{ep.name}")
        for name in sorted((wanted or set()) - matched):
            logger.warning("%s names %r, which matches no installed plugin", PLUGINS_ENV, name)

    def add_plugin(self, plugin: object, record: PluginRecord, plugin_id: str) -> None:
        """Register one plugin object with pluggy, then collect and index its components."""
        if self.is_registered(plugin):  # one module named by two entry points
            self._fail(record, f"{plugin_id}: {plugin!r} is already loaded by another entry point")
            return
        try:
            self.register(plugin, name=plugin_id)
            self.check_pending()
        except (pluggy.PluginValidationError, ValueError) as exc:
            if self.is_registered(plugin):
                self.unregister(plugin)
            self._fail(record, f"invalid plugin {plugin_id!r}: {exc}")
            return
        collected: list[Component] = []
        try:
            for kind, hook_name in HOOK_OF_KIND.items():
                for impl in getattr(self.hook, hook_name).get_hookimpls():
                    if impl.plugin is not plugin:
                        continue
                    if impl.hookwrapper or impl.wrapper:
                        raise TypeError(f"{hook_name} must not be a hook wrapper")
                    register = self._registrar(kind, record, collected)
                    impl.function(**({"register": register} if impl.argnames else {}))
        except Exception as exc:  # a plugin's hook raised: keep none of its components
            self.unregister(plugin)
            self._fail(record, f"{plugin_id} failed while registering: {type(exc).__name__}: {exc}")
            return
        for component in collected:
            self.add_component(component, record)

    def _registrar(
        self, kind: ComponentKind, record: PluginRecord, out: list[Component]
    ) -> Callable[..., None]:
        def register(name: str, obj: Any, aliases: Iterable[str] = (), summary: str = "") -> None:
            out.append(make_component(kind, name, obj, aliases, summary, record))

        return register

    def add_component(self, component: Component, record: PluginRecord) -> None:
        """Index a component under its name and aliases.

        A component claiming a name another plugin already has is not indexed at all; the name
        is recorded as a conflict (looking it up raises, naming both) and both plugins are marked.
        The local pseudo-plugin may replace its own components (re-running a notebook cell).
        """
        with self._index_lock:
            if record.error and _droppable(record):  # a failed plugin: listed, never used
                record.components = [c for c in record.components if not (
                    c.kind == component.kind and c.name == component.name)] + [component]
                return
            index = self._index[component.kind]
            clashes = [
                index[name]
                for name in component.names
                if name in index and not (index[name].plugin == component.plugin == LOCAL_PLUGIN)
            ]
            if clashes and component.plugin == LOCAL_PLUGIN:
                other = clashes[0]
                shared = next(n for n in component.names if n in other.names)
                raise ComponentConflictError(component.kind, shared, other.plugin, LOCAL_PLUGIN)
            for other in clashes:
                if _normalize(other.plugin) == BUILTIN_DISTRIBUTION:  # loaded first; it stays
                    taken = sorted(set(component.names) & set(other.names))
                    self._fail(record, f"{component.kind.label} {', '.join(map(repr, taken))}: "
                                       "taken by rewardsql itself; choose another name")
                    continue
                for name in set(component.names) & set(other.names):
                    conflict = ComponentConflictError(
                        component.kind, name, other.plugin, component.plugin
                    )
                    self._conflicts[(component.kind, name)] = conflict
                    self._fail(record, str(conflict))
                    self._fail(self.records[other.plugin], str(conflict))
            if not clashes:
                for name in component.names:
                    index[name] = component
            record.components = [
                c
                for c in record.components
                if not (c.kind == component.kind and c.name == component.name)
            ] + [component]

    def _fail(self, record: PluginRecord, message: str) -> None:
        """Mark the plugin ``error`` and stop using every component it registered: a plugin
        that failed in part may be missing what its working parts rely on."""
        if record.error and message in record.error:
            return
        record.error = f"{record.error}; {message}" if record.error else message
        logger.warning("rewardsql plugin %r: %s", record.name, message)
        if _droppable(record):
            with self._index_lock:
                for index in self._index.values():
                    for name in [n for n, c in index.items() if c.plugin == record.name]:
                        del index[name]

    def fail(self, record: PluginRecord, message: str) -> None:
        """Record that ``record``'s plugin failed (e.g. a decorator in its package raised)."""
        self._fail(record, message)

    # -- lookup ------------------------------------------------------------------------------

    def get(self, kind: ComponentKind, name: str) -> Component:
        """The component of ``kind`` called ``name`` (or with that alias)."""
        if (kind, name) in self._conflicts:
            raise self._conflicts[(kind, name)]
        try:
            return self._index[kind][name]
        except KeyError:
            raise UnknownComponentError(kind, name, self.names(kind), self._why_missing()) from None

    def _why_missing(self) -> str:
        broken = [r.name for r in self.plugin_records() if r.error]
        notes = [f"plugins with errors: {', '.join(broken)} (see `rewardsql plugins list`)"] * bool(
            broken
        )
        if self.selection.lower() != "auto":
            notes.append(f"{PLUGINS_ENV}={self.selection}")
        return "; ".join(notes)

    def names(self, kind: ComponentKind) -> list[str]:
        """Every name and alias of that kind, sorted."""
        return sorted(self._index[kind])

    def components(self, kind: ComponentKind | None = None) -> list[Component]:
        """Every distinct component (each once, not once per alias), optionally of one kind."""
        seen: dict[int, Component] = {}
        for k, index in self._index.items():
            if kind is None or k == kind:
                for component in index.values():
                    seen.setdefault(id(component), component)
        return list(seen.values())

    def plugin_records(self, *, builtin: bool = False) -> list[PluginRecord]:
        """Every plugin seen, by name; the local pseudo-plugin only when it has components;
        rewardsql's own record only when ``builtin``."""
        return sorted(
            (r for r in self.records.values()
             if (r.name != LOCAL_PLUGIN or r.components)
             and (builtin or _normalize(r.name) != BUILTIN_DISTRIBUTION)),
            key=lambda r: r.name,
        )


def _droppable(record: PluginRecord) -> bool:
    """Whether a failure takes the plugin's components out of use: not for scripts (the
    decorator raises there) nor for rewardsql's own commands."""
    return record.name != LOCAL_PLUGIN and _normalize(record.name) != BUILTIN_DISTRIBUTION


def record_for_module(registry: Registry, module: str | None) -> PluginRecord:
    """The record of the installed distribution that provides ``module`` (by its top-level
    package), else the ``<local>`` pseudo-plugin: a decorator used inside an installed plugin
    package files its component under that package."""
    dist = _distribution_of(module)
    if dist is None:
        return registry.records.setdefault(LOCAL_PLUGIN, PluginRecord(LOCAL_PLUGIN, ""))
    name, version = dist
    for record in registry.records.values():
        if _normalize(record.name) == _normalize(name):
            return record
    return registry.records.setdefault(name, PluginRecord(name, version))


_dists_cache: dict[tuple[str, ...], Mapping[str, list[str]]] = {}


def _distribution_of(module: str | None) -> tuple[str, str] | None:
    """``(name, version)`` of the distribution that installs ``module``'s top-level package."""
    if not module or module == "__main__":
        return None
    key = tuple(sys.path)
    if key not in _dists_cache:  # scanning every distribution is slow: once per sys.path
        _dists_cache.clear()
        _dists_cache[key] = metadata.packages_distributions()
    names = _dists_cache[key].get(module.split(".")[0]) or []
    if not names:
        return None
    try:
        return names[0], metadata.version(names[0])
    except metadata.PackageNotFoundError:
        return names[0], ""


def make_component(
    kind: ComponentKind,
    name: str,
    obj: Any,
    aliases: Iterable[str],
    summary: str,
    record: PluginRecord,
) -> Component:
    """Validate what a plugin registers and build its record."""
    if isinstance(aliases, str):
        aliases = (aliases,)
    aliases = tuple(aliases)
    for label in (name, *aliases):
        if not isinstance(label, str) or not label.strip() or label != label.strip():
            raise ValueError(f"{kind.label} names must be non-empty strings, got {label!r}")
        words = 2 if kind is ComponentKind.COMMAND else 1
        if len(label.split(" ")) > words:
            raise ValueError(f"{kind.label} name {label!r}: a command is one word, or a group "
                             "and a word (\"rm label\"); other names have no spaces")
    if kind is ComponentKind.REWARD_MANAGER:
        if is_legacy_manager(obj):  # verl's legacy shape, as the original RewardSQL README
            obj = legacy_manager_class(obj)
        if not (isinstance(obj, type) and issubclass(obj, RewardManager)):
            raise TypeError(
                f"reward manager {name!r} must be a subclass of rewardsql.RewardManager, or a "
                "class of verl's legacy shape (__init__(self, tokenizer, num_examine, ...), "
                "__call__(self, data))"
            )
    elif kind is ComponentKind.COMMAND:
        if not (callable(obj) or _is_typer(obj)):
            raise TypeError(f"command {name!r} must be a typer.Typer or a function, got "
                            f"{type(obj).__name__}")
    elif not callable(obj):
        raise TypeError(f"{kind.label} {name!r} must be callable, got {type(obj).__name__}")
    return Component(kind, name, obj, aliases, summary, record.name, record.version)


def _is_typer(obj: Any) -> bool:
    return type(obj).__name__ == "Typer" and type(obj).__module__.startswith("typer")


def _entry_points() -> list[metadata.EntryPoint]:
    """The group's entry points, one per (distribution, name), in a stable order."""
    unique: dict[tuple[str, str], metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        unique.setdefault((ep.dist.name if ep.dist else "", ep.name), ep)
    # rewardsql's own first: its names are taken before any plugin's
    return [unique[key] for key in sorted(
        unique, key=lambda k: (_normalize(k[0]) != BUILTIN_DISTRIBUTION, k))]


def _normalize(name: str) -> str:
    """Distribution-name normalisation (PEP 503): ``My_Plugin`` matches ``my-plugin``."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


_registry: Registry | None = None
_lock = threading.RLock()
_listeners: list[Callable[[], Any]] = []


def on_change(listener: Callable[[], Any]) -> None:
    """Call ``listener()`` whenever components were added (plugins loaded, a decorator ran).

    Subscribing twice is a no-op. A listener's exception is logged, never raised to the caller.
    """
    if listener not in _listeners:
        _listeners.append(listener)


def notify_change() -> None:
    """Tell every listener that the registry has new components."""
    for listener in list(_listeners):
        try:
            listener()
        except Exception as exc:  # a listener must not break registration
            logger.warning("rewardsql: %r failed after a registry change: %s", listener, exc)


def get_registry() -> Registry:
    """The process-wide registry, loading entry points on first use.

    While plugins load, a call from the same thread (a plugin that imports verl, or registers
    with a decorator at import time) gets the registry being built; other threads wait.
    """
    global _registry
    with _lock:
        if _registry is not None:
            return _registry
        _registry = registry = Registry()
        try:
            registry.load_entrypoints()
        except BaseException:
            _registry = None
            raise
    notify_change()
    return registry


def reset_registry() -> None:
    """Forget every loaded plugin; the next lookup loads them again (for tests)."""
    global _registry
    with _lock:
        _registry = None


# -- the names of 0.1, deprecated ---------------------------------------------------------------
# 0.1 called the registry a "plugin manager", a word rewardsql otherwise keeps for reward
# managers. The old names keep working for one release, with a DeprecationWarning each time.

#: Old name -> new name, for the warnings.
DEPRECATED_NAMES: dict[str, str] = {
    "RewardSQLPluginManager": "Registry",
    "get_plugin_manager": "get_registry",
    "reset_plugin_manager": "reset_registry",
}


def _warn_deprecated(old: str, owner: str = "rewardsql.registry") -> None:
    new = DEPRECATED_NAMES[old]
    warnings.warn(f"{owner}.{old} is deprecated and will be removed in the next release; use "
                  f"{owner}.{new}", DeprecationWarning, stacklevel=3)


def get_plugin_manager() -> Registry:
    """Deprecated name of :func:`get_registry`."""
    _warn_deprecated("get_plugin_manager", "rewardsql")
    return get_registry()


def reset_plugin_manager() -> None:
    """Deprecated name of :func:`reset_registry`."""
    _warn_deprecated("reset_plugin_manager", "rewardsql")
    reset_registry()


def __getattr__(name: str) -> Any:
    # A class cannot warn when its name is read, so the old class name is served from here.
    if name == "RewardSQLPluginManager":
        _warn_deprecated(name)
        return Registry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
