"""``rewardsql train``: dry runs of the shipped and seed-style configs, errors, plugins, no GPU.

Everything runs for real on verl 0.9.1's composed config, the installed plugins and real parquet
files; nothing is mocked. There is no GPU here, so a real launch must stop before Ray starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from _train_helpers import (
    SEED_STYLE_YAML,
    SHIPPED_GRPO,
    SHIPPED_RM,
    build_spider_fixture,
    run_cli,
    write_prepared_parquet,
)
from rewardsql.cli import app
from rewardsql.training.cpu_math import CLASS_ENV
from rewardsql.training.launcher import TrainOptions, build_plan
from rewardsql_sql_reward.data.prepare import prepare
from typer.testing import CliRunner

runner = CliRunner()


def train(*args: str) -> Any:
    return runner.invoke(app, ["train", *args])


def resolved(out: Path) -> dict[str, Any]:
    return yaml.safe_load((out / "resolved_config.yaml").read_text())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.parquet and val.parquet written by `data prepare` from the Spider fixture."""
    root = tmp_path_factory.mktemp("prepared")
    spider = build_spider_fixture(root)
    prepare("spider", spider["questions"], spider["db_root"], root / "data" / "train.parquet",
            val_fraction=0.3, progress=False)
    return root / "data"


@pytest.fixture(scope="module")
def full_batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 training rows: one full batch of the shipped config."""
    root = tmp_path_factory.mktemp("full")
    spider = build_spider_fixture(root)
    folder = root / "data"
    folder.mkdir()
    return write_prepared_parquet(folder, spider["db_root"])


def test_shipped_grpo_config_dry_run(full_batch: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
                   "--output-dir", str(out), "--dry-run")
    assert result.exit_code == 0, result.output
    config = resolved(out)
    actor = config["actor_rollout_ref"]["actor"]
    rollout = config["actor_rollout_ref"]["rollout"]
    # the RewardSQL settings
    assert config["actor_rollout_ref"]["model"]["path"] == "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert config["algorithm"]["adv_estimator"] == "grpo"
    assert rollout["n"] == 8
    assert (actor["use_kl_loss"], actor["kl_loss_type"], actor["kl_loss_coef"]) == (
        True, "low_var_kl", 0.001)
    assert actor["optim"]["lr"] == 1e-6
    assert config["data"]["train_batch_size"] == 48
    assert config["data"]["max_response_length"] == 512
    assert config["trainer"]["n_gpus_per_node"] == 8
    assert config["reward"]["reward_manager"] == {
        "_target_": "verl.workers.config.reward.RewardManagerConfig", "source": "register",
        "name": "sql_verifier",
        "module": {"_target_": "verl.trainer.config.config.ModuleConfig", "path": None,
                   "name": "custom_reward_manager"}}
    assert config["reward"]["custom_reward_function"] == {
        "path": "pkg://rewardsql_sql_reward.rewards.reward_fn", "name": "compute_score"}
    # derived settings
    assert config["trainer"]["use_v1"] is False
    assert config["rewardsql"]["reward_manager"]["placement"] == "last_token"
    assert config["trainer"]["default_local_dir"] == str(out.resolve())
    assert config["data"]["train_files"] == str(full_batch.resolve() / "train.parquet")
    assert config["data"]["val_files"] == str(full_batch.resolve() / "val.parquet")
    # the summary
    assert "estimator:      grpo (verl)" in result.output
    assert "reward manager: sql_verifier (rewardsql-sql-reward" in result.output
    assert "48 prompts x 8 responses" in result.output
    assert "train.parquet (48 rows)" in result.output


def test_resolved_config_reads_back_to_the_same_config(full_batch: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
                 "-o", str(first), "--dry-run").exit_code == 0
    result = train("--config", str(first / "resolved_config.yaml"), "-o", str(second),
                   "--dry-run")
    assert result.exit_code == 0, result.output
    a, b = resolved(first), resolved(second)
    a["trainer"].pop("default_local_dir")
    b["trainer"].pop("default_local_dir")
    assert a == b


def test_data_prepare_output_feeds_training(prepared: Path, tmp_path: Path) -> None:
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(prepared),
                   "-o", str(tmp_path), "--dry-run", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "train.parquet (5 rows)" in result.output and "val.parquet (2 rows)" in result.output
    # 5 rows cannot fill a batch of 48: said, not silently zero steps
    assert "fewer than data.train_batch_size=48" in result.output
    assert resolved(tmp_path)["trainer"]["total_epochs"] == 1


def test_seed_style_config_with_underscore_options(full_batch: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "grpo_trainer.yaml"
    config_file.write_text(SEED_STYLE_YAML)
    out = tmp_path / "out"
    result = train("--config", str(config_file), "--data_path", str(full_batch),
                   "--output_dir", str(out), "--dry-run")
    assert result.exit_code == 0, result.output
    for dropped in ("data_logger", "reward_model.step_tag_id", "verifier.port",
                    "actor_rollout_ref.rollout.use_fire_sampling",
                    "trainer.remove_previous_ckpt_in_save"):
        assert f"warning: {config_file}: {dropped}: obsolete in verl 0.9.1" in result.output
    config = resolved(out)
    assert config["reward"]["reward_manager"]["name"] == "sql_verifier"
    assert config["reward"]["reward_model"]["model_path"] == "./checkpoints/prm_model"
    assert config["rewardsql"]["reward_manager"] == {"timeout": 20, "placement": "last_token"}
    assert config["rewardsql"]["reward_weights"] == {"process": 0.0, "outcome": 1.0}
    assert config["actor_rollout_ref"]["actor"]["optim"]["lr_scheduler_type"] == "constant"
    assert config["actor_rollout_ref"]["rollout"]["load_format"] == "dummy"
    assert config["critic"]["fsdp"]["param_offload"] is True
    assert config["trainer"]["log_val_generations"] == 10
    assert config["trainer"]["use_v1"] is False
    assert config["trainer"]["default_local_dir"] == str(out.resolve())
    assert "data_logger" not in config
    assert f"trainer.default_local_dir /your/save/path -> {out.resolve()}" in result.output
    assert config["reward_model"]["reward_manager"] is None  # verl's ignored legacy key stays unset


MINI_BATCH_NOTE = ("actor_rollout_ref.actor.ppo_mini_batch_size 64 -> 48 (= data.train_batch_size: "
                   "older verl ran a batch smaller than its mini-batch as one update per step; "
                   "verl 0.9.1 refuses a mini-batch larger than the batch)")


def test_the_seeds_batch_smaller_than_its_mini_batch_is_one_update_per_step(
        prepared: Path, tmp_path: Path) -> None:
    """The seed's config as a new user tries it, on `data prepare`'s Spider output, batch sizes as
    published (48 prompts, mini-batch 64): the seed's one update per step, said in a note."""
    config_file = tmp_path / "grpo_trainer.yaml"
    config_file.write_text(SEED_STYLE_YAML)
    out = tmp_path / "out"
    result = train("--config", str(config_file), "--data-path", str(prepared), "-o", str(out),
                   "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"note: {MINI_BATCH_NOTE}" in result.output
    config = resolved(out)
    assert config["data"]["train_batch_size"] == 48
    assert config["actor_rollout_ref"]["actor"]["ppo_mini_batch_size"] == 48
    assert config["critic"]["ppo_mini_batch_size"] == 48  # verl's default follows the actor's


def test_a_mini_batch_over_the_batch_is_kept_where_the_user_says_so(prepared: Path,
                                                                    tmp_path: Path) -> None:
    """Only the old shape is translated: a mini-batch set on the command line, or in a config
    of verl 0.9.1's shape, is the user's, and verl's refusal stands."""
    config_file = tmp_path / "grpo_trainer.yaml"
    config_file.write_text(SEED_STYLE_YAML)
    result = train("--config", str(config_file), "--data-path", str(prepared),
                   "-o", str(tmp_path / "a"), "--dry-run",
                   "actor_rollout_ref.actor.ppo_mini_batch_size=64")
    assert result.exit_code == 2
    assert "train_batch_size (48) must be >= actor.ppo_mini_batch_size (64)" in result.output
    new_shape = tmp_path / "new.yaml"
    new_shape.write_text(SHIPPED_GRPO.read_text().replace("ppo_mini_batch_size: 24",
                                                          "ppo_mini_batch_size: 64"))
    result = train("--config", str(new_shape), "--data-path", str(prepared),
                   "-o", str(tmp_path / "b"), "--dry-run")
    assert result.exit_code == 2
    assert "train_batch_size (48) must be >= actor.ppo_mini_batch_size (64)" in result.output


def test_unknown_key_fails_with_file_key_and_closest(full_batch: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "typo.yaml"
    config_file.write_text("actor_rollout_ref:\n  rollout:\n    name: vllm\n    temprature: 0.7\n")
    result = train("--config", str(config_file), "--data-path", str(full_batch),
                   "-o", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 2
    assert (f"error: {config_file}: key 'actor_rollout_ref.rollout.temprature': unknown key; "
            "did you mean 'actor_rollout_ref.rollout.temperature'?") in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_overrides_and_their_errors(full_batch: Path, tmp_path: Path) -> None:
    base = ["--config", str(SHIPPED_GRPO), "--data-path", str(full_batch), "-o", str(tmp_path),
            "--dry-run"]
    result = train(*base, "actor_rollout_ref.rollout.n=4", "+algorithm.weight_factor=0.3",
                   "verifier.timeout=9")
    assert result.exit_code == 0, result.output
    config = resolved(tmp_path)
    assert config["actor_rollout_ref"]["rollout"]["n"] == 4
    assert config["algorithm"]["weight_factor"] == 0.3
    assert config["rewardsql"]["reward_manager"]["timeout"] == 9
    result = train(*base, "trainer.weight_factor=0.3")
    assert result.exit_code == 2 and "+trainer.weight_factor" in result.output


def test_core_function_alias_resolves_to_canonical_name(full_batch: Path, tmp_path: Path) -> None:
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
                   "-o", str(tmp_path), "--dry-run",
                   "--core-function", "compute_weighted_grpo_advantage")
    assert result.exit_code == 0, result.output
    assert resolved(tmp_path)["algorithm"]["adv_estimator"] == "grpo_weighted"
    assert "grpo_weighted (alias compute_weighted_grpo_advantage; rewardsql-advantages" in (
        result.output)


def test_config_core_function_beats_algorithm_option(full_batch: Path, tmp_path: Path) -> None:
    seed_style = yaml.safe_load(SHIPPED_GRPO.read_text())
    seed_style["algorithm"]["core_function"] = "compute_token_wise_advantage"
    config_file = tmp_path / "with_core_function.yaml"
    config_file.write_text(yaml.safe_dump(seed_style))
    result = train("--config", str(config_file), "--data-path", str(full_batch),
                   "-o", str(tmp_path), "--dry-run", "--algorithm", "rloo")
    assert result.exit_code == 0, result.output
    assert resolved(tmp_path)["algorithm"]["adv_estimator"] == "grpo_token_wise"
    # --core-function beats both
    result = train("--config", str(config_file), "--data-path", str(full_batch),
                   "-o", str(tmp_path), "--dry-run", "--algorithm", "rloo",
                   "--core-function", "grpo_weighted")
    assert result.exit_code == 0, result.output
    assert resolved(tmp_path)["algorithm"]["adv_estimator"] == "grpo_weighted"
    # without a core function anywhere, the algorithm's own estimator
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
                   "-o", str(tmp_path), "--dry-run", "--algorithm", "rloo")
    assert result.exit_code == 0, result.output
    assert resolved(tmp_path)["algorithm"]["adv_estimator"] == "rloo"


def test_unknown_estimator_lists_what_is_available(full_batch: Path, tmp_path: Path) -> None:
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
                   "-o", str(tmp_path), "--dry-run", "--core-function", "grpo_wieghted")
    assert result.exit_code == 2
    assert "unknown advantage estimator 'grpo_wieghted'" in result.output
    for name in ("gae", "grpo", "rloo", "reinforce_plus_plus", "grpo_weighted",
                 "compute_weighted_grpo_advantage"):
        assert name in result.output


