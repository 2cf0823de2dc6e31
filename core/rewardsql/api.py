"""Lookups by name and the registration decorators for scripts and notebooks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from rewardsql.components import ComponentKind
from rewardsql.registry import (
    LOCAL_PLUGIN,
    PluginRecord,
    get_plugin_manager,
    make_component,
    notify_change,
)

T = TypeVar("T")


def get_reward_function(name: str) -> Callable[..., Any]:
    """The reward function registered as ``name`` (or with that alias)."""
    return get_plugin_manager().get(ComponentKind.REWARD_FUNCTION, name).obj


def get_reward_manager(name: str) -> type:
    """The reward manager class registered as ``name`` (or with that alias)."""
    return get_plugin_manager().get(ComponentKind.REWARD_MANAGER, name).obj


def get_advantage_estimator(name: str) -> Callable[..., Any]:
    """The advantage estimator registered as ``name`` (or with that alias)."""
    return get_plugin_manager().get(ComponentKind.ADVANTAGE_ESTIMATOR, name).obj


def _register_local(
    kind: ComponentKind, name: str, aliases: Iterable[str], summary: str
) -> Callable[[T], T]:
    def decorator(obj: T) -> T:
        manager = get_plugin_manager()
        record = manager.records.setdefault(LOCAL_PLUGIN, PluginRecord(LOCAL_PLUGIN, ""))
        doc = summary or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
        component = make_component(kind, name, obj, aliases, doc, record)
        manager.add_component(component, record)
        notify_change()  # e.g. the verl bridge, when verl is up, registers it there now too
        return obj

    return decorator


def register_reward_function(
    name: str, *, aliases: Iterable[str] = (), summary: str = ""
) -> Callable[[T], T]:
    """Decorator: register a reward function from a script (verl's ``compute_score`` signature)."""
    return _register_local(ComponentKind.REWARD_FUNCTION, name, aliases, summary)


def register_reward_manager(
    name: str, *, aliases: Iterable[str] = (), summary: str = ""
) -> Callable[[T], T]:
    """Decorator: register a :class:`rewardsql.RewardManager` subclass from a script."""
    return _register_local(ComponentKind.REWARD_MANAGER, name, aliases, summary)


def register_advantage_estimator(
    name: str, aliases: Iterable[str] = (), *, summary: str = ""
) -> Callable[[T], T]:
    """Decorator: register an advantage estimator from a script (verl's calling convention)."""
    return _register_local(ComponentKind.ADVANTAGE_ESTIMATOR, name, aliases, summary)
