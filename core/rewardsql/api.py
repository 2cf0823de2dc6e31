"""Lookups by name and the registration decorators for scripts and notebooks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from rewardsql.components import ComponentKind
from rewardsql.registry import (
    LOCAL_PLUGIN,
    get_registry,
    make_component,
    notify_change,
    record_for_module,
)

T = TypeVar("T")


def get_reward_function(name: str) -> Callable[..., Any]:
    """The reward function registered as ``name`` (or with that alias)."""
    return get_registry().get(ComponentKind.REWARD_FUNCTION, name).obj


def get_reward_manager(name: str) -> type:
    """The reward manager class registered as ``name`` (or with that alias)."""
    return get_registry().get(ComponentKind.REWARD_MANAGER, name).obj


def get_advantage_estimator(name: str) -> Callable[..., Any]:
    """The advantage estimator registered as ``name`` (or with that alias)."""
    return get_registry().get(ComponentKind.ADVANTAGE_ESTIMATOR, name).obj


def _register_local(
    kind: ComponentKind, name: str, aliases: Iterable[str], summary: str
) -> Callable[[T], T]:
    def decorator(obj: T) -> T:
        registry = get_registry()
        # inside an installed package: that package's plugin; in a script: "<local>"
        record = record_for_module(registry, getattr(obj, "__module__", None))
        doc = summary or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
        try:
            component = make_component(kind, name, obj, aliases, doc, record)
            registry.add_component(component, record)
        except Exception as exc:
            if record.name != LOCAL_PLUGIN:  # the package is broken: none of it is used
                registry.fail(record, f"{kind.label} {name!r}: {type(exc).__name__}: {exc}")
            raise
        notify_change()  # e.g. the verl bridge, when verl is up, registers it there now too
        return obj

    return decorator


def register_reward_function(
    name: str, *, aliases: Iterable[str] = (), summary: str = ""
) -> Callable[[T], T]:
    """Decorator: register a reward function: verl's ``compute_score`` signature, or any
    parameters bound by name (see :mod:`rewardsql.signatures`)."""
    return _register_local(ComponentKind.REWARD_FUNCTION, name, aliases, summary)


def register_reward_manager(
    name: str, *, aliases: Iterable[str] = (), summary: str = ""
) -> Callable[[T], T]:
    """Decorator: register a :class:`rewardsql.RewardManager` subclass, or a class of verl's
    legacy manager shape (adapted, see :mod:`rewardsql.legacy`)."""
    return _register_local(ComponentKind.REWARD_MANAGER, name, aliases, summary)


def register_advantage_estimator(
    name: str, aliases: Iterable[str] = (), *, summary: str = ""
) -> Callable[[T], T]:
    """Decorator: register an advantage estimator from a script (verl's calling convention)."""
    return _register_local(ComponentKind.ADVANTAGE_ESTIMATOR, name, aliases, summary)
