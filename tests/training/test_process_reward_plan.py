"""``rewardsql train --dry-run`` with a process weight: the keys of verl's dense-reward path, the
estimator default, and the one-line errors and warning (each naming the key). The PRM is the
tiny model ("+", "-" and " и " are single tokens of its tokenizer)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from _tiny_helpers import tiny_model
from _train_helpers import SHIPPED_GRPO, build_spider_fixture, write_prepared_parquet
from rewardsql.cli import app
from rewardsql.reward_placeholder import NAME as PLACEHOLDER
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("process-plan")
    spider = build_spider_fixture(root)
    (root / "data").mkdir()
    return write_prepared_parquet(root / "data", spider["db_root"])


@pytest.fixture(scope="module")
def prm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory)


def _config(tmp_path: Path, prm: Path | str, *, estimator: str | None = None,
            function: bool = False) -> Path:
    config = yaml.safe_load(SHIPPED_GRPO.read_text())
    config["reward"]["reward_manager"]["name"] = "sql_prm"
    if estimator is None:
        del config["algorithm"]["adv_estimator"]
    else:
        config["algorithm"]["adv_estimator"] = estimator
    if not function:
        del config["rewardsql"]["reward_function"]
    config["rewardsql"]["reward_manager"] = {"prm_path": str(prm), "verifier": {"db_root": None}}
    config["rewardsql"]["reward_weights"] = {"process": 0.5, "outcome": 1.0}
    path = tmp_path / "prm_grpo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _train(config: Path, data: Path, out: Path, *args: str) -> Any:
    return runner.invoke(app, ["train", "--config", str(config), "--data-path", str(data),
                               "-o", str(out), "--dry-run", *args])


def _one_line_error(result: Any) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_verl_dense_reward_path_keys(prm: Path, data: Path, tmp_path: Path) -> None:
    result = _train(_config(tmp_path, prm), data, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "colocated reward-model path" in result.output  # which path the rewards take
    config = yaml.safe_load((tmp_path / "out" / "resolved_config.yaml").read_text())
    model = config["reward"]["reward_model"]
    assert model["enable"] is True and model["enable_resource_pool"] is False
    assert model["model_path"] == str(prm)
    assert model["rollout"]["tensor_model_parallel_size"] == 1
    assert model["rollout"]["name"] == config["actor_rollout_ref"]["rollout"]["name"]
    assert config["reward"]["custom_reward_function"]["name"] == PLACEHOLDER
    assert config["trainer"]["use_v1"] is False
    assert config["algorithm"]["adv_estimator"] == "grpo_process_avg_unique"  # none named
    manager = config["rewardsql"]["reward_manager"]
    assert (manager["process_weight"], manager["outcome_weight"]) == (0.5, 1.0)


def test_local_engine_path_is_named(prm: Path, data: Path, tmp_path: Path) -> None:
    result = _train(_config(tmp_path, prm), data, tmp_path / "out", "--engine", "local")
    assert result.exit_code == 0, result.output
    assert "local engine's process" in result.output


def test_prm_path_missing(prm: Path, data: Path, tmp_path: Path) -> None:
    line = _one_line_error(_train(_config(tmp_path, tmp_path / "nowhere"), data, tmp_path / "o"))
    assert "rewardsql.reward_manager.prm_path" in line and "nowhere" in line
    line = _one_line_error(_train(_config(tmp_path, prm), data, tmp_path / "o",
                                  "rewardsql.reward_manager.prm_path=null"))
    assert "prm_path" in line


def test_tag_not_one_token_of_the_prm_tokenizer(prm: Path, data: Path, tmp_path: Path) -> None:
    copy = tmp_path / "prm"
    shutil.copytree(prm, copy)
    (copy / "prm_config.json").write_text(json.dumps({"step_tag": "и"}))  # two byte tokens
    line = _one_line_error(_train(_config(tmp_path, copy), data, tmp_path / "o"))
    assert "step_tag" in line and "prm_config.json" in line and "one token" in line


def test_v1_trainer_forced_on(prm: Path, data: Path, tmp_path: Path) -> None:
    line = _one_line_error(_train(_config(tmp_path, prm), data, tmp_path / "o",
                                  "trainer.use_v1=true"))
    assert "trainer.use_v1" in line


def test_a_manager_without_dense_rewards(prm: Path, data: Path, tmp_path: Path) -> None:
    line = _one_line_error(_train(SHIPPED_GRPO, data, tmp_path / "o",
                                  "rewardsql.reward_weights.process=0.5"))
    assert "rewardsql.reward_weights.process" in line and "sql_verifier" in line


def test_verls_grpo_with_dense_rewards_warns(prm: Path, data: Path, tmp_path: Path) -> None:
    result = _train(_config(tmp_path, prm, estimator="grpo", function=True), data,
                    tmp_path / "out")
    assert result.exit_code == 0, result.output
    warning = next(line for line in result.output.splitlines() if "length bias" in line)
    assert "algorithm.adv_estimator=grpo" in warning
    config = yaml.safe_load((tmp_path / "out" / "resolved_config.yaml").read_text())
    # the user's reward function stays: verl calls the manager anyway
    assert config["reward"]["custom_reward_function"]["name"] != PLACEHOLDER