def test_ppo_algorithm_means_gae(full_batch: Path, tmp_path: Path) -> None:
    # composed and resolved only: verl's own validation would load the critic model's HF config
    plan = build_plan(TrainOptions(output_dir=tmp_path, config=SHIPPED_GRPO, algorithm="ppo",
                                   data_path=full_batch, overrides=["critic.model.path=/m"]))
    assert plan.config.algorithm.adv_estimator == "gae"
    assert plan.estimator.describe() == "gae (alias ppo; verl)"


def test_use_v1_true_conflicts_with_a_ground_truth_manager(full_batch: Path,
                                                          tmp_path: Path) -> None:
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
                   "-o", str(tmp_path), "--dry-run", "trainer.use_v1=true")
    assert result.exit_code == 2
    assert "needs the ground truth" in result.output and "trainer.use_v1" in result.output


def test_prm_weight_needs_a_dense_reward_manager(full_batch: Path, tmp_path: Path) -> None:
    # the seed's rm_coef is the process weight; sql_verifier gives no process reward (sql_prm
    # does: tests/training/test_process_reward_plan.py)
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
                   "-o", str(tmp_path), "--dry-run", "reward_model.rm_coef=0.5")
    assert result.exit_code == 2, result.output
    assert "rewardsql.reward_weights.process" in result.output and "sql_prm" in result.output


