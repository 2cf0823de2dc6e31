"""The local engine's reading of verl-shaped configs: verl's keys and defaults, clear errors for
unknown keys and for settings it cannot honour, estimators called as verl calls them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rewardsql.errors import ConfigError
from rewardsql.training.local.settings import read_settings

BASE = {
    "data": {"train_files": "train.parquet", "val_files": "dev.parquet", "train_batch_size": 4},
    "actor_rollout_ref": {"model": {"path": "some/model"},
                          "actor": {"ppo_mini_batch_size": 2}},
}


def with_(dotted: str, value) -> dict:
    import copy

    config = copy.deepcopy(BASE)
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return config


def test_verl_defaults_fill_what_is_not_given():
    s = read_settings(BASE)
    assert (s.n, s.temperature, s.top_p, s.lr) == (1, 1.0, 1.0, 1e-6)
    assert (s.kl_loss_type, s.loss_agg_mode, s.grad_clip) == ("low_var_kl", "token-mean", 1.0)
    # verl's default manager: the core names no plugin (the shipped configs name sql_verifier)
    assert s.adv_estimator == "grpo" and s.reward_manager == "naive"
    assert s.response_length == 512 and s.save_freq == -1 and s.resume_mode == "auto"


@pytest.mark.parametrize(("key", "value", "words"), [
    ("critic.enable", True, "critic"),
    ("algorithm.use_kl_in_reward", True, "use_kl_loss"),
    ("actor_rollout_ref.model.lora_rank", 8, "LoRA"),
    ("algorithm.adv_estimator", "gae", "critic"),
    ("algorithm.use_pf_ppo", True, "PF-PPO"),
    ("actor_rollout_ref.actor.optim.optimizer", "SGD", "AdamW"),
    ("rewardsql.reward_weights", {"process": 0.5, "outcome": 1.0}, "process reward"),
    ("trainer.resume_mode", "sometimes", "auto"),
    ("actor_rollout_ref.actor.kl_loss_type", "k9", "KL"),
])
def test_settings_it_cannot_honour_are_errors_naming_the_key(key, value, words):
    with pytest.raises(ConfigError) as err:
        read_settings(with_(key, value))
    message = str(err.value)
    assert words in message
    assert (err.value.key or "").startswith(key.rsplit(".", 1)[0])


def test_dynamic_sampling_reads_verl_keys_and_needs_groups():
    config = with_("algorithm.filter_groups", {"enable": True, "metric": "acc",
                                               "max_num_gen_batches": 5})
    config["actor_rollout_ref"]["rollout"] = {"n": 4}
    s = read_settings(config)
    assert (s.filter_groups, s.filter_groups_metric, s.max_num_gen_batches) == (True, "acc", 5)
    assert read_settings(BASE).filter_groups is False
    with pytest.raises(ConfigError, match="cannot differ") as err:
        read_settings(with_("algorithm.filter_groups.enable", True))  # rollout.n defaults to 1
    assert err.value.key == "actor_rollout_ref.rollout.n"


def test_unknown_key_suggests_the_closest_verl_key():
    with pytest.raises(ConfigError, match="temperature") as err:
        read_settings(with_("actor_rollout_ref.rollout.temprature", 0.7))
    assert err.value.key == "actor_rollout_ref.rollout.temprature"


def test_free_sections_take_any_key():
    s = read_settings(with_("algorithm.weight_factor", 0.7))
    assert s.algorithm["weight_factor"] == 0.7
    read_settings(with_("rewardsql.reward_manager", {"timeout": 3}))


def test_reward_kwargs_reach_the_custom_reward_function():
    # verl reads reward.custom_reward_function.reward_kwargs, absent from its flattened defaults
    config = with_("reward.custom_reward_function", {
        "path": "reward.py", "name": "compute_score", "reward_kwargs": {"scale": 2}})
    assert read_settings(config).reward_kwargs == {"scale": 2}
    with pytest.raises(ConfigError) as err:
        read_settings(with_("reward.custom_reward_function.reward_kwarg", {"scale": 2}))
    assert err.value.key == "reward.custom_reward_function.reward_kwarg"


def test_conflicting_grad_clip_settings_are_an_error():
    config = with_("actor_rollout_ref.actor.grad_clip", 0.5)
    config["actor_rollout_ref"]["actor"]["optim"] = {"clip_grad": 1.0}
    with pytest.raises(ConfigError, match="clip_grad"):
        read_settings(config)


def test_mini_batch_must_divide_the_batch():
    with pytest.raises(ConfigError, match="multiple"):
        read_settings(with_("actor_rollout_ref.actor.ppo_mini_batch_size", 3))


def test_composed_verl_defaults_are_accepted():
    # what `rewardsql train` hands over: verl 0.9.1's whole composed ppo_trainer config
    from omegaconf import OmegaConf
    from rewardsql.training.launcher.compose import _defaults_cached

    config = OmegaConf.create(OmegaConf.to_container(_defaults_cached()))
    config.actor_rollout_ref.model.path = "m"
    config.data.train_files = "t.parquet"
    config.data.train_batch_size = 8
    config.actor_rollout_ref.actor.ppo_mini_batch_size = 4
    config.algorithm.adv_estimator = "grpo_weighted"
    s = read_settings(config)
    assert s.grad_clip == 1.0 and s.val_before_train and s.adv_estimator == "grpo_weighted"


def test_estimators_get_verls_keywords():
    """A plugin estimator gets exactly what verl's compute_advantage passes it."""
    from omegaconf import OmegaConf
    from rewardsql.training.local.update import compute_advantages, resolve_estimator

    seen = {}

    def recording(**kwargs):
        seen.update(kwargs)
        return resolve_estimator("grpo_weighted")(**kwargs)

    rewards = torch.zeros(4, 5)
    rewards[0, 2], rewards[2, 4] = 1.0, 1.0
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1] * 5, [1, 1, 1, 1, 0]])
    uids = np.array(["a", "a", "b", "b"], dtype=object)
    algorithm = OmegaConf.create({"adv_estimator": "grpo_weighted", "weight_factor": 0.5})
    adv, _ = compute_advantages("grpo_weighted", recording, token_level_rewards=rewards,
                                  response_mask=mask, uids=uids, algorithm=algorithm)
    assert set(seen) == {"token_level_rewards", "response_mask", "config", "index"}
    assert seen["index"].dtype == object and seen["config"].weight_factor == 0.5
    assert adv[0, 0] > 0 > adv[1, 0] and adv[1, 3] == 0  # masked positions stay 0
    # "grpo" is verl's own, called with norm_adv_by_std_in_grpo like verl's trainer does
    verl_adv, _ = compute_advantages("grpo", resolve_estimator("grpo"),
                                     token_level_rewards=rewards, response_mask=mask, uids=uids,
                                     algorithm=OmegaConf.create({"norm_adv_by_std_in_grpo": True}))
    assert torch.allclose(verl_adv[0, :3], torch.full((3,), verl_adv[0, 0].item()))


