"""Composition on verl 0.9.1's real default config: translation targets, unknown keys, overrides.

verl's defaults are composed with Hydra once per process (``verl_defaults`` caches them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf
from rewardsql.errors import ConfigError
from rewardsql.training.launcher import compose
from rewardsql.training.launcher.translate import LEGACY_SECTIONS, OBSOLETE, RENAMED, RENAMED_VALUES


@pytest.fixture(scope="module")
def defaults() -> dict[str, Any]:
    return compose.to_plain(compose.verl_defaults())


def has_key(tree: dict[str, Any], dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_defaults_are_verl_091_ppo_trainer(defaults: dict[str, Any]) -> None:
    # keys that only the 0.9.1 layout has, read from the installed package
    assert defaults["reward"]["reward_manager"]["name"] == "naive"
    assert defaults["trainer"]["use_v1"] is True
    assert defaults["algorithm"]["adv_estimator"] == "gae"
    assert set(defaults["rewardsql"]) == {"reward_function", "reward_manager", "reward_weights"}


@pytest.mark.parametrize("rule", RENAMED, ids=lambda r: r.old)
def test_every_translation_lands_on_a_valid_verl_091_key(rule: Any,
                                                         defaults: dict[str, Any]) -> None:
    open_section = any(rule.new.startswith(s) for s in compose.OPEN_SECTIONS)
    parent = rule.new.rsplit(".", 1)[0]
    assert has_key(defaults, rule.new) or open_section or has_key(defaults, parent), rule.new


@pytest.mark.parametrize("rule", RENAMED_VALUES, ids=lambda r: f"{r.key}={r.old}")
def test_every_renamed_value_is_at_a_valid_key(rule: Any, defaults: dict[str, Any]) -> None:
    assert has_key(defaults, rule.key)


@pytest.mark.parametrize("rule", OBSOLETE, ids=lambda r: r.key)
def test_every_obsolete_key_really_is_gone_from_verl_091(rule: Any,
                                                         defaults: dict[str, Any]) -> None:
    # gone, or left in a section that verl 0.9.1's PPO trainer never reads
    assert not has_key(defaults, rule.key) or rule.key.split(".")[0] in LEGACY_SECTIONS


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "user.yaml"
    path.write_text(text)
    return path


def merged(tmp_path: Path, text: str) -> Any:
    config = compose.verl_defaults()
    path = write(tmp_path, text)
    compose.merge_user_config(config, compose.load_user_config(path), str(path))
    return config


def test_unknown_key_names_file_key_and_closest_sibling(tmp_path: Path) -> None:
    path = write(tmp_path, "actor_rollout_ref:\n  actor:\n    ppo_mini_batchsize: 8\n")
    with pytest.raises(ConfigError) as info:
        compose.merge_user_config(compose.verl_defaults(), compose.load_user_config(path),
                                  str(path))
    message = str(info.value)
    assert str(path) in message
    assert "'actor_rollout_ref.actor.ppo_mini_batchsize'" in message
    assert "did you mean 'actor_rollout_ref.actor.ppo_mini_batch_size'" in message


def test_unknown_key_in_the_wrong_section_points_to_where_it_lives(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'data\.train_batch_size'"):
        merged(tmp_path, "trainer:\n  train_batch_size: 8\n")


def test_unknown_top_level_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'algorithmm'.*did you mean 'algorithm'"):
        merged(tmp_path, "algorithmm:\n  gamma: 0.9\n")


def test_a_section_where_verl_has_a_value_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.train_batch_size.*expected a single value"):
        merged(tmp_path, "data:\n  train_batch_size:\n    size: 8\n")


def test_free_form_sections_accept_any_key(tmp_path: Path) -> None:
    config = merged(tmp_path, """\
actor_rollout_ref:
  model:
    override_config: {attention_dropout: 0.1}
  rollout:
    engine_kwargs:
      vllm: {swap_space: 4}
reward:
  custom_reward_function:
    reward_kwargs: {scale: 2}
rewardsql:
  reward_manager: {timeout: 5, mode: multiset}
