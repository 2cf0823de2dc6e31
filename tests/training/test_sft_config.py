"""``SFTConfig`` validation, ``rewardsql sft --dry-run`` and the install hints for accelerators."""

from __future__ import annotations

import importlib.util
import json

import pytest
from _tiny_helpers import PAPER_SFT_CONFIG, TINY_SFT_CONFIG, quick_example, run_cli, tiny_model
from rewardsql.errors import ConfigError
from rewardsql.training.sft import SFTConfig
from rewardsql.training.sft.train import (
    _training_arguments,
    attention_implementation,
    check_deepspeed,
    check_device,
)

BASE = {"model_name_or_path": "m", "train_file": "t.jsonl", "output_dir": "o"}


def _write(tmp_path, data) -> str:
    path = tmp_path / "sft.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_defaults_and_overrides(tmp_path):
    path = _write(tmp_path, {**BASE, "lora": {"r": 4, "target_modules": "q_proj"}})
    config = SFTConfig.from_file(path, ["learning_rate=3e-4", "lora.alpha=8", "report_to=[\"x\"]",
                                        "eval_file=dev.jsonl"])
    assert config.learning_rate == 3e-4 and config.eval_file == "dev.jsonl"
    assert config.lora.r == 4 and config.lora.alpha == 8
    assert config.lora.target_modules == ("q_proj",)
    assert config.report_to == ("x",)
    assert config.flash_attention == "auto" and config.resume_from_checkpoint == "auto"
    assert config.device == "auto"
    # to_dict round-trips through from_dict
    assert SFTConfig.from_dict(config.to_dict()) == config
    assert config.replace(num_train_epochs=2).num_train_epochs == 2.0


@pytest.mark.parametrize(("data", "key", "message"), [
    ({**BASE, "learning_rat": 1e-5}, "learning_rat", "did you mean 'learning_rate'"),
    ({"model_name_or_path": "m", "output_dir": "o"}, "train_file", "required key is missing"),
    ({**BASE, "per_device_train_batch_size": 0}, "per_device_train_batch_size", "positive"),
    ({**BASE, "learning_rate": "fast"}, "learning_rate", "non-negative number"),
    ({**BASE, "bf16": "yes"}, "bf16", "true or false"),
    ({**BASE, "group_by_length": 1}, "group_by_length", "true or false"),
    ({**BASE, "flash_attention": "maybe"}, "flash_attention", '"auto", true or false'),
    ({**BASE, "device": "gpu"}, "device", '"auto", "cpu" or "cuda"'),
    ({**BASE, "lr_scheduler_type": "cosin"}, "lr_scheduler_type", "expected one of"),
    ({**BASE, "lora": {"alpah": 8}}, "lora.alpah", "did you mean 'alpha'"),
    ({**BASE, "lora": {"dropout": 1.5}}, "lora.dropout", "[0, 1)"),
    ({**BASE, "max_steps": 0}, "max_steps", "-1 for epochs"),
    ({**BASE, "report_to": 3}, "report_to", "list of strings"),
])
def test_bad_keys_name_the_file_and_key(tmp_path, data, key, message):
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        SFTConfig.from_file(path)
    assert info.value.key == key and info.value.source == path
    assert message in str(info.value) and path in str(info.value)


@pytest.mark.parametrize("grouped", [False, True])
def test_group_by_length_reaches_the_trainers_sampler(tmp_path, grouped):
    """transformers' own TrainingArguments get the length-grouped sampler (its 5.x name)."""
    import transformers
    from transformers import TrainingArguments

    config = SFTConfig.from_dict({**BASE, "output_dir": str(tmp_path), "device": "cpu",
                                  "group_by_length": grouped})
    major = int(transformers.__version__.split(".")[0])
    args = TrainingArguments(**_training_arguments(config, False, False, major))
    if major >= 5:
        assert args.train_sampling_strategy == ("group_by_length" if grouped else "random")
    else:
        assert args.group_by_length is grouped


def test_overrides_use_the_shared_grammar(tmp_path):
    path = _write(tmp_path, {**BASE, "eval_file": "dev.jsonl", "lora": {"r": 4}})
    with pytest.raises(ConfigError, match="not a KEY=VALUE override"):
        SFTConfig.from_file(path, ["learning_rate"])
    config = SFTConfig.from_file(path, ["output_dir=runs/x", "+seed=3", "~eval_file",
                                        "lora.target_modules=[q_proj, v_proj]"])
    assert (config.output_dir, config.seed, config.eval_file) == ("runs/x", 3, None)
    assert config.lora.r == 4 and config.lora.target_modules == ("q_proj", "v_proj")
    with pytest.raises(ConfigError, match="cannot delete a key that is not there"):
        SFTConfig.from_file(path, ["~warmup_ratio"])


def test_dry_run_of_the_tiny_config(tmp_path_factory, tmp_path):
    example = quick_example(tmp_path_factory)
    model = tiny_model(tmp_path_factory)
    result = run_cli("sft", "--config", str(TINY_SFT_CONFIG), "--dry-run",
                     f"model_name_or_path={model}", f"train_file={example.sft_train}",
                     f"eval_file={example.sft_dev}", f"output_dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr
    assert "dry run: config is valid" in result.stdout
    assert f"train_file: {example.n_train} examples" in result.stdout
    assert not (tmp_path / "out").exists()


def test_dry_run_of_the_papers_config(tmp_path_factory):
    # The BIRD CoCTE data is not here; any file in an accepted format stands in for it
    example = quick_example(tmp_path_factory)
    result = run_cli("sft", "--config", str(PAPER_SFT_CONFIG), "--dry-run",
                     f"train_file={example.train_parquet}")
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout[:result.stdout.index("\n}\n") + 2])
    assert settings["model_name_or_path"] == "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert settings["bf16"] and settings["gradient_checkpointing"]
    assert settings["deepspeed"]["zero_optimization"]["stage"] == 3
    assert "Hugging Face Hub" in result.stdout


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    path = _write(tmp_path, {**BASE, "num_epochs": 3})
    result = run_cli("sft", "--config", path, "--dry-run")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {path}: key 'num_epochs': unknown key; did you mean "
                                     "'num_train_epochs'?")
    result = run_cli("sft", "--config", _write(tmp_path, BASE), "--dry-run")
    assert result.returncode == 2 and "key 'train_file': no such file: t.jsonl" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None,
                    reason="flash_attn is installed here")
def test_flash_attention_requested_but_not_installed():
    assert attention_implementation("auto") == "sdpa"
    assert attention_implementation(False) == "sdpa"
    with pytest.raises(ConfigError, match=r"pip install rewardsql\[flash-attn\]"):
        attention_implementation(True)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None,
                    reason="deepspeed is installed here")
def test_deepspeed_requested_but_not_installed(tmp_path):
    config = SFTConfig.from_dict({**BASE, "deepspeed": {"zero_optimization": {"stage": 2}}})
    with pytest.raises(ConfigError, match=r"pip install rewardsql\[deepspeed\]"):
        check_deepspeed(config)
    check_deepspeed(SFTConfig.from_dict(BASE))  # no DeepSpeed asked: nothing to check


def test_device_cuda_without_a_gpu_is_an_error():
    import torch

    check_device("auto")
    check_device("cpu")
    if torch.cuda.is_available():
        check_device("cuda")
        return
    # the CI machine: CPU-only torch, so asking for CUDA must fail, naming the key
    with pytest.raises(ConfigError, match="CUDA is not available") as info:
        check_device("cuda")
    assert info.value.key == "device" and torch.__version__ in str(info.value)
