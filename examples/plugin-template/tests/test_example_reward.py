"""The template's own tests: the function's behaviour, and that rewardsql finds and accepts it."""

import json
import subprocess
import sys

import pytest
import rewardsql
from rewardsql_example_reward import clause_overlap


@pytest.mark.parametrize(
    ("response", "gold", "score"),
    [
        ("SELECT name FROM t WHERE a > 1", "select name from t where a = 2", 1.0),
        ("SELECT name FROM t", "SELECT name FROM t WHERE a > 1", 0.5),
        ("SELECT 'group by' FROM t", "SELECT a FROM t GROUP BY a", 0.5),  # literals don't count
    ],
)
def test_clause_overlap(response, gold, score):
    assert clause_overlap("spider", response, gold)["score"] == score


def test_rewardsql_finds_the_installed_plugin():
    rewardsql.reset_registry()
    assert rewardsql.get_reward_function("compute_clause_overlap") is clause_overlap


def test_plugins_check_accepts_it():
    cmd = [sys.executable, "-m", "rewardsql", "plugins", "check", "clause_overlap", "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["plugin"], row["name"], row["ok"]) == (
        "rewardsql-example-reward",
        "clause_overlap",
        True,
    )


def test_the_plugins_command_runs_in_rewardsqls_cli():
    cmd = [sys.executable, "-m", "rewardsql", "example-reward", "overlap",
           "SELECT name FROM t", "--gold", "SELECT name FROM t WHERE a > 1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"score": 0.5, "missing": 1, "extra": 0}
    listed = subprocess.run([sys.executable, "-m", "rewardsql", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert "example-reward" in listed.stdout


def test_the_manager_takes_its_settings_and_refuses_bad_ones():
    from rewardsql import RewardRequest
    from rewardsql.errors import ConfigError
    from rewardsql_example_reward.manager import ClauseOverlapManager

    request = RewardRequest("SELECT name FROM t", "SELECT name FROM t WHERE a > 1")
    (result,) = ClauseOverlapManager({"scale": 2.0}).score_batch([request])
    assert result.score == 1.0 and result.extra == {"missing": 1}
    (floored,) = ClauseOverlapManager({"floor": 0.6}).score_batch([request])
    assert floored.score == 0.0
    with pytest.raises(ConfigError, match="did you mean 'scale'"):
        ClauseOverlapManager({"scael": 2.0})
    with pytest.raises(ConfigError) as info:
        ClauseOverlapManager({"floor": 2})
    assert info.value.key == "floor"
