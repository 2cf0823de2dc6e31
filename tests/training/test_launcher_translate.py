"""Key translation from older verl / the seed to verl 0.9.1: every rule, conflicts, priorities."""

from __future__ import annotations

from typing import Any

import pytest
from rewardsql.errors import ConfigError
from rewardsql.training.launcher.translate import (
    OBSOLETE,
    RENAMED,
    RENAMED_VALUES,
    translate,
    translate_key,
)


def nested(dotted: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": value}}`` for ``"a.b"``."""
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("rule", RENAMED, ids=lambda r: r.old)
def test_every_renamed_key_moves_with_its_value(rule: Any) -> None:
    value = f"value-of-{rule.old}"
    result = translate(nested(rule.old, value), "cfg.yaml")
    assert get(result.config, rule.new) == value
    assert result.changes == [(rule.old, rule.new, rule.why)]
    # nothing is left at the old place (unless old is a prefix of new, which no rule is)
    assert translate_key(rule.old) == (rule.new, rule.why)


@pytest.mark.parametrize("rule", RENAMED, ids=lambda r: r.old)
def test_a_renamed_section_moves_whole(rule: Any) -> None:
    result = translate(nested(rule.old, {"sub": 1, "deeper": {"x": [1, 2]}}))
    assert get(result.config, rule.new) == {"sub": 1, "deeper": {"x": [1, 2]}}
    assert len(result.notes()) == 1  # one note per moved section, not one per leaf


@pytest.mark.parametrize("rule", OBSOLETE, ids=lambda r: r.key)
def test_every_obsolete_key_is_dropped_with_a_warning(rule: Any) -> None:
    result = translate({**nested(rule.key, 7), "data": {"train_batch_size": 2}}, "cfg.yaml")
    assert result.config == {"data": {"train_batch_size": 2}}
    warnings = result.warnings()
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{rule.key}: obsolete") and rule.why in warnings[0]


@pytest.mark.parametrize("rule", RENAMED_VALUES, ids=lambda r: f"{r.key}={r.old}")
def test_every_renamed_value_is_respelled(rule: Any) -> None:
    result = translate(nested(rule.key, rule.old))
    assert get(result.config, rule.key) == rule.new
    assert any(rule.why in note for note in result.notes())
    # other values at the same key are left alone
    assert get(translate(nested(rule.key, "something_else")).config, rule.key) == "something_else"


def test_seed_reward_manager_custom_becomes_sql_verifier() -> None:
    result = translate({"reward_model": {"reward_manager": "custom", "rm_coef": 0.5}})
    assert result.config["reward"]["reward_manager"]["name"] == "sql_verifier"
    assert result.config["rewardsql"]["reward_weights"] == {"process": 0.5}


def test_seed_prm_port_becomes_the_prm_servers_url_with_a_prm_weight() -> None:
    result = translate({"reward_model": {"port": 5000, "rm_coef": 0.5}})
    assert result.config["rewardsql"]["reward_manager"] == {"prm_url": "http://localhost:5000"}
    assert any(note.startswith("reward_model.port -> rewardsql.reward_manager.prm_url="
                               "http://localhost:5000") and "rm serve" in note
               for note in result.notes())
    # no PRM weight: nothing scores a PRM, and the port is dropped with a warning
    result = translate({"reward_model": {"port": 5000, "rm_coef": 0.0}})
    assert "reward_manager" not in result.config.get("rewardsql", {})
    assert [w.split(":")[0] for w in result.warnings()] == ["reward_model.port"]
    with pytest.raises(ConfigError, match="expected a port number") as info:
        translate({"reward_model": {"port": "five", "rm_coef": 0.5}})
    assert info.value.key == "reward_model.port"


def test_verifier_keys_split_by_longest_prefix() -> None:
    result = translate({"verifier": {"reward_coef": 0.7, "port": 5887, "type": "prime",
                                     "timeout": 12, "mode": "multiset"}})
    assert result.config == {"rewardsql": {"reward_weights": {"outcome": 0.7},
                                           "reward_manager": {"timeout": 12, "mode": "multiset"}}}
    assert {w.split(":")[0] for w in result.warnings()} == {"verifier.port", "verifier.type"}


def test_unchanged_keys_pass_through_untouched() -> None:
    config = {"data": {"train_batch_size": 48, "train_files": ["a.parquet", "b.parquet"]},
              "actor_rollout_ref": {"model": {"override_config": {}}}}
    result = translate(config)
    assert result.config == config
    assert result.changes == []


def test_null_old_keys_are_not_carried_over() -> None:
    # verl 0.9.1's own defaults still carry these legacy keys as null
    result = translate({"custom_reward_function": {"path": None, "name": None},
                        "reward": {"custom_reward_function": {"path": "pkg://m", "name": "f"}}})
    assert result.config == {"reward": {"custom_reward_function": {"path": "pkg://m",
                                                                   "name": "f"}}}


def test_old_and_new_key_with_different_values_is_an_error() -> None:
    config = {"custom_reward_function": {"path": "a.py"},
              "reward": {"custom_reward_function": {"path": "b.py"}}}
    with pytest.raises(ConfigError) as info:
        translate(config, "cfg.yaml")
    message = str(info.value)
    assert "cfg.yaml" in message and "custom_reward_function.path" in message
    assert "reward.custom_reward_function.path" in message


def test_old_and_new_key_with_the_same_value_is_fine() -> None:
    config = {"custom_reward_function": {"path": "a.py"},
              "reward": {"custom_reward_function": {"path": "a.py"}}}
    assert translate(config).config == {"reward": {"custom_reward_function": {"path": "a.py"}}}


@pytest.mark.parametrize("core_first", [True, False])
def test_core_function_wins_over_adv_estimator_in_either_order(core_first: bool) -> None:
    items = [("core_function", "compute_weighted_grpo_advantage"), ("adv_estimator", "grpo")]
    algorithm = dict(items if core_first else items[::-1])
    result = translate({"algorithm": algorithm})
    assert result.config == {"algorithm": {"adv_estimator": "compute_weighted_grpo_advantage"}}


def test_docs_list_every_translation() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    for rule in RENAMED:
        assert f"| `{rule.old}` | `{rule.new}` |" in docs, rule.old
    for rule in OBSOLETE:
        assert f"| `{rule.key}` | {rule.why} |" in docs, rule.key
    for rule in RENAMED_VALUES:
        assert f"| `{rule.key}` | `{rule.old}` | `{rule.new}` |" in docs, rule.old
