"""The verl bridge against the real verl 0.9.1 registries, reward loop base class and DataProto."""

from __future__ import annotations

import asyncio
import textwrap
from typing import ClassVar

import numpy as np
import pytest
import torch
from _core_helpers import BROKEN_PLUGIN, GOOD_PLUGIN

pytest.importorskip("verl")

import rewardsql
from omegaconf import OmegaConf
from rewardsql.verl_bridge import (
    install_into_verl,
    manager_settings,
    request_from_dataproto,
    verl_reward_manager_class,
)


def test_import_verl_registers_plugins_in_a_fresh_interpreter(fake_site):
    """Acceptance: no rewardsql import in user code; `import verl` is enough."""
    fake_site.add("good-plugin", "fake_good", GOOD_PLUGIN)
    fake_site.add("broken-plugin", "fake_broken", BROKEN_PLUGIN)
    script = textwrap.dedent("""
        import verl
        from verl.trainer.ppo.core_algos import get_adv_estimator_fn
        from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

        fn = get_adv_estimator_fn("double_adv")
        alias = get_adv_estimator_fn("compute_double_advantage")
        manager_cls = get_reward_manager_cls("length_manager")

        import fake_good
        assert fn is fake_good.double_adv and alias is fake_good.double_adv
        assert manager_cls.wrapped is fake_good.LengthManager
        print("OK")
    """)
    result = fake_site.run("-c", script, REWARDSQL_PLUGINS="good-plugin,broken-plugin")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"
    # verl swallows plugin errors; the bridge names the broken plugin and its cause
    assert "broken-plugin" in result.stderr and "boom at import" in result.stderr


def test_local_decorator_after_verl_import_reaches_verl(fake_site):
    script = textwrap.dedent("""
        import verl
        import rewardsql
        from verl.trainer.ppo.core_algos import get_adv_estimator_fn

        @rewardsql.register_advantage_estimator("script_est", aliases=("compute_script_est",))
        def script_est(token_level_rewards, response_mask, **kwargs):
            return token_level_rewards, token_level_rewards

        assert get_adv_estimator_fn("compute_script_est") is script_est
        print("OK")
    """)
    result = fake_site.run("-c", script, REWARDSQL_PLUGINS="none")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


def test_install_is_idempotent_and_reports_taken_names(fake_site, monkeypatch):
    from verl.trainer.ppo import core_algos

    fake_site.add("good-plugin", "fake_good", GOOD_PLUGIN)
    fake_site.add(
        "grpo-thief",
        "fake_thief",
        """
        import rewardsql

        def not_grpo(token_level_rewards, response_mask, **kwargs):
            return token_level_rewards, token_level_rewards

        @rewardsql.hookimpl
        def rewardsql_advantage_estimators(register):
            register("grpo_vectorized", not_grpo)
    """,
    )
    monkeypatch.setenv("REWARDSQL_PLUGINS", "good-plugin,grpo-thief")
    first = install_into_verl()
    second = install_into_verl()
    assert ("advantage_estimator", "double_adv") in first.registered
    assert ("reward_manager", "length_manager") in first.registered
    assert first.registered == second.registered
    assert any(who == "grpo-thief:grpo_vectorized" for who, _ in first.failed)
    # verl's own estimator is untouched
    assert core_algos.get_adv_estimator_fn("grpo_vectorized").__module__ == core_algos.__name__