@pytest.mark.parametrize("name", ["grpo_min_form", "compute_grpo_min_form_advantage"])
def test_min_form_needs_a_manager_that_declares_its_layout(name):
    """grpo_min_form reads step scores back from the token rewards: verl's naive manager (one
    score on the last token) declares no layout, so the pairing is refused, by name or alias."""
    with pytest.raises(ConfigError, match=rf": {name} reads step scores") as err:
        read_settings(with_("algorithm.adv_estimator", name))
    assert err.value.key == "reward.reward_manager.name"
    assert "process_placement: step_end, outcome_placement: all_tokens" in str(err.value)


def test_unknown_estimator_is_a_config_error():
    from rewardsql.training.local.update import resolve_estimator

    with pytest.raises(ConfigError, match="no_such_estimator"):
        resolve_estimator("no_such_estimator")


def test_token_level_rewards_placement():
    from rewardsql.rewards import RewardResult
    from rewardsql.training.local.scoring import token_level_rewards

    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    dense = RewardResult(0.0, token_rewards=[.1, .2, .3, .4])
    out = token_level_rewards([RewardResult(1.0), dense], mask)
    assert out.tolist()[0] == [0, 0, 1.0, 0]
    assert torch.allclose(out[1], torch.tensor([.1, .2, .3, .4]))
    with pytest.raises(ValueError, match="token rewards"):
        token_level_rewards([RewardResult(0.0, token_rewards=[1.0])], mask[:1])


def test_response_mask_stops_after_the_first_stop_token():
    from rewardsql.training.local.rollout import response_mask_of

    responses = torch.tensor([[5, 6, 2, 2, 0], [5, 7, 7, 7, 7], [3, 2, 9, 2, 9]])
    assert response_mask_of(responses, [3]).tolist()[2] == [1, 0, 0, 0, 0]
    assert response_mask_of(responses, [2]).tolist() == [
        [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