def test_outcome_weight_needs_a_manager_that_applies_it(full_batch: Path,
                                                        tmp_path: Path) -> None:
    # sql_verifier runs through rewardsql's adapter, which multiplies its scores by the weight
    ok = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
               "-o", str(tmp_path / "ok"), "--dry-run", "verifier.reward_coef=0.5")
    assert ok.exit_code == 0, ok.output
    assert resolved(tmp_path / "ok")["rewardsql"]["reward_weights"]["outcome"] == 0.5
    # verl's own manager never sees rewardsql's weights: refused, not trained unscaled
    naive = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
                  "-o", str(tmp_path / "naive"), "--dry-run", "verifier.reward_coef=0.5",
                  "reward.reward_manager.name=naive")
    assert naive.exit_code == 2
    assert "rewardsql.reward_weights.outcome" in naive.output and "'naive'" in naive.output


def test_reward_manager_rejects_bad_settings(full_batch: Path, tmp_path: Path) -> None:
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
                   "-o", str(tmp_path), "--dry-run", "rewardsql.reward_manager.mode=fuzzy")
    assert result.exit_code == 2
    assert "sql_verifier" in result.output and "fuzzy" in result.output


def test_data_without_required_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"prompt": [[{"role": "user", "content": "q"}]], "data_source": ["x"],
                      "reward_model": [{"ground_truth": "SELECT 1"}],
                      "extra_info": [{"question_id": 1}]})
    pq.write_table(table, tmp_path / "train.parquet")
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(tmp_path / "train.parquet"),
                   "-o", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 2
    assert "train.parquet: missing column 'extra_info.db_id'" in result.output


