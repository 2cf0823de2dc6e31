"""``rewardsql train`` with what the original RewardSQL README shows: its reward function and
legacy manager (an installed plugin package), ``--core_algos``/``--core_function`` with a plain
function, ``--algorithm grpo|ppo|prime``; dry runs on the bundled example's real parquet files and
a few local-engine steps with the tiny model and real SQL rewards."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import _readme_plugin
import pytest
import yaml
from _tiny_helpers import quick_example, tiny_model
from rewardsql.errors import ConfigError
from rewardsql.training.launcher import TrainOptions, build_plan


@pytest.fixture
def readme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    site = _readme_plugin.install(tmp_path / "site")
    sys.modules.pop(_readme_plugin.MODULE, None)  # another test's copy: import this site's
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv("REWARDSQL_PLUGINS", _readme_plugin.DIST)
    yield site
    sys.modules.pop(_readme_plugin.MODULE, None)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return quick_example(tmp_path_factory)


def _config(tmp_path: Path, example: Any, model: Path | str = "/models/none",
            **sections: Any) -> Path:
    """A small local-engine config on the example's data (verl's key names)."""
    import pandas as pd

    dev = tmp_path / "dev2.parquet"  # the last step is evaluated: keep it to two questions
    pd.read_parquet(example.dev_parquet).head(2).to_parquet(dev)
    config: dict[str, Any] = {
        "data": {"train_files": str(example.train_parquet), "val_files": str(dev),
                 "train_batch_size": 2, "max_prompt_length": 256, "max_response_length": 24,
                 "seed": 0},
        "actor_rollout_ref": {
            "model": {"path": str(model)},
            "actor": {"optim": {"lr": 1e-4}, "ppo_mini_batch_size": 2,
                      "ppo_micro_batch_size_per_gpu": 4},
            "rollout": {"n": 2, "temperature": 1.0, "seed": 0},
        },
        "trainer": {"total_training_steps": 2, "save_freq": -1, "test_freq": -1,
                    "val_before_train": False, "resume_mode": "disable", "device": "cpu",
                    "logger": ["console"]},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _plan(tmp_path: Path, config: Path, **options: Any) -> Any:
    return build_plan(TrainOptions(output_dir=tmp_path / "out", config=config, engine="local",
                                   **options))


README_REWARD = {"reward": {"reward_manager": {"name": "naive"}},
                 "rewardsql": {"reward_function": "readme_sql_reward"}}


def test_dry_run_names_the_parameter_nothing_binds(readme, tmp_path, example):
    config = _config(tmp_path, example, **README_REWARD)
    with pytest.raises(ConfigError) as err:
        _plan(tmp_path, config, algorithm="grpo")
    message = str(err.value)
    assert "key 'reward.custom_reward_function.reward_kwargs'" in message
    assert "nothing binds parameter 'port'" in message
    # the keys the data's extra_info has, so the user sees db_id and question_id are found
    assert "extra_info (db_id, db_root, index, question_id, split)" in message


def test_dry_run_points_verl_at_the_binding_adapter(readme, tmp_path, example):
    config = _config(tmp_path, example, rewardsql=README_REWARD["rewardsql"],
                     reward={"reward_manager": {"name": "naive"}, "custom_reward_function":
                             {"reward_kwargs": {"port": 5432}}})
    plan = _plan(tmp_path, config, algorithm="grpo")
    function = plan.config.reward.custom_reward_function
    assert (function.path, function.name) == ("pkg://rewardsql.signatures", "compute_score")
    assert function.reward_kwargs.port == 5432  # the user's keys stay where they were
    target = function.reward_kwargs.rewardsql_target
    assert (target.path, target.name) == (f"pkg://{_readme_plugin.MODULE}",
                                          "sql_reward_function")
    assert list(target.reward_kwargs) == ["port"]
    assert plan.config.algorithm.adv_estimator == "grpo"
    assert "algorithm.adv_estimator=grpo: the estimator suited to --algorithm grpo" in plan.notes


@pytest.mark.parametrize(("options", "key", "text"), [
    ({}, "algorithm.adv_estimator",
     "no advantage estimator: pass --algorithm (grpo, rloo, ppo, ...) or --core_function NAME "
     "with --core_algos MODULE"),
    ({"algorithm": "prime"}, None,
     "PRIME is a separate verl recipe (recipe/prime in verl's repository), not part of verl "
     "0.9.1's trainer"),
    ({"algorithm": "ppo"}, "critic.model.path", "PPO (estimator gae) trains a critic"),
])
def test_algorithm_errors_before_verl(tmp_path, example, options, key, text):
    config = _config(tmp_path, example, reward={"reward_manager": {"name": "sql_verifier"}})
    with pytest.raises(ConfigError) as err:
        _plan(tmp_path, config, **options)
    assert text in str(err.value)
    assert err.value.key == key
    if options.get("algorithm") == "prime":
        assert err.value.source == "--algorithm" and "use --algorithm grpo" in str(err.value)


def test_core_function_selects_a_plain_function_in_every_process(tmp_path, example):
    algos = tmp_path / "algos" / "my_readme_algos.py"
    algos.parent.mkdir()
    algos.write_text(textwrap.dedent("""
        def compute_my_advantage(token_level_rewards, response_mask, index=None, config=None,
                                 **kwargs):
            advantages = token_level_rewards * response_mask
            return advantages, advantages
    """))
    config = _config(tmp_path, example, reward={"reward_manager": {"name": "sql_verifier"}})
    try:
        plan = _plan(tmp_path, config, algorithm="grpo", core_algos=[str(algos)],
                     core_function="compute_my_advantage")
    finally:
        sys.modules.pop("my_readme_algos", None)
    assert plan.config.algorithm.adv_estimator == "compute_my_advantage"
    env = dict(plan.config.ray_kwargs.ray_init.runtime_env.env_vars)
    assert env["REWARDSQL_CORE_FUNCTIONS"] == "my_readme_algos:compute_my_advantage"
    # what a Ray worker does: start with that environment and import verl
    probe = ("from verl.trainer.ppo import core_algos; import json; "
             "fn = core_algos.get_adv_estimator_fn('compute_my_advantage'); "
             "print(json.dumps([fn.__module__, fn.__name__]))")
    worker = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, **env}, timeout=180)
    assert worker.returncode == 0, worker.stderr
    assert json.loads(worker.stdout.strip().splitlines()[-1]) == [
        "my_readme_algos", "compute_my_advantage"]


@pytest.mark.slow
def test_local_engine_trains_with_the_readme_function_and_manager(readme, tmp_path, example,
                                                                  tmp_path_factory):
    """A few steps each: the function through the plan (verl's path and binding adapter), then
    the legacy manager delegating to it; real SQL rewards on the example's databases."""
    from rewardsql.training.launcher import launch
    from rewardsql.training.local.scoring import RewardSource
    from rewardsql.training.local.settings import read_settings

    model = tiny_model(tmp_path_factory)
    kwargs = {"custom_reward_function": {"reward_kwargs": {"port": 5432}}}
    runs = {
        "function": {"reward": {"reward_manager": {"name": "naive"}, **kwargs},
                     "rewardsql": {"reward_function": "readme_sql_reward"}},
        "manager": {"reward": {"reward_manager": {"name": "readme_manager"}, **kwargs},
                    "rewardsql": {"reward_function": "readme_sql_reward",
                                  "reward_manager": {"port": 5432}}},
    }
    plugin = importlib.import_module(_readme_plugin.MODULE)
    for name, sections in runs.items():
        root = tmp_path / name
        root.mkdir()
        plan = _plan(root, _config(root, example, model, **sections), algorithm="grpo")
        plugin.CALLS.clear()
        result = launch.run_local(plan)
        assert result.global_step == 2, name
        records = [json.loads(line) for line in
                   (root / "out" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [1, 2]
        # 2 steps x 2 prompts x 2 responses and 2 dev answers, each scored by the README
        # function with port bound from reward_kwargs, db_id and question_id from extra_info
        assert len(plugin.CALLS) == 10 and {c[0] for c in plugin.CALLS} == {5432}
        assert {c[1] for c in plugin.CALLS} <= {"shop", "school", "library", "clinic"}
        # the same reward source scores the gold answer 1 and a wrong one 0: real rewards
        source = RewardSource(read_settings(plan.config), tokenizer=_tokenizer(model))
        try:
            gold = _gold_request(example, source.manager is not None, model)
            scores = [r.score for r in source.score(gold)]
        finally:
            source.close()
        assert scores == [1.0, 0.0], name


def _tokenizer(model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def _gold_request(example: Any, tokens: bool, model: Path) -> list[Any]:
    import pandas as pd
    from rewardsql import RewardRequest

    row = pd.read_parquet(example.train_parquet).iloc[0]
    tokenizer = _tokenizer(model)
    gold = row["reward_model"]["ground_truth"]
    requests = []
    for text in (gold, "SELECT 1"):
        ids = tuple(tokenizer(text)["input_ids"]) if tokens else ()
        requests.append(RewardRequest(response=text, ground_truth=gold,
                                      data_source=row["data_source"],
                                      extra_info=dict(row["extra_info"]),
                                      response_token_ids=ids))
    return requests


def test_legacy_manager_by_module_path_is_refused_with_what_to_change(readme, tmp_path,
                                                                      example):
    config = _config(tmp_path, example, reward={"reward_manager": {
        "source": "importlib", "name": "ReadmeRewardManager",
        "module": {"path": f"pkg://{_readme_plugin.MODULE}"}}})
    with pytest.raises(ConfigError) as err:
        _plan(tmp_path, config, algorithm="grpo")
    assert err.value.key == "reward.reward_manager.source"
    assert "verl's legacy shape" in str(err.value)
    assert "@rewardsql.register_reward_manager" in str(err.value)