""")
    assert config.actor_rollout_ref.model.override_config.attention_dropout == 0.1
    assert config.actor_rollout_ref.rollout.engine_kwargs.vllm.swap_space == 4
    assert config.reward.custom_reward_function.reward_kwargs.scale == 2
    assert config.rewardsql.reward_manager.mode == "multiset"


def test_yaml_exponent_numbers_are_floats_as_in_verl(tmp_path: Path) -> None:
    config = merged(tmp_path, "actor_rollout_ref:\n  actor:\n    optim:\n      lr: 1e-6\n")
    assert config.actor_rollout_ref.actor.optim.lr == pytest.approx(1e-6)
    assert isinstance(config.actor_rollout_ref.actor.optim.lr, float)


def test_user_values_replace_defaults_and_keep_the_rest(tmp_path: Path) -> None:
    config = merged(tmp_path, "data:\n  train_batch_size: 48\n  train_files: [a.parquet]\n")
    assert config.data.train_batch_size == 48
    assert list(config.data.train_files) == ["a.parquet"]
    assert config.data.max_response_length == 512  # verl's default survives


# -- overrides ---------------------------------------------------------------------------------


def test_overrides_change_add_force_and_delete() -> None:
    config = compose.verl_defaults()
    compose.apply_overrides(config, [
        "data.train_batch_size=12",
        "trainer.logger=[console,tensorboard]",
        "+algorithm.weight_factor=0.25",
        "++algorithm.epsilon=1e-5",
        "++data.max_response_length=256",
        "~trainer.v1.sampler",
        "actor_rollout_ref.model.path='/models/with space'",
    ])
    assert config.data.train_batch_size == 12
    assert list(config.trainer.logger) == ["console", "tensorboard"]
    assert config.algorithm.weight_factor == 0.25
    assert config.algorithm.epsilon == pytest.approx(1e-5)
    assert config.data.max_response_length == 256
    assert "sampler" not in config.trainer.v1
    assert config.actor_rollout_ref.model.path == "/models/with space"


def test_override_of_a_missing_key_says_to_use_plus() -> None:
    with pytest.raises(ConfigError) as info:
        compose.apply_overrides(compose.verl_defaults(), ["trainer.my_setting=0.3"])
    assert "+trainer.my_setting" in str(info.value)
    assert "command-line override" in str(info.value)


def test_estimator_settings_may_be_added_under_algorithm(tmp_path: Path) -> None:
    config = merged(tmp_path, "algorithm:\n  adv_estimator: grpo\n  weight_factor: 0.7\n")
    assert config.algorithm.weight_factor == 0.7
    result = compose.apply_overrides(config, ["algorithm.epsilon=1e-4"])
    assert config.algorithm.epsilon == pytest.approx(1e-4)
    assert result.notes() == ["algorithm.epsilon: not a verl key; kept for the advantage estimator"]


def test_a_typo_under_algorithm_is_still_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'algorithm\.adv_estimator'"):
        merged(tmp_path, "algorithm:\n  adv_estimater: grpo\n")
    with pytest.raises(ConfigError, match=r"did you mean 'algorithm\.norm_adv_by_std_in_grpo'"):
        compose.apply_overrides(compose.verl_defaults(), ["algorithm.norm_adv_by_std_in_grp=0"])


def test_override_typo_suggests_the_closest_key() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'data\.train_batch_size'"):
        compose.apply_overrides(compose.verl_defaults(), ["data.train_batch_sise=3"])


def test_plus_on_an_existing_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match="already set"):
        compose.apply_overrides(compose.verl_defaults(), ["+data.train_batch_size=3"])


def test_old_keys_are_translated_in_overrides_too() -> None:
    config = compose.verl_defaults()
    result = compose.apply_overrides(config, [
        "custom_reward_function.path=pkg://my.module",
        "verifier.reward_coef=0.5",
        "reward_model.reward_manager=custom",
        "verifier.port=5887",
    ])
    assert config.reward.custom_reward_function.path == "pkg://my.module"
    assert config.custom_reward_function.path is None  # the ignored legacy key stays unset
    assert config.rewardsql.reward_weights.outcome == 0.5
    assert config.reward.reward_manager.name == "sql_verifier"
    assert result.warnings() == [
        "verifier.port: obsolete in verl 0.9.1, dropped (the SQL verifier runs in-process; "
        "there is no service to reach)"]


def test_free_form_section_takes_new_keys_without_plus() -> None:
    config = compose.verl_defaults()
    compose.apply_overrides(config, ["rewardsql.reward_manager.timeout=7"])
    assert OmegaConf.to_container(config.rewardsql.reward_manager) == {"timeout": 7}


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="not a KEY=VALUE override"):
        compose.apply_overrides(compose.verl_defaults(), ["data.train_batch_size"])