# -- the reward-manager adapter on a real DataProto ---------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [
        "<pad>",
        "<eos>",
        "SELECT",
        "name",
        "FROM",
        "singer",
        "WHERE",
        "age",
        ">",
        "30",
        "question",
        ":",
        "who",
    ]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def _batch(tokenizer, prompts: list[str], responses: list[str], width: int = 8):
    from verl import DataProto

    def pad(texts: list[str], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(texts), width), tokenizer.pad_token_id)
        mask = torch.zeros(len(texts), width, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = tokenizer.encode(text, add_special_tokens=False)
            span = slice(width - len(tokens), width) if left else slice(0, len(tokens))
            ids[row, span] = torch.tensor(tokens)
            mask[row, span] = 1
        return ids, mask

    prompt_ids, prompt_mask = pad(prompts, left=True)
    response_ids, response_mask = pad(responses, left=False)
    n = len(prompts)
    return DataProto.from_dict(
        tensors={
            "prompts": prompt_ids,
            "responses": response_ids,
            "input_ids": torch.cat([prompt_ids, response_ids], 1),
            "attention_mask": torch.cat([prompt_mask, response_mask], 1),
        },
        non_tensors={
            "data_source": np.array(["spider"] * n, dtype=object),
            "reward_model": np.array(
                [{"ground_truth": f"gold {i}"} for i in range(n)], dtype=object
            ),
            "extra_info": np.array([{"db_id": f"db{i}"} for i in range(n)], dtype=object),
        },
    )


class RecordingManager(rewardsql.RewardManager):
    """Scores by response length; records every score_batch call (a real manager, no mock)."""

    batches: ClassVar[list[list[rewardsql.RewardRequest]]] = []

    def score_batch(self, requests):
        type(self).batches.append(list(requests))
        dense = self.config.get("dense", False)
        return [
            rewardsql.RewardResult(
                score=float(len(r.response_token_ids)),
                token_rewards=[0.5] * len(r.response_token_ids) if dense else None,
                extra={"length": len(r.response_token_ids)},
            )
            for r in requests
        ]


def test_request_from_dataproto_decodes_one_sample(tokenizer):
    data = _batch(tokenizer, ["who :", "question"], ["SELECT name FROM singer", "SELECT"])
    request = request_from_dataproto(data[1:2], tokenizer)
    assert request.response == "SELECT"
    assert request.prompt == "question"
    assert request.ground_truth == "gold 1"
    assert request.extra_info == {"db_id": "db1"}
    assert request.data_source == "spider"
    assert len(request.response_token_ids) == 1


@pytest.mark.parametrize("dense", [False, True])
def test_adapter_scores_a_chunk_with_one_batch_call(tokenizer, dense):
    adapter_cls = verl_reward_manager_class(RecordingManager)
    assert verl_reward_manager_class(RecordingManager) is adapter_cls  # cached
    config = OmegaConf.create({"rewardsql": {"reward_manager": {"dense": dense}}})
    adapter = adapter_cls(config=config, tokenizer=tokenizer, compute_score=None)
    assert adapter.manager.config == {"dense": dense}
    responses = ["SELECT name FROM singer WHERE age > 30", "SELECT name", "SELECT"]
    data = _batch(tokenizer, ["who"] * 3, responses)
    RecordingManager.batches = []

    async def verl_style():  # what RewardLoopWorker.compute_score_batch does
        tasks = [asyncio.create_task(adapter.run_single(data[i : i + 1])) for i in range(len(data))]
        return await asyncio.gather(*tasks)

    outputs = asyncio.run(verl_style())
    assert len(RecordingManager.batches) == 1
    assert [r.response for r in RecordingManager.batches[0]] == responses
    assert [o["reward_extra_info"]["length"] for o in outputs] == [8, 2, 1]
    scores = [o["reward_score"] for o in outputs]
    rm = adapter_cls.assemble_rm_scores(data, scores)
    assert rm.shape == (3, 8) and rm.dtype == torch.float32
    if dense:
        assert rm[0].tolist() == [0.5] * 8
        assert rm[1].tolist() == [0.5, 0.5] + [0.0] * 6
    else:
        assert rm[0, 7] == 8 and rm[1, 1] == 2 and rm[2, 0] == 1
        assert rm.count_nonzero() == 3


def test_adapter_propagates_a_manager_error_to_every_sample(tokenizer):
    class Failing(rewardsql.RewardManager):
        def score_batch(self, requests):
            raise RuntimeError("database pool is down")

    adapter = verl_reward_manager_class(Failing)(OmegaConf.create({}), tokenizer, None)
    data = _batch(tokenizer, ["who"] * 2, ["SELECT", "SELECT name"])

    async def run():
        tasks = [asyncio.create_task(adapter.run_single(data[i : i + 1])) for i in range(2)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(run())
    assert all(isinstance(r, RuntimeError) and "pool is down" in str(r) for r in results)


def test_manager_settings_reads_the_rewardsql_section():
    assert manager_settings(OmegaConf.create({})) == {}
    assert manager_settings({"rewardsql": {"reward_manager": {"a": 1}}}) == {"a": 1}
    cfg = OmegaConf.create({"x": 2, "rewardsql": {"reward_manager": {"a": "${x}"}}})
    assert manager_settings(cfg) == {"a": 2}
