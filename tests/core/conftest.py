"""Fixtures of the core's tests: fake installed plugin distributions (real dist-info metadata)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest


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
        # as pip writes it: what the distribution installed (packages_distributions reads it)
        (info / "RECORD").write_text(f"{module}.py,,\n{info.name}/METADATA,,\n")
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


