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
from _train_helpers import (
    SHIPPED_GRPO,
    SHIPPED_GRPO_PRM,
    build_spider_fixture,
    free_port,
    write_prepared_parquet,
)
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
    assert "the PRM is scored on verl's reward-model server" in result.output
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


@pytest.mark.parametrize("engine", ["verl", "local"])
def test_min_form_takes_sql_prms_default_layout(prm: Path, data: Path, tmp_path: Path,
                                                engine: str) -> None:
    """grpo_min_form reads step scores back from step_end + all_tokens token rewards: sql_prm's
    defaults beside a PRM (step_end; outcome_placement null, i.e. all_tokens)."""
    result = _train(_config(tmp_path, prm, estimator="grpo_min_form"), data, tmp_path / "out",
                    "--engine", engine)
    assert result.exit_code == 0, result.output
    assert "estimator:      grpo_min_form (rewardsql-advantages" in result.output


@pytest.mark.parametrize(("args", "key"), [
    (["rewardsql.reward_manager.process_placement=fill"], "process_placement"),
    (["--engine", "local", "rewardsql.reward_manager.process_placement=fill"],
     "process_placement"),
    (["rewardsql.reward_manager.outcome_placement=last_token"], "outcome_placement"),
    (["algorithm.use_kl_in_reward=true"], "algorithm.use_kl_in_reward"),
])
def test_min_form_refuses_rewards_it_cannot_read(prm: Path, data: Path, tmp_path: Path,
                                                 args: list[str], key: str) -> None:
    line = _one_line_error(_train(_config(tmp_path, prm, estimator="grpo_min_form"), data,
                                  tmp_path / "o", *args))
    assert "grpo_min_form reads step scores back from token rewards laid out with " \
           "process_placement: step_end, outcome_placement: all_tokens" in line
    assert (f"'{key}'" if "." in key else f"'rewardsql.reward_manager.{key}'") in line


