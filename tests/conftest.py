"""Shared fixtures: fake installed plugin distributions, and a clean plugin manager per test."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import rewardsql
from rewardsql import verl_bridge


class FakeSite:
    """A directory on sys.path holding fake installed distributions (real dist-info metadata)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: list[str] = []

    def add(
        self,
        dist: str,
        module: str,
        source: str,
        *,
        version: str = "1.0",
        entry_name: str | None = None,
        group: str = "rewardsql",
    ) -> None:
        """Install distribution ``dist`` whose entry point in ``group`` is module ``module``."""
        (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[{group}]\n{entry_name or dist} = {module}\n")
        self.modules.append(module)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess that sees these distributions."""
        env = dict(os.environ, **extra)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.root), env.get("PYTHONPATH")]))
        return env

    def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run ``python *args`` in a fresh interpreter that sees these distributions."""
        return subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            env=self.env(**extra_env),
            timeout=180,
        )


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSite]:
    """Fake distributions visible to this process (and to subprocesses through ``env``).

    Only the fake plugins load in-process (REWARDSQL_PLUGINS names them), so installed plugins
    do not leak into the assertions.
    """
    site = FakeSite(tmp_path / "site")
    site.root.mkdir()
    monkeypatch.syspath_prepend(str(site.root))
    importlib.invalidate_caches()
    yield site
    for module in site.modules:
        sys.modules.pop(module, None)


@pytest.fixture(autouse=True)
def fresh_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts and ends with no plugins loaded, and leaves verl's registries as found.

    verl's registries are process-global and refuse a second object under a taken name, so a
    test that registers fake components must not leak them into the next test.
    """
    registries = _verl_registries()  # first: importing verl loads plugins through the bridge
    saved = [dict(registry) for registry in registries]
    monkeypatch.delenv("REWARDSQL_PLUGINS", raising=False)
    rewardsql.reset_plugin_manager()
    yield
    rewardsql.reset_plugin_manager()
    verl_bridge._reported.clear()
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