def test_missing_data_path(tmp_path: Path) -> None:
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(tmp_path / "none"),
                   "-o", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 2 and "--data-path" in result.output


def test_without_gpu_training_stops_before_ray_and_points_to_local(full_batch: Path,
                                                                    tmp_path: Path) -> None:
    import ray
    import torch

    if torch.cuda.is_available():  # the real condition, not mocked: CI has no GPU
        pytest.skip("this machine has a GPU")
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
                   "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "verl needs CUDA GPUs and this machine has none" in result.output
    assert "--engine local" in result.output
    assert not ray.is_initialized()
    assert not (tmp_path / "out" / "resolved_config.yaml").exists()


@pytest.mark.parametrize("engine", [[], ["--device", "cpu"], ["--engine", "local"]],
                         ids=["verl", "verl-cpu", "local"])
def test_config_errors_come_before_the_machine_is_checked(engine: list[str],
                                                          tmp_path: Path) -> None:
    """A missing config file is a usage error (exit 2, naming the file) whatever the engine, on
    any machine: here no GPU and, in the tests session, no vLLM CPU build, either of which would
    otherwise stop a real launch first (exit 1)."""
    missing = tmp_path / "nope.yaml"
    result = train("--config", str(missing), "--data-path", str(tmp_path / "x"),
                   "--output-dir", str(tmp_path / "y"), *engine)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {missing}: no such file"
    assert not (tmp_path / "y").exists()


