"""``rewardsql demo`` without the train extra says which extra to install, before any work."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from rewardsql.demo.pipeline import run_demo
from rewardsql.errors import MissingDependencyError


def test_demo_without_matplotlib_names_the_extra_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules is how Python itself blocks an import: "import matplotlib" then fails.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "demo"
    with pytest.raises(MissingDependencyError) as info:
        run_demo(out)
    message = str(info.value)
    assert "matplotlib" in message and "pip install 'rewardsql[train]'" in message
    assert "\n" not in message
    assert not out.exists()  # nothing started
