"""``rewardsql export`` and the export at the end of ``rewardsql train --engine verl``: a verl FSDP
checkpoint merged by verl's own model merger into a Hugging Face directory.

The checkpoints are real: 2 gloo ranks shard the tiny model (once plain, once with a LoRA
adapter) with FSDP2, take one AdamW step and save with verl's ``FSDPCheckpointManager``
(fsdp_checkpoint.py, ~10 s each, once per module). The
export is loaded by transformers, compared with the trained weights, generates, and is taken by
the SQL plugin's ``Policy`` (what ``rerank --policy`` and ``rm label --policy`` load). The same
export after a real verl run is tested in tests/verl_cpu/test_train_on_cpu.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from _tiny_helpers import tiny_model
from _train_helpers import SHIPPED_GRPO, build_spider_fixture, write_prepared_parquet
from rewardsql.cli import app
from rewardsql.training.export import EXPORT_RECORD, HF_MODEL
from rewardsql.training.launcher import TrainOptions, build_plan
from rewardsql.training.launcher.launch import export_final_model
from typer.testing import CliRunner

runner = CliRunner()
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory, model: Path) -> Path:
    """A run directory as verl leaves it: global_step_1/actor (2 shards) and the tracker."""
    run = tmp_path_factory.mktemp("export") / "run"
    result = subprocess.run([sys.executable, str(HERE / "fsdp_checkpoint.py"), str(model),
                             str(run)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def saved_lora_run(tmp_path_factory: pytest.TempPathFactory, model: Path) -> Path:
    """The same with a LoRA actor (peft's adapter, as verl wraps it for lora_rank)."""
    run = tmp_path_factory.mktemp("export-lora") / "run"
    result = subprocess.run([sys.executable, str(HERE / "fsdp_checkpoint.py"), str(model),
                             str(run), "--lora"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


@pytest.fixture()
def run(saved_run: Path, tmp_path: Path) -> Path:
    """A copy of the saved run, for the tests that write into it or break it."""
    copy = tmp_path / "run"
    shutil.copytree(saved_run, copy)
    return copy


def export(*args: str) -> Any:
    return runner.invoke(app, ["export", *args])


def _one_line_error(result: Any, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_a_checkpoint_exports_to_a_model_that_generates(saved_run: Path, model: Path,
                                                        tmp_path: Path) -> None:
    target = tmp_path / "policy"
    result = export("--checkpoint", str(saved_run / "global_step_1"), "--output", str(target))
    assert result.exit_code == 0, result.output
    assert f"(global_step_1) to {target}" in result.output
    # the checkpoint's weights, merged from both shards, in bfloat16 as verl's merger writes
    trained = torch.load(saved_run / "trained.pt")
    exported = _weights(target)
    assert set(exported) == set(trained)
    for name, tensor in trained.items():
        assert exported[name].dtype == torch.bfloat16
        assert torch.equal(exported[name], tensor.to(torch.bfloat16)), name
    # ... which are the trained ones, not the model the run started from
    initial = _weights(model)
    assert any(not torch.equal(initial[n].to(torch.bfloat16), exported[n]) for n in initial)
    record = json.loads((target / EXPORT_RECORD).read_text())
    assert record["step"] == 1 and record["checkpoint"].endswith("global_step_1/actor")
    # it generates as the trained weights do (the untrained tiny model's text means nothing:
    # what matters is the same tokens from the directory as from the trained tensors)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(target)  # the tokenizer came with the export
    ids = tokenizer("SELECT name FROM", return_tensors="pt")
    reference = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16)
    reference.load_state_dict({n: t.to(torch.bfloat16) for n, t in trained.items()})

    def greedy(m: Any) -> list[int]:
        return m.generate(**ids, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                          pad_token_id=tokenizer.pad_token_id)[0].tolist()

    tokens = greedy(AutoModelForCausalLM.from_pretrained(target))
    assert len(tokens) == ids["input_ids"].shape[1] + 8
    assert tokens == greedy(reference)
    # what rerank --policy and rm label --policy load
    from rewardsql_sql_reward.prm.policy import Policy

    policy = Policy(target, device="cpu", max_new_tokens=8)
    text = policy.prompt_text([{"role": "user", "content": "List the singers."}])
    assert text.startswith("<|im_start|>")  # the chat template came too
    answers = policy.generate(text, 2, seed=0)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_a_lora_actor_exports_with_its_adapter_folded_in(saved_lora_run: Path, model: Path,
                                                         tmp_path: Path) -> None:
    """verl's merger writes the base weights and lora_adapter/ apart, a directory that would
    load as the untrained model; the export is the trained policy."""
    result = export("--checkpoint", str(saved_lora_run), "--output", str(tmp_path / "policy"))
    assert result.exit_code == 0, result.output
    trained = torch.load(saved_lora_run / "trained.pt")  # W + B @ A x alpha / r, in float32
    exported = _weights(tmp_path / "policy")
    initial = _weights(model)
    assert set(exported) == set(trained)
    folded = [n for n in trained if "q_proj.weight" in n or "v_proj.weight" in n]
    assert folded
    for name in folded:
        # bfloat16 rounding apart (the merger rounds the base weights before the fold) ...
        assert torch.allclose(exported[name].float(), trained[name], atol=2e-3), name
        # ... the adapter's change is there: far more than that from the untrained weights
        assert (exported[name].float() - initial[name]).abs().max() > 2e-2, name
    assert (tmp_path / "policy" / "lora_adapter" / "adapter_config.json").is_file()
    record = json.loads((tmp_path / "policy" / EXPORT_RECORD).read_text())
    assert record["lora"].startswith("folded into the weights")


def test_the_newest_checkpoint_goes_to_hf_model_and_replaces_an_earlier_export(
        run: Path) -> None:
    first = export("--checkpoint", str(run))
    assert first.exit_code == 0, first.output
    assert (run / HF_MODEL / "model.safetensors").is_file()
    again = export("--checkpoint", str(run))
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no leftovers
    by_step = export("--checkpoint", str(run / "global_step_1" / "actor"))
    assert by_step.exit_code == 0, by_step.output
    assert (run / f"{HF_MODEL}_step_1" / "config.json").is_file()


def test_what_is_not_a_checkpoint_is_one_line(run: Path, model: Path, tmp_path: Path) -> None:
    line = _one_line_error(export("--checkpoint", str(model)))
    assert str(model) in line and "not a verl checkpoint" in line
    line = _one_line_error(export("--checkpoint", str(tmp_path / "nowhere")))
    assert "nowhere" in line and "no such directory" in line
    (run / "latest_checkpointed_iteration.txt").write_text("7")
    line = _one_line_error(export("--checkpoint", str(run)))
    assert "latest_checkpointed_iteration.txt" in line and "global_step_7" in line
    (run / "global_step_1" / "actor" / "model_world_size_2_rank_1.pt").unlink()
    line = _one_line_error(export("--checkpoint", str(run / "global_step_1")))
    assert "model_world_size_2_rank_1.pt" in line and "1 of 2 model shards missing" in line


def test_a_checkpoint_given_as_a_policy_says_how_to_export_it(saved_run: Path) -> None:
    from rewardsql.errors import ConfigError
    from rewardsql_sql_reward.prm.policy import Policy

    for path in (saved_run, saved_run / "global_step_1", saved_run / "global_step_1" / "actor"):
        with pytest.raises(ConfigError) as err:
            Policy(path, device="cpu")
        assert f"`rewardsql export --checkpoint {path}`" in str(err.value)


def test_another_directory_is_never_overwritten(run: Path, model: Path) -> None:
    before = sorted(p.name for p in model.iterdir())
    line = _one_line_error(export("--checkpoint", str(run), "--output", str(model)))
    assert str(model) in line and EXPORT_RECORD in line
    assert sorted(p.name for p in model.iterdir()) == before


def test_a_merger_failure_is_one_line_and_writes_nothing(run: Path) -> None:
    shard = run / "global_step_1" / "actor" / "model_world_size_2_rank_0.pt"
    shard.write_bytes(shard.read_bytes()[:100])  # a torn shard
    line = _one_line_error(export("--checkpoint", str(run)), code=1)
    assert "verl's model merger could not export" in line and "global_step_1" in line
    assert not (run / HF_MODEL).exists()
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []


# -- rewardsql train: what the summary says, what a dry run checks, and the end of a run --------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export-data")
    spider = build_spider_fixture(root)
    (root / "data").mkdir()
    return write_prepared_parquet(root / "data", spider["db_root"])


def _train(data: Path, out: Path, *args: str) -> Any:
    return runner.invoke(app, ["train", "--config", str(SHIPPED_GRPO), "--data-path", str(data),
                               "-o", str(out), "--dry-run", *args])


def _summary(result: Any, field: str) -> str:
    return next(line for line in result.output.splitlines() if line.startswith(field))


def test_train_names_its_final_model(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _train(data, out)
    assert result.exit_code == 0, result.output
    assert _summary(result, "final model:") == (
        f"final model:    {out / HF_MODEL} (the last checkpoint, merged by verl's model merger "
        "when training ends)")
    result = _train(data, out, "--no-export")
    assert "not exported (--no-export); `rewardsql export --checkpoint" in _summary(
        result, "final model:")
    result = _train(data, out, "--engine", "local")
    assert _summary(result, "final model:").startswith(f"final model:    {out / 'final_model'}")


def test_train_without_checkpoints_warns(data: Path, tmp_path: Path) -> None:
    result = _train(data, tmp_path / "out", "trainer.save_freq=-1")
    assert result.exit_code == 0, result.output
    warning = next(line for line in result.output.splitlines() if "save_freq" in line)
    assert warning.startswith("warning: trainer.save_freq=-1: verl saves no checkpoint")
    assert "none (trainer.save_freq=-1" in _summary(result, "final model:")
    quiet = _train(data, tmp_path / "out", "trainer.save_freq=-1", "--no-export")
    assert "warning: trainer.save_freq" not in quiet.output


def test_train_refuses_an_occupied_hf_model_before_training(data: Path, tmp_path: Path) -> None:
    (tmp_path / "out" / HF_MODEL).mkdir(parents=True)
    (tmp_path / "out" / HF_MODEL / "notes.txt").write_text("mine")
    line = _one_line_error(_train(data, tmp_path / "out"))
    assert str(tmp_path / "out" / HF_MODEL) in line and "--no-export" in line
    assert _train(data, tmp_path / "out", "--no-export").exit_code == 0


def test_the_end_of_a_verl_run_exports_its_last_checkpoint(run: Path, data: Path,
                                                           tmp_path: Path) -> None:
    """What ``train`` does once verl returns, on a run directory that verl left."""
    plan = build_plan(TrainOptions(output_dir=run, config=SHIPPED_GRPO, data_path=data))
    exported = export_final_model(plan)
    assert exported is not None
    checkpoint, path = exported
    assert checkpoint.step == 1 and path == run / HF_MODEL
    assert yaml.safe_load((path / EXPORT_RECORD).read_text())["step"] == 1
    empty = build_plan(TrainOptions(output_dir=tmp_path / "none", config=SHIPPED_GRPO,
                                    data_path=data))
    assert export_final_model(empty) is None  # no checkpoint saved: nothing to export
    # a run that saves none, in a folder with an earlier run's checkpoint: not this run's model
    unsaved = build_plan(TrainOptions(output_dir=run, config=SHIPPED_GRPO, data_path=data,
                                      overrides=["trainer.save_freq=-1"]))
    assert export_final_model(unsaved) is None