def test_a_config_verl_rejects_is_reported_before_the_gpu_check(full_batch: Path,
                                                                tmp_path: Path) -> None:
    """verl's own validation is part of the config check (as with --dry-run): it comes before
    the search for a GPU."""
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
                   "-o", str(tmp_path / "out"), "actor_rollout_ref.actor.ppo_mini_batch_size=96")
    assert result.exit_code == 2, result.output
    assert ("verl rejects the config: ValueError: train_batch_size (48) must be >= "
            "actor.ppo_mini_batch_size (96)") in result.output
    assert "CUDA" not in result.output


def test_local_engine_dry_run_is_checked_by_the_local_engine(full_batch: Path,
                                                             tmp_path: Path) -> None:
    base = ["--config", str(SHIPPED_GRPO), "--data-path", str(full_batch), "-o", str(tmp_path),
            "--dry-run", "--engine", "local"]
    result = train(*base)
    assert result.exit_code == 0, result.output
    assert "engine:         local" in result.output
    # the local engine's own settings reader refuses what it cannot honour
    result = train(*base, "algorithm.use_kl_in_reward=true")
    assert result.exit_code == 2
    assert "algorithm.use_kl_in_reward" in result.output and "local engine" in result.output


def test_local_engine_errors_are_reported_cleanly(full_batch: Path, tmp_path: Path) -> None:
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
                   "-o", str(tmp_path / "out"), "--engine", "local",
                   f"actor_rollout_ref.model.path={tmp_path / 'no_model'}")
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output


def test_local_engine_with_reproducible_cpu_math_says_what_it_computes_with(
        full_batch: Path, tmp_path: Path) -> None:
    """A fresh process (the settings must precede torch): the summary names the class and the
    thread count before the engine starts; here the engine then fails on a missing model."""
    from rewardsql.training.cpu_math import (
        REPRODUCIBLE_THREADS,
        cpu_class,
        cpu_flags,
        cpu_math_label,
        cpu_vendor,
    )

    name = cpu_class(cpu_flags())
    if name is None:
        pytest.skip("reproducible CPU math is for x86-64 CPUs with AVX2 or AVX-512")
    env = {k: v for k, v in os.environ.items() if k not in CLASS_ENV[name]}
    result = run_cli("train", "--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
                     "-o", str(tmp_path / "out"), "--engine", "local", "--cpu-math",
                     "reproducible", f"actor_rollout_ref.model.path={tmp_path / 'no_model'}",
                     env=env)
    label = cpu_math_label({"mode": "reproducible", "class": name, "vendor": cpu_vendor()})
    assert label.startswith(f"reproducible {name}")
    assert (f"CPU math:       {label}, {REPRODUCIBLE_THREADS} torch threads"
            in result.stdout), result.stdout + result.stderr
    assert result.returncode == 2 and "error:" in result.stderr


def test_bad_engine_and_missing_output_dir(full_batch: Path, tmp_path: Path) -> None:
    result = train("--config", str(SHIPPED_GRPO), "-o", str(tmp_path), "--engine", "tpu")
    assert result.exit_code == 2 and "--engine" in result.output
    result = train("--config", str(SHIPPED_GRPO), "--dry-run")
    assert result.exit_code == 2 and "--output-dir is required" in result.output


