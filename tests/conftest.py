"""Fixtures of every cross-package test: a clean plugin registry per test, verl's registries left
as found. Helpers shared by several folders: _tiny_helpers (the bundled example and tiny model),
_train_helpers (Spider-style databases, prepared parquet, the CLI in a subprocess)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import rewardsql
from rewardsql import signatures, verl_bridge


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts and ends with no plugins loaded, and leaves verl's registries as found.

    verl's registries are process-global and refuse a second object under a taken name, so a
    test that registers fake components must not leak them into the next test.
    """
    registries = _verl_registries()  # first: importing verl loads plugins through the bridge
    saved = [dict(registry) for registry in registries]
    monkeypatch.delenv("REWARDSQL_PLUGINS", raising=False)
    rewardsql.reset_registry()
    yield
    rewardsql.reset_registry()
    verl_bridge._reported.clear()
    signatures._load.cache_clear()  # functions loaded by path: a test's fake module is its own
    for registry, content in zip(registries, saved, strict=True):
        registry.clear()
        registry.update(content)


def _verl_registries() -> list[dict]:
    """verl's estimator and reward-manager registries (none when verl is not installed)."""
    try:
        from verl.experimental.reward_loop.reward_manager import registry
        from verl.trainer.ppo import core_algos
    except ImportError:
        return []
    return [core_algos.ADV_ESTIMATOR_REGISTRY, registry.REWARD_MANAGER]
