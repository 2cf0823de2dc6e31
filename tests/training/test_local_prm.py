"""Process rewards on the local engine: ``sql_prm`` with a tiny PRM (the untrained tiny model:
" и ", "+" and "-" are single tokens of its tokenizer) and the real SQL verifier on the quick
example's databases; the engine's own scoring and estimator path, and a few GRPO steps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from _tiny_helpers import quick_example, tiny_model
from rewardsql import RewardRequest
from rewardsql.errors import ConfigError
from rewardsql.training.local.scoring import RewardSource, token_level_rewards
from rewardsql.training.local.settings import read_settings
from rewardsql.training.local.update import compute_advantages, resolve_estimator
from rewardsql_sql_reward.rewards.prm_manager import PRM_STATUSES
from transformers import AutoTokenizer


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    example = quick_example(tmp_path_factory)
    return example, tiny_model(tmp_path_factory)


def _config(example, model, **rewardsql):
    return {
        "data": {"train_files": str(example.rl_parquet), "val_files": str(example.dev_parquet),
                 "train_batch_size": 2, "max_prompt_length": 256, "max_response_length": 24,
                 "seed": 0},
        "actor_rollout_ref": {
            "model": {"path": str(model)},
            "actor": {"optim": {"lr": 1e-4}, "ppo_mini_batch_size": 2,
                      "ppo_micro_batch_size_per_gpu": 4},
            "rollout": {"n": 3, "temperature": 1.0, "seed": 0},
        },
        "reward": {"reward_manager": {"name": "sql_prm"}},
        "rewardsql": {"reward_manager": {"prm_path": str(model), "batch_size": 4,
                                         "verifier": {"db_root": str(example.db_root),
                                                      "workers": 1, "timeout": 5.0,
                                                      "max_infra_error_fraction": 1.0}},
                      "reward_weights": {"process": 0.5, "outcome": 1.0}, **rewardsql},
        "trainer": {"total_training_steps": 2, "save_freq": -1, "test_freq": -1,
                    "val_before_train": False, "device": "cpu", "logger": ["console"]},
    }


def test_settings_pair_process_rewards_with_the_dense_estimator(parts):
    example, model = parts
    settings = read_settings(_config(example, model))
    assert settings.adv_estimator == "grpo_process_avg_unique"  # the config names none
    assert settings.outcome_weight == 1.0  # sql_prm applies the weights itself
    assert settings.reward_manager_settings["process_weight"] == 0.5
    assert settings.reward_manager_settings["device"] == "cpu"  # trainer.device=cpu
    config = _config(example, model)
    config["reward"]["reward_manager"]["name"] = "sql_verifier"
    config["rewardsql"]["reward_manager"] = {"db_root": str(example.db_root)}
    with pytest.raises(ConfigError) as info:
        read_settings(config)
    assert info.value.key == "rewardsql.reward_weights.process"
    assert "sql_verifier" in str(info.value)


def _known_responses(example, model, settings):
    """Two answers to one question, the gold one and one with a wrong final step, scored by
    sql_prm: ``(requests, rewards, mask, tag)``, the rewards as the engine hands them to the
    estimator."""
    tokenizer = AutoTokenizer.from_pretrained(model)
    # a two-step gold answer (a CTE, a blank line, the final SELECT), written with the tag
    row = next(r for r in json.loads(example.rl_json.read_text())
               if r["query"].count("\n\n") == 1 and " LIMIT " not in r["query"])
    db_id, gold = row["db_id"], row["query"]
    first, _ = gold.split("\n\n")
    responses = [gold.replace("\n\n", " и "), f"{first} и SELECT 1;"]
    requests = []
    for text in responses:
        ids = tokenizer.encode(text, add_special_tokens=False)
        requests.append(RewardRequest(response=tokenizer.decode(ids), ground_truth=gold,
                                      extra_info={"db_id": db_id}, prompt=row["question"],
                                      response_token_ids=tuple(ids)))
    source = RewardSource(settings, tokenizer)
    try:
        results = source.score(requests)
    finally:
        source.close()
    width = max(len(r.response_token_ids) for r in requests) + 3
    mask = torch.zeros((2, width), dtype=torch.long)
    for i, r in enumerate(requests):
        mask[i, :len(r.response_token_ids)] = 1
    rewards = token_level_rewards(results, mask) * settings.outcome_weight
    tag = tokenizer.encode(" и ", add_special_tokens=False)[0]
    assert [result.extra["acc"] for result in results] == [1.0, 0.0]
    return requests, rewards, mask, tag


def test_dense_rewards_and_advantages_on_a_known_response(parts):
    example, model = parts
    settings = read_settings(_config(example, model))
    requests, rewards, mask, tag = _known_responses(example, model, settings)
    for i, request in enumerate(requests):
        ids = list(request.response_token_ids)
        step_end = ids.index(tag) - 1  # the token before the tag ends step 1
        outcome = 1.0 if i == 0 else 0.0
        row_rewards = rewards[i, :len(ids)]
        # outcome on every token, the step scores (0.5 x P(+)) on the two step ends only
        others = [t for t in range(len(ids)) if t not in (step_end, len(ids) - 1)]
        assert torch.allclose(row_rewards[others], torch.full((len(others),), outcome))
        assert 0 < row_rewards[step_end] - outcome < 0.5
        assert 0 < row_rewards[-1] - outcome < 0.5
        assert rewards[i, len(ids):].abs().sum() == 0
    estimator = resolve_estimator(settings.adv_estimator)
    from omegaconf import OmegaConf

    advantages, _ = compute_advantages(
        settings.adv_estimator, estimator, token_level_rewards=rewards, response_mask=mask,
        uids=np.array(["g", "g"], dtype=object), algorithm=OmegaConf.create(settings.algorithm))
    ends = {i: (list(r.response_token_ids).index(tag) - 1, len(r.response_token_ids) - 1)
            for i, r in enumerate(requests)}
    right = advantages[0, :len(requests[0].response_token_ids)]
    assert (right > 0).all()  # the right answer: every token (all carry the outcome) goes up
    wrong = advantages[1, :len(requests[1].response_token_ids)]
    assert (wrong[list(ends[1])] < 0).all()  # the wrong one: its steps go down, at their ends
    assert (wrong.nonzero().flatten().tolist()) == list(ends[1])


def test_min_form_on_a_known_response(parts):
    """grpo_min_form on sql_prm's real token rewards (step_end, outcome on all tokens): it reads
    back the manager's step rewards (outcome + 0.5 x P(+) at each step end), a token's return is
    the smallest of them from its step on, standardised over the group's step rewards."""
    example, model = parts
    config = _config(example, model)
    config["algorithm"] = {"adv_estimator": "grpo_min_form"}
    settings = read_settings(config)
    requests, rewards, mask, tag = _known_responses(example, model, settings)
    from omegaconf import OmegaConf

    advantages, _ = compute_advantages(
        settings.adv_estimator, resolve_estimator(settings.adv_estimator),
        token_level_rewards=rewards, response_mask=mask,
        uids=np.array(["g", "g"], dtype=object), algorithm=OmegaConf.create(settings.algorithm))
    ends = [(list(r.response_token_ids).index(tag) - 1, len(r.response_token_ids) - 1)
            for r in requests]
    steps = [[rewards[i, e].item() for e in ends[i]] for i in range(2)]
    values = steps[0] + steps[1]
    mu = sum(values) / 4
    sigma = math.sqrt(sum((v - mu) ** 2 for v in values) / 3) + 1e-6
    for i in range(2):
        first, last = ends[i]
        want = torch.tensor([(min(steps[i]) - mu) / sigma] * (first + 1)
                            + [(steps[i][1] - mu) / sigma] * (last - first))
        assert torch.allclose(advantages[i, :last + 1], want, rtol=1e-4, atol=1e-5)
        assert advantages[i, last + 1:].abs().sum() == 0
    assert (advantages[0, :ends[0][1] + 1] > 0).all()  # the right answer goes up everywhere
    assert (advantages[1, :ends[1][1] + 1] < 0).all()  # the wrong one down


