"""The verl bridge against the real verl 0.9.1 registries, reward loop base class and DataProto."""

from __future__ import annotations

import asyncio
import functools
import textwrap
import time
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import torch
from _core_helpers import BROKEN_PLUGIN, GOOD_PLUGIN

pytest.importorskip("verl")

import rewardsql
from omegaconf import OmegaConf
from rewardsql.section import read_section
from rewardsql.verl_bridge import (
    install_into_verl,
    request_from_dataproto,
    verl_reward_manager_class,
)


@pytest.mark.slow
def test_import_verl_registers_plugins_in_a_fresh_interpreter(fake_site):
    """Acceptance: no rewardsql import in user code; `import verl` is enough."""
    fake_site.add("good-plugin", "fake_good", GOOD_PLUGIN)
    fake_site.add("broken-plugin", "fake_broken", BROKEN_PLUGIN)
    script = textwrap.dedent("""
        import sys
        import verl
        # registration waits for verl's own registry imports: `import verl` alone stays cheap
        assert "verl.trainer.ppo.core_algos" not in sys.modules
        assert "verl.experimental.reward_loop" not in sys.modules
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


@pytest.mark.slow
def test_plugin_that_imports_verl_while_loading(fake_site):
    """rewardsql loads first; loading a plugin imports verl, whose hook calls back into us."""
    fake_site.add(
        "verl-user",
        "fake_verl_user",
        """
        import rewardsql
        from verl.trainer.ppo import core_algos  # noqa: F401

        def my_adv_x(token_level_rewards, response_mask, **kwargs):
            return token_level_rewards, token_level_rewards

        @rewardsql.hookimpl
        def rewardsql_advantage_estimators(register):
            register("my_adv_x", my_adv_x)
    """,
    )
    script = textwrap.dedent("""
        import rewardsql
        fn = rewardsql.get_advantage_estimator("my_adv_x")
        from verl.trainer.ppo.core_algos import get_adv_estimator_fn
        assert get_adv_estimator_fn("my_adv_x") is fn
        print("OK")
    """)
    result = fake_site.run("-c", script, REWARDSQL_PLUGINS="verl-user")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


@pytest.mark.slow
def test_local_decorator_after_verl_import_reaches_verl(fake_site):
    script = textwrap.dedent("""
        import verl
        import rewardsql
        from verl.trainer.ppo.core_algos import get_adv_estimator_fn

        @rewardsql.register_advantage_estimator("script_est", aliases=("compute_script_est",))
        def script_est(token_level_rewards, response_mask, **kwargs):
            return token_level_rewards, token_level_rewards

        assert get_adv_estimator_fn("compute_script_est") is script_est

        @rewardsql.register_advantage_estimator("script_est")  # a re-run notebook cell
        def script_est_v2(token_level_rewards, response_mask, **kwargs):
            return token_level_rewards, token_level_rewards

        assert get_adv_estimator_fn("script_est") is script_est_v2
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
    # aliases reach verl too (the slow fresh-interpreter test checks the same through `import
    # verl`; this one keeps CI without slow tests honest)
    assert ("advantage_estimator", "compute_double_advantage") in first.registered
    estimator = core_algos.get_adv_estimator_fn("double_adv")
    assert core_algos.get_adv_estimator_fn("compute_double_advantage") is estimator
    assert estimator.__module__ == "fake_good"
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
    active = 0
    max_active = 0
    delay = 0.0

    def score_batch(self, requests):
        cls = type(self)
        cls.active += 1
        cls.max_active = max(cls.max_active, cls.active)
        time.sleep(cls.delay)
        cls.batches.append(list(requests))
        dense = self.config.get("dense", False)
        cls.active -= 1
        return [
            rewardsql.RewardResult(
                score=float(len(r.response_token_ids)),
                token_rewards=[0.5] * len(r.response_token_ids) if dense else None,
                extra={"length": len(r.response_token_ids)},
            )
            for r in requests
        ]


@pytest.fixture
def recording():
    RecordingManager.batches, RecordingManager.max_active, RecordingManager.delay = [], 0, 0.0
    return RecordingManager


def _verl_config(outcome_weight=None, **manager_settings):
    section = {"reward_manager": manager_settings}
    if outcome_weight is not None:
        section["reward_weights"] = {"process": 0.0, "outcome": outcome_weight}
    return OmegaConf.create(
        {
            "reward": {"custom_reward_function": {"path": None}, "reward_model": {"enable": False}},
            "rewardsql": section,
        }
    )


def test_request_from_dataproto_decodes_one_sample(tokenizer):
    data = _batch(tokenizer, ["who :", "question"], ["SELECT name FROM singer", "SELECT"])
    request = request_from_dataproto(data[1:2], tokenizer)
    assert request.response == "SELECT"
    assert request.prompt == "question"
    assert request.ground_truth == "gold 1"
    assert request.extra_info == {"db_id": "db1"}
    assert request.data_source == "spider"
    assert len(request.response_token_ids) == 1


def test_adapter_through_verls_reward_loop_worker(tokenizer, recording):
    """verl's own RewardLoopWorker.compute_score_batch drives the adapter (no Ray needed)."""
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    adapter_cls = verl_reward_manager_class(RecordingManager)
    assert verl_reward_manager_class(RecordingManager) is adapter_cls  # cached
    config = _verl_config(flag=1)
    # verl hands its default dispatcher to every manager; ours must not see it
    adapter = adapter_cls(config=config, tokenizer=tokenizer, compute_score=print)
    assert adapter.manager.config == {"flag": 1}
    assert adapter.manager.compute_score is None
    worker = SimpleNamespace(config=config, reward_manager=adapter)
    worker.compute_score = functools.partial(RewardLoopWorker.compute_score, worker)
    responses = ["SELECT name FROM singer WHERE age > 30", "SELECT name", "SELECT"]
    data = _batch(tokenizer, ["who"] * 3, responses)

    outputs = asyncio.run(RewardLoopWorker.compute_score_batch(worker, data))

    assert [len(b) for b in recording.batches] == [3]  # one score_batch for the chunk
    assert [r.response for r in recording.batches[0]] == responses
    assert [o["reward_score"] for o in outputs] == [8.0, 2.0, 1.0]
    assert [o["reward_extra_info"] for o in outputs] == [{"length": n} for n in (8, 2, 1)]
    rm = adapter_cls.assemble_rm_scores(data, [o["reward_score"] for o in outputs])
    assert rm[0, 7] == 8 and rm[1, 1] == 2 and rm[2, 0] == 1 and rm.count_nonzero() == 3


def test_adapter_batches_staggered_arrivals_one_call_at_a_time(tokenizer, recording):
    """The agent-loop path: samples arrive as rollouts finish, while scoring is in progress."""
    recording.delay = 0.05
    adapter = verl_reward_manager_class(RecordingManager)(_verl_config(), tokenizer, None)
    data = _batch(tokenizer, ["who"] * 12, ["SELECT name"] * 12)

    async def agent_loop():
        async def arrive(i):
            await asyncio.sleep(0.01 * i)
            return await adapter.run_single(data[i : i + 1])

        return await asyncio.gather(*(arrive(i) for i in range(12)))

    outputs = asyncio.run(agent_loop())
    assert [o["reward_score"] for o in outputs] == [2.0] * 12
    sizes = [len(b) for b in recording.batches]
    assert sum(sizes) == 12
    assert recording.max_active == 1  # never two score_batch calls on one manager at once
    assert max(sizes) > 1 and len(sizes) < 12  # later arrivals were batched


@pytest.mark.parametrize(
    ("manager", "message"),
    [
        ("dense", "returned token_rewards, but verl 0.9.1's reward loop takes one score"),
        ("failing", "database pool is down"),
        ("nan", "has a non-finite score nan"),
    ],
)
def test_adapter_errors_reach_every_sample(tokenizer, recording, manager, message):
    class Failing(rewardsql.RewardManager):
        def score_batch(self, requests):
            raise RuntimeError("database pool is down")

    class NotANumber(rewardsql.RewardManager):
        def score_batch(self, requests):
            return [rewardsql.RewardResult(float("nan")) for _ in requests]

    cls = {"dense": RecordingManager, "failing": Failing, "nan": NotANumber}[manager]
    adapter = verl_reward_manager_class(cls)(_verl_config(dense=True), tokenizer, None)
    data = _batch(tokenizer, ["who"] * 2, ["SELECT", "SELECT name"])

    async def run():
        tasks = [asyncio.create_task(adapter.run_single(data[i : i + 1])) for i in range(2)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(run())
    assert all(isinstance(r, Exception) and message in str(r) for r in results), results


def test_adapter_applies_the_outcome_weight_to_scores_only(tokenizer, recording):
    adapter = verl_reward_manager_class(RecordingManager)(_verl_config(0.25), tokenizer, None)
    data = _batch(tokenizer, ["who"] * 2, ["SELECT name FROM singer", "SELECT"])

    async def run():
        return await asyncio.gather(*(adapter.run_single(data[i : i + 1]) for i in range(2)))

    outputs = asyncio.run(run())
    assert [o["reward_score"] for o in outputs] == [1.0, 0.25]  # lengths 4 and 1, times 0.25
    assert [o["reward_extra_info"] for o in outputs] == [{"length": 4}, {"length": 1}]
    # unset: scores as the manager gave them
    assert read_section(_verl_config()).reward_weights.outcome == 1.0


def test_the_bridge_reads_the_rewardsql_section():
    assert read_section(OmegaConf.create({})).reward_manager == {}
    assert read_section({"rewardsql": {"reward_manager": {"a": 1}}}).reward_manager == {"a": 1}
    cfg = OmegaConf.create({"x": 2, "rewardsql": {"reward_manager": {"a": "${x}"}}})
    assert read_section(cfg).reward_manager == {"a": 2}


# -- the original RewardSQL README's shapes in verl's reward loop ------------------------------


@pytest.fixture
def readme_plugin(fake_site, monkeypatch):
    import importlib

    import _readme_plugin

    _readme_plugin.install(fake_site.root)
    fake_site.modules.append(_readme_plugin.MODULE)
    importlib.invalidate_caches()
    monkeypatch.setenv("REWARDSQL_PLUGINS", _readme_plugin.DIST)
    return _readme_plugin


def _check_db(tmp_path):
    from rewardsql.checks import _make_check_database

    return str(_make_check_database(tmp_path))


def _with_db(data, db_root, gold):
    n = len(data)
    data.non_tensor_batch["extra_info"] = np.array(
        [{"db_id": "rewardsql_check", "db_root": db_root, "question_id": i} for i in range(n)],
        dtype=object)
    data.non_tensor_batch["reward_model"] = np.array([{"ground_truth": gold}] * n, dtype=object)
    return data


def test_readme_function_through_verls_naive_reward_loop(tokenizer, readme_plugin, tmp_path):
    """verl loads the function by path from the config (as every Ray worker does), its naive
    reward-loop manager calls it; the parameters are bound by name."""
    from rewardsql.signatures import dispatch_kwargs
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
    from verl.trainer.ppo.reward import get_custom_reward_fn

    entry, kwargs = dispatch_kwargs(f"pkg://{readme_plugin.MODULE}", "sql_reward_function",
                                    {"port": 5432})
    config = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": "pkg://rewardsql.signatures", "name": entry, "reward_kwargs": kwargs}}})
    gold = "SELECT name FROM singer WHERE age > 30"
    data = _with_db(_batch(tokenizer, ["who"] * 2, [gold, "SELECT name FROM singer"]),
                    _check_db(tmp_path), gold)

    async def run():  # verl's manager keeps the loop it was built in
        manager = NaiveRewardManager(config, tokenizer, get_custom_reward_fn(config))
        worker = SimpleNamespace(config=config, reward_manager=manager)
        worker.compute_score = functools.partial(RewardLoopWorker.compute_score, worker)
        return await RewardLoopWorker.compute_score_batch(worker, data)

    outputs = asyncio.run(run())

    assert [o["reward_score"] for o in outputs] == [1.0, 0.0]
    import readme_sql_plugin

    assert sorted(readme_sql_plugin.CALLS) == [(5432, "rewardsql_check", 0),
                                               (5432, "rewardsql_check", 1)]


def test_readme_function_error_names_the_function(tokenizer, readme_plugin):
    from rewardsql.signatures import compute_score, dispatch_kwargs

    _, kwargs = dispatch_kwargs(f"pkg://{readme_plugin.MODULE}", "sql_reward_function", {},
                                label="readme_sql_reward, readme-sql-plugin")
    with pytest.raises(TypeError, match="nothing binds parameter 'port'"):
        compute_score("d", "SELECT 1", "SELECT 1", {"db_id": "x", "question_id": 1}, **kwargs)
    _, kwargs = dispatch_kwargs(f"pkg://{readme_plugin.MODULE}", "sql_reward_function",
                                {"port": 1}, label="readme_sql_reward, readme-sql-plugin")
    with pytest.raises(RuntimeError, match=r"readme_sql_reward, readme-sql-plugin raised "
                                           r"KeyError: 'db_root'"):
        compute_score("d", "SELECT 1", "SELECT 1", {"db_id": "x", "question_id": 1}, **kwargs)


def test_readme_legacy_manager_through_verls_reward_loop(tokenizer, readme_plugin, tmp_path):
    """The legacy-shape manager, registered by decorator, installed into verl's registry by the
    bridge and driven by verl's RewardLoopWorker; dense rows are refused with the reason."""
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

    install_into_verl()
    adapter_cls = get_reward_manager_cls("readme_manager")
    assert adapter_cls.wrapped.wrapped.__name__ == "ReadmeRewardManager"
    gold = "SELECT name FROM singer WHERE age > 30"
    db_root = _check_db(tmp_path)
    for dense in (False, True):
        config = _verl_config(port=5432, dense=dense)
        worker = SimpleNamespace(config=config,
                                 reward_manager=adapter_cls(config, tokenizer, None))
        worker.compute_score = functools.partial(RewardLoopWorker.compute_score, worker)
        data = _with_db(_batch(tokenizer, ["who"] * 2, [gold, "SELECT name"]), db_root, gold)
        if not dense:
            outputs = asyncio.run(RewardLoopWorker.compute_score_batch(worker, data))
            assert [o["reward_score"] for o in outputs] == [1.0, 0.0]
            assert [o["reward_extra_info"] for o in outputs] == [{"acc": 1.0}, {"acc": 0.0}]
        else:
            with pytest.raises(
                    ValueError, match="one score per sample except on its colocated reward-model"):
                asyncio.run(RewardLoopWorker.compute_score_batch(worker, data))


def test_a_raising_manager_in_verl_names_plugin_and_component(tokenizer, fake_site, monkeypatch):
    fake_site.add("raising-plugin", "fake_raising", """
        import rewardsql

        class Raising(rewardsql.RewardManager):
            def score_batch(self, requests):
                raise ConnectionError("sql service on port 5432 refused")

        @rewardsql.hookimpl
        def rewardsql_reward_managers(register):
            register("raising_manager", Raising)
    """)
    monkeypatch.setenv("REWARDSQL_PLUGINS", "raising-plugin")
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

    install_into_verl()
    adapter = get_reward_manager_cls("raising_manager")(_verl_config(), tokenizer, None)
    data = _batch(tokenizer, ["who"], ["SELECT"])
    with pytest.raises(RuntimeError) as err:
        asyncio.run(adapter.run_single(data[0:1]))
    assert str(err.value) == ("reward manager 'raising_manager' of plugin 'raising-plugin' raised "
                              "ConnectionError: sql service on port 5432 refused")


def test_core_function_env_registers_a_plain_function_in_a_fresh_verl(fake_site):
    """What every Ray process does: REWARDSQL_CORE_FUNCTIONS names module:function."""
    (fake_site.root / "plain_algos.py").write_text(textwrap.dedent("""
        def compute_my_advantage(token_level_rewards, response_mask, **kwargs):
            return token_level_rewards, token_level_rewards
    """))
    fake_site.modules.append("plain_algos")
    probe = ("from verl.trainer.ppo import core_algos; "
             "fn = core_algos.get_adv_estimator_fn('compute_my_advantage'); "
             "print(fn.__module__, fn.__name__)")
    result = fake_site.run("-c", probe, REWARDSQL_PLUGINS="none",
                           REWARDSQL_CORE_FUNCTIONS="plain_algos:compute_my_advantage")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["plain_algos", "compute_my_advantage"]