def test_an_unreachable_prm_url_is_one_line_at_dry_run(prm: Path, data: Path,
                                                       tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = _one_line_error(_train(_config(tmp_path, prm), data, tmp_path / "o",
                                  f"+rewardsql.reward_manager.prm_url={url}"))
    assert "rewardsql.reward_manager.prm_url" in line
    assert f"the PRM server at {url} does not answer" in line


@pytest.fixture()
def models_endpoint(prm: Path):
    """A stand-in for a vLLM server's ``/v1/models`` (vLLM is not installed in this test
    environment; the real server is tested in tests/verl_cpu/test_prm_server.py): it says it
    serves ``prm``."""
    import http.server
    import threading

    body = json.dumps({"data": [{"id": "served", "root": str(prm),
                                 "max_model_len": 1024}]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_with_prm_url_verls_own_server_idles(prm: Path, data: Path, tmp_path: Path,
                                             models_endpoint: str) -> None:
    result = _train(_config(tmp_path, prm), data, tmp_path / "out",
                    f"+rewardsql.reward_manager.prm_url={models_endpoint}")
    assert result.exit_code == 0, result.output
    assert f"the PRM is scored on your server at {models_endpoint}" in result.output
    config = yaml.safe_load((tmp_path / "out" / "resolved_config.yaml").read_text())
    rollout = config["reward"]["reward_model"]["rollout"]
    assert rollout["load_format"] == "dummy" and rollout["gpu_memory_utilization"] == 0.05
    assert rollout["max_num_seqs"] == 1
    # what the user set stays
    result = _train(_config(tmp_path, prm), data, tmp_path / "out2",
                    f"+rewardsql.reward_manager.prm_url={models_endpoint}",
                    "reward.reward_model.rollout.gpu_memory_utilization=0.1")
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "out2" / "resolved_config.yaml").read_text())
    assert config["reward"]["reward_model"]["rollout"]["gpu_memory_utilization"] == 0.1


def test_a_prm_url_serving_another_model_is_one_line(prm: Path, data: Path, tmp_path: Path,
                                                     models_endpoint: str) -> None:
    other = tmp_path / "other-prm"
    shutil.copytree(prm, other)
    line = _one_line_error(_train(_config(tmp_path, other), data, tmp_path / "o",
                                  f"+rewardsql.reward_manager.prm_url={models_endpoint}"))
    assert f"the server at {models_endpoint} serves {prm}, not the PRM at {other}" in line


# -- the shipped config for GRPO with the PRM (examples/rewardsql/verl/grpo_prm.yaml) ---------


@pytest.fixture(scope="module")
def trained_prm(prm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with the prm_config.json that `rm train` writes beside a PRM."""
    copy = tmp_path_factory.mktemp("shipped-prm") / "prm_model"
    shutil.copytree(prm, copy)
    (copy / "prm_config.json").write_text(json.dumps(
        {"step_tag": " и ", "candidate_tokens": ["+", "-"], "label_type": "hard",
         "execution_results": True, "result_rows": 50, "result_chars": 500}))
    return copy


def _shipped(data: Path, out: Path, prm: Path, *args: str) -> Any:
    return runner.invoke(app, ["train", "--config", str(SHIPPED_GRPO_PRM), "--data-path",
                               str(data), "-o", str(out), "--dry-run",
                               f"rewardsql.reward_manager.prm_path={prm}", *args])


def test_the_shipped_prm_config_dry_runs_as_published(trained_prm: Path, data: Path,
                                                      tmp_path: Path) -> None:
    result = _shipped(data, tmp_path / "out", trained_prm)
    assert result.exit_code == 0, result.output
    assert not [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert "estimator:      grpo_process_avg_unique (rewardsql-advantages" in result.output
    assert "reward manager: sql_prm (rewardsql-sql-reward" in result.output
    assert "the PRM is scored on verl's reward-model server for model_path" in result.output
    config = yaml.safe_load((tmp_path / "out" / "resolved_config.yaml").read_text())
    manager = config["rewardsql"]["reward_manager"]
    assert manager["process_placement"] == "fill" and manager["outcome_placement"] is None
    assert (manager["process_weight"], manager["outcome_weight"]) == (1.0, 1.0)
    assert manager["prm_url"] is None and manager["prm_scoring"] == "auto"
    assert manager["verifier"]["db_root"] is None  # each row's extra_info.db_root
    model = config["reward"]["reward_model"]
    assert model["enable"] is True and model["model_path"] == str(trained_prm)
    assert model["rollout"]["load_format"] != "dummy"  # verl's server reads the PRM's weights
    assert config["reward"]["custom_reward_function"]["name"] == PLACEHOLDER
    assert config["trainer"]["use_v1"] is False and config["trainer"]["save_freq"] > 0


def test_the_shipped_prm_config_on_your_prm_server(prm: Path, data: Path, tmp_path: Path,
                                                   models_endpoint: str) -> None:
    """prm_url, the documented switch: verl's own server idles (the shipped config sets none
    of its sizes, so the launcher gives it the least memory)."""
    result = _shipped(data, tmp_path / "out", prm,
                      f"rewardsql.reward_manager.prm_url={models_endpoint}")
    assert result.exit_code == 0, result.output
    assert f"the PRM is scored on your server at {models_endpoint}" in result.output
    config = yaml.safe_load((tmp_path / "out" / "resolved_config.yaml").read_text())
    rollout = config["reward"]["reward_model"]["rollout"]
    assert rollout["load_format"] == "dummy" and rollout["gpu_memory_utilization"] == 0.05


def test_min_form_on_the_shipped_prm_config(trained_prm: Path, data: Path,
                                            tmp_path: Path) -> None:
    """The shipped config writes the published fill layout, which grpo_min_form cannot read:
    refused, naming the key; with step_end it dry-runs."""
    line = _one_line_error(_shipped(data, tmp_path / "o", trained_prm,
                                    "algorithm.adv_estimator=grpo_min_form"))
    assert "'rewardsql.reward_manager.process_placement'" in line and "fill" in line
    result = _shipped(data, tmp_path / "out", trained_prm, "algorithm.adv_estimator=grpo_min_form",
                      "rewardsql.reward_manager.process_placement=step_end")
    assert result.exit_code == 0, result.output
    assert "estimator:      grpo_min_form (rewardsql-advantages" in result.output