@pytest.mark.slow
def test_core_algos_file_reaches_verl_in_every_process(full_batch: Path, tmp_path: Path) -> None:
    """A .py file registering an estimator: selectable by alias, and a fresh process started
    with the runtime env the launcher hands to Ray finds it in verl's registry."""
    algos = tmp_path / "algos" / "halved_grpo_algos.py"
    algos.parent.mkdir()
    algos.write_text(textwrap.dedent("""
        import rewardsql

        @rewardsql.register_advantage_estimator("halved_grpo",
                                                aliases=("compute_halved_grpo_advantage",))
        def halved_grpo(token_level_rewards, response_mask, index=None, config=None, **kwargs):
            advantages = token_level_rewards * response_mask * 0.5
            return advantages, advantages
    """))
    out = tmp_path / "out"
    result = run_cli("train", "--config", str(SHIPPED_GRPO), "--data-path", str(full_batch),
                     "--output-dir", str(out), "--dry-run", "--core_algos", str(algos),
                     "--core_function", "compute_halved_grpo_advantage")
    assert result.returncode == 0, result.stderr
    config = resolved(out)
    assert config["algorithm"]["adv_estimator"] == "halved_grpo"
    env = config["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]
    assert env["VERL_USE_EXTERNAL_MODULES"] == "halved_grpo_algos"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(algos.parent)

    # What a Ray worker does: start with that environment (elsewhere) and import verl.
    probe = ("from verl.trainer.ppo import core_algos; import json; "
             "fn = core_algos.get_adv_estimator_fn('halved_grpo'); "
             "print(json.dumps([fn.__module__, fn is core_algos.get_adv_estimator_fn("
             "'compute_halved_grpo_advantage')]))")
    worker = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, **env}, timeout=120)
    assert worker.returncode == 0, worker.stderr
    assert json.loads(worker.stdout.strip().splitlines()[-1]) == ["halved_grpo_algos", True]


def test_core_algos_errors(tmp_path: Path, full_batch: Path) -> None:
    bad = tmp_path / "bad-name.py"
    bad.write_text("")
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch), "-o",
                   str(tmp_path / "o"), "--dry-run", "--core-algos", str(bad))
    assert result.exit_code == 2 and "valid Python module name" in result.output
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch), "-o",
                   str(tmp_path / "o"), "--dry-run", "--core-algos", "no_such_module_xyz")
    assert result.exit_code == 2 and "cannot import 'no_such_module_xyz'" in result.output
    shadow = tmp_path / "json.py"
    shadow.write_text("")
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch), "-o",
                   str(tmp_path / "o"), "--dry-run", "--core-algos", str(shadow))
    assert result.exit_code == 2 and "already taken" in result.output


def test_shipped_rm_config_is_valid_json_with_the_rewardsql_settings() -> None:
    # Validated by its own command once PRM training exists; here: the settings it ships.
    config = json.loads(SHIPPED_RM.read_text())
    assert config["model_name_or_path"] == "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert config["step_tag"] == " и " and config["candidate_tokens"] == ["+", "-"]


def test_tensorboard_logs_go_to_the_output_dir(full_batch: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """verl's default (``tensorboard_log/PROJECT/EXPERIMENT`` under the worker's working
    directory) is replaced by OUT/tensorboard, unless the shell or the config names one."""
    monkeypatch.delenv("TENSORBOARD_DIR", raising=False)
    out = tmp_path / "out"
    result = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch), "-o", str(out),
                   "--dry-run")
    assert result.exit_code == 0, result.output
    env = resolved(out)["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]
    assert env["TENSORBOARD_DIR"] == str(out.resolve() / "tensorboard")
    assert f"TENSORBOARD_DIR={out.resolve() / 'tensorboard'}" in result.output

    mine = tmp_path / "mine"
    named = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch), "-o",
                  str(tmp_path / "named"), "--dry-run",
                  f"+ray_kwargs.ray_init.runtime_env.env_vars.TENSORBOARD_DIR={mine}")
    assert named.exit_code == 0, named.output
    env = resolved(tmp_path / "named")["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]
    assert env["TENSORBOARD_DIR"] == str(mine)

    monkeypatch.setenv("TENSORBOARD_DIR", str(mine))
    shell = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch), "-o",
                  str(tmp_path / "shell"), "--dry-run")
    assert shell.exit_code == 0, shell.output
    runtime_env = resolved(tmp_path / "shell")["ray_kwargs"]["ray_init"]["runtime_env"]
    assert "TENSORBOARD_DIR" not in runtime_env.get("env_vars", {})  # workers inherit the shell's

    console = train("--config", str(SHIPPED_GRPO), "--data-path", str(full_batch), "-o",
                    str(tmp_path / "console"), "--dry-run", "trainer.logger=[console]")
    assert console.exit_code == 0, console.output
    assert "TENSORBOARD_DIR" not in console.output
