"""The folder layout keeps 0.1's flat import paths: each old path imports as the moved module
itself, including the one verl configs load (``pkg://rewardsql_sql_reward.reward_fn``)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import rewardsql_sql_reward
from rewardsql_sql_reward import MOVED_MODULES


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_old_flat_path_is_the_moved_module(old: str) -> None:
    moved = importlib.import_module(f"rewardsql_sql_reward.{MOVED_MODULES[old]}")
    assert importlib.import_module(f"rewardsql_sql_reward.{old}") is moved


def test_old_reward_fn_path_loads_in_a_fresh_interpreter_as_verl_does() -> None:
    # verl's load_module("pkg://...") is importlib.import_module on the dotted path; a fresh
    # interpreter has imported nothing of the plugin yet, as in a Ray worker
    code = ("import importlib; m = importlib.import_module('rewardsql_sql_reward.reward_fn'); "
            "print(m.__name__, callable(m.compute_score))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["rewardsql_sql_reward.rewards.reward_fn", "True"]


def test_unknown_names_still_fail_to_import() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("rewardsql_sql_reward.no_such_module")
    assert not hasattr(rewardsql_sql_reward, "no_such_module")