def test_min_form_refuses_a_layout_it_cannot_read(parts):
    example, model = parts
    config = _config(example, model)
    config["algorithm"] = {"adv_estimator": "grpo_min_form"}
    config["rewardsql"]["reward_manager"]["process_placement"] = "fill"
    with pytest.raises(ConfigError, match="grpo_min_form reads step scores") as info:
        read_settings(config)
    assert info.value.key == "rewardsql.reward_manager.process_placement"

def test_a_few_grpo_steps_with_process_rewards(parts, tmp_path):
    from rewardsql.training.local.local import run_local

    example, model = parts
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_local(_config(example, model), tmp_path)
    finally:
        torch.set_num_threads(before)
    assert result.global_step == 2
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        assert math.isfinite(record["actor/loss"]) and math.isfinite(record["actor/pg_loss"])
    assert any(record["advantage/std"] > 0 for record in records)
    # sql_prm's per-response statuses and counts, under the names verl reports them by (its
    # rollout dumps), as batch means: every response has exactly one status
    statuses = [f"prm_status_{name}" for name in PRM_STATUSES]
    for record in records:
        assert all(0 <= record[key] <= 1 for key in statuses), record
        assert sum(record[key] for key in statuses) == pytest.approx(1.0)
        assert record["prm_status_off"] == 0  # the process weight is on
        assert record["prm_steps"] >= 0 and record["prm_seconds"] >= 0
        # step_end: one rewarded token per scored step
        assert record["prm_reward_tokens"] == pytest.approx(record["prm_steps"])
        assert 0 <= record["prm_step_score"] <= 1
        assert record["acc"] == record["accuracy"]
    assert any(record["prm_status_ok"] > 0 and record["prm_steps"] > 0 for record in records)
    # the same values in TensorBoard, step by step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    for key in (*statuses, "prm_steps", "prm_reward_tokens", "prm_step_score"):
        logged = {e.step: e.value for e in events.Scalars(key)}
        assert logged == {r["step"]: pytest.approx(r[key]) for r in records}, key
