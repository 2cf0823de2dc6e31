"""Dynamic sampling (``algorithm.filter_groups``, DAPO) in the local engine, on real parts: the
bundled example, a tiny model taught two of its questions, the real SQL verifier and the real
``grpo_weighted`` plugin. Groups whose rewards are all equal carry no GRPO signal; the engine
draws more prompt batches until it has ``train_batch_size`` groups that differ."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from _engine_helpers import build_fixture, engine_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is faster on shared cores
    yield build_fixture(tmp_path_factory.mktemp("dynamic"))
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mixed_train(fixture) -> Path:
    """Two questions the policy was never taught (their groups are all wrong) followed by the two
    it was taught (their groups mix right and wrong answers)."""
    taught = pd.read_parquet(fixture["train"])
    example = pd.read_parquet(fixture["train"].parent / "example" / "train.parquet")
    untaught = example[~example["extra_info"].map(lambda e: e["question_id"]).isin(
        taught["extra_info"].map(lambda e: e["question_id"]))]
    # the longest gold queries: the policy cannot write them by chance
    lengths = untaught["reward_model"].map(lambda rm: len(rm["ground_truth"]))
    hard = untaught.loc[lengths.sort_values(kind="stable").index[-2:]]
    path = fixture["train"].parent / "mixed4.parquet"
    pd.concat([hard, taught], ignore_index=True).to_parquet(path)
    return path


def _dynamic(fixture, train: Path, **filter_groups) -> dict:
    return engine_config(
        fixture,
        data={"train_files": str(train), "train_batch_size": 1, "shuffle": False},
        actor_rollout_ref={"actor": {"ppo_mini_batch_size": 1}, "rollout": {"n": 8}},
        algorithm={"filter_groups": {"enable": True, "metric": "acc", **filter_groups}},
        trainer={"save_freq": 1})


def _parts(fixture, config):
    from rewardsql.training.local.local import (
        load_model,
        load_prompts,
        load_tokenizer,
        seed_everything,
    )
    from rewardsql.training.local.scoring import RewardSource
    from rewardsql.training.local.settings import read_settings

    settings = read_settings(config)
    seed_everything(settings.rollout_seed)
    tokenizer = load_tokenizer(settings)
    model = load_model(settings.model_path, settings, torch.device("cpu"))
    return settings, tokenizer, model, load_prompts(settings, tokenizer, val=False), RewardSource(
        settings, tokenizer)


def _scores_by_group(sampled) -> dict[str, list[float]]:
    groups: dict[str, list[float]] = {}
    for uid, result in zip(sampled.uids.tolist(), sampled.results, strict=True):
        groups.setdefault(uid, []).append(float(result.extra["acc"]))
    return groups


def test_skips_groups_whose_rewards_are_all_equal(fixture, mixed_train):
    from rewardsql.training.local.checkpoint import TrainerState
    from rewardsql.training.local.local import _sample

    settings, tokenizer, model, prompts, reward = _parts(fixture, _dynamic(fixture, mixed_train))
    state = TrainerState(global_step=0, epoch=0, batch_in_epoch=0, dev_history=[])
    try:
        sampled = _sample(state, model=model, tokenizer=tokenizer, prompts=prompts,
                          reward=reward, settings=settings)
    finally:
        reward.close()
    # the two untaught questions come first (no shuffling) and are all wrong: both skipped
    assert sampled.gen_batches >= 3 and state.batches_drawn == sampled.gen_batches
    assert [float(r.extra["acc"]) for r in sampled.all_results[:16]] == [0.0] * 16
    groups = _scores_by_group(sampled)
    assert len(groups) == 1
    (scores,) = groups.values()
    assert len(scores) == 8 and min(scores) == 0.0 and max(scores) == 1.0
    # the kept rows are the taught question's, with the responses that were scored
    kept_prompt = sampled.prompts[0].input_ids
    assert all(p.input_ids == kept_prompt for p in sampled.prompts)
    row = sampled.rollout.input_ids[0, :sampled.rollout.prompt_length]
    assert row[sampled.rollout.attention_mask[0, :sampled.rollout.prompt_length].bool()
               ].tolist() == list(kept_prompt)
    assert len(sampled.all_results) == 8 * sampled.gen_batches


def test_gives_up_after_max_num_gen_batches(fixture, mixed_train, caplog):
    from rewardsql.training.local.checkpoint import TrainerState
    from rewardsql.training.local.local import _sample

    config = _dynamic(fixture, mixed_train, max_num_gen_batches=2)
    settings, tokenizer, model, prompts, reward = _parts(fixture, config)
    state = TrainerState(global_step=0, epoch=0, batch_in_epoch=0, dev_history=[])
    with caplog.at_level(logging.WARNING, logger="rewardsql.training.local.local"):
        try:
            sampled = _sample(state, model=model, tokenizer=tokenizer, prompts=prompts,
                              reward=reward, settings=settings)
        finally:
            reward.close()
    # two batches, both untaught: nothing differs, so the step trains on the last batch as drawn
    assert sampled.gen_batches == 2 and state.batches_drawn == 2
    assert "no group with differing rewards in 2 batches" in caplog.text
    assert len(sampled.results) == 8 and all(r.extra["acc"] == 0 for r in sampled.results)


def test_concatenated_rollouts_keep_their_log_probs(fixture, mixed_train):
    from rewardsql.training.local.rollout import (
        batched_log_probs,
        concat_rollouts,
        generate,
        pad_id,
    )

    _, tokenizer, model, prompts, reward = _parts(fixture, _dynamic(fixture, mixed_train))
    reward.close()
    short, long_ = sorted(prompts, key=lambda p: len(p.input_ids))[::3]
    assert len(short.input_ids) < len(long_.input_ids)
    parts = [generate(model, tokenizer, [p.input_ids] * 2, max_new_tokens=12, do_sample=True,
                      temperature=1.0, top_p=1.0, top_k=-1) for p in (long_, short)]
    joined = concat_rollouts(parts, pad_id(tokenizer))
    assert joined.prompt_length == parts[0].prompt_length and len(joined) == 4
    separate = torch.cat([batched_log_probs(model, p, temperature=1.0, batch_size=None)
                          for p in parts])
    together = batched_log_probs(model, joined, temperature=1.0, batch_size=None)
    mask = joined.response_mask.bool()
    torch.testing.assert_close(together[mask], separate[mask], rtol=1e-4, atol=1e-5)


def test_a_dynamic_run_resumes_where_it_stopped(fixture, mixed_train, tmp_path):
    from rewardsql.training.local.local import run_local

    config = _dynamic(fixture, mixed_train)
    config["trainer"]["total_training_steps"] = 2
    out = tmp_path / "full"
    full = run_local(config, out)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["filter_groups/gen_batches"] >= 1 for r in records)
    state = json.loads((out / "checkpoints" / "global_step_2" / "trainer_state.json").read_text())
    assert state["batches_drawn"] == sum(r["filter_groups/gen_batches"] for r in records)
    # every prompt of every batch drawn, the left-out ones included
    batch = config["data"]["train_batch_size"]
    assert len(full.trained_prompts) == state["batches_drawn"] * batch

    resumed = tmp_path / "resumed"
    shutil.copytree(out / "checkpoints" / "global_step_1",
                    resumed / "checkpoints" / "global_step_1")
    (resumed / "metrics.jsonl").write_text(
        (out / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    assert run_local(config, resumed).trained_prompts == full.trained_prompts
    again = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    for key in ("filter_groups/gen_batches", "reward/mean", "actor/loss"):
        assert again[1][key] == pytest.approx(records[1][key], rel=1e-5, abs=1e-7), key
