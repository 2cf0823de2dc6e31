"""``run_sft`` on the tiny example: response-only labels, loss goes down, resume, LoRA, bf16."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from _tiny_helpers import quick_example, read_jsonl, tiny_model
from rewardsql.errors import ConfigError
from rewardsql.training.sft import SFTConfig, run_sft
from rewardsql.training.sft import train as sft_train
from rewardsql.training.sft.data import IGNORE_INDEX, read_rows, tokenize
from transformers import AutoModelForCausalLM, AutoTokenizer


def _config(tmp_path_factory, out, **changes) -> SFTConfig:
    example = quick_example(tmp_path_factory)
    return SFTConfig.from_dict({
        "model_name_or_path": str(tiny_model(tmp_path_factory)),
        "train_file": str(example.sft_train), "output_dir": str(out),
        "per_device_train_batch_size": 8, "learning_rate": 3e-3, "num_train_epochs": 1,
        "max_length": 384, "logging_steps": 5, "save_steps": 1000, "warmup_ratio": 0.1,
        "seed": 0, "resume_from_checkpoint": None, **changes})


def test_labels_cover_the_response_only(tmp_path_factory, tmp_path):
    example = quick_example(tmp_path_factory)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model(tmp_path_factory))
    lines = read_jsonl(example.sft_dev)[:5]
    # The same examples as chat messages (JSONL), prompt/response pairs (JSON) and verl's RL
    # parquet give the same tokens and labels
    pairs = [{"prompt": line["messages"][:2], "response": line["messages"][2]["content"]}
             for line in lines]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    rl = pd.read_parquet(example.dev_parquet).head(5)
    rl.to_parquet(tmp_path / "rl.parquet")
    results = [tokenize(read_rows(path), tokenizer, max_length=512).examples
               for path in (example.sft_dev, tmp_path / "pairs.json", tmp_path / "rl.parquet")]
    results[0] = results[0][:5]
    assert results[0] == results[1] == results[2]
    for example_tokens, line in zip(results[0], lines, strict=True):
        labels = example_tokens["labels"]
        start = next(i for i, v in enumerate(labels) if v != IGNORE_INDEX)
        assert all(v == IGNORE_INDEX for v in labels[:start])
        assert labels[start:] == example_tokens["input_ids"][start:]
        target = tokenizer.decode(labels[start:])
        assert target == line["messages"][2]["content"] + "<|im_end|>\n"


def test_prompt_longer_than_max_length_is_dropped_and_reported(tmp_path_factory):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model(tmp_path_factory))
    rows = [{"prompt": "short question", "response": "SELECT 1;"},
            {"prompt": "long " * 300, "response": "SELECT 2;"}]
    out = tokenize(rows, tokenizer, max_length=64)
    assert out.dropped == 1 and len(out.examples) == 1
    with pytest.raises(ConfigError, match="no example fits"):
        tokenize(rows[1:], tokenizer, max_length=64)
    with pytest.raises(ConfigError, match="example 0: expected 'messages' or 'prompt'"):
        tokenize([{"question": "q"}], tokenizer, max_length=64)


@pytest.mark.slow
def test_sft_lowers_the_loss_and_saves_a_loadable_model(tmp_path_factory, tmp_path):
    example = quick_example(tmp_path_factory)
    config = _config(tmp_path_factory, tmp_path / "sft", eval_file=str(example.sft_dev),
                     max_steps=40, eval_steps=40)
    result = run_sft(config)
    assert result.steps == 40 and result.start_step == 0 and result.resumed_from is None
    assert result.first_loss > 5 and result.final_loss < result.first_loss - 2
    assert result.eval_loss is not None and result.eval_loss < result.first_loss
    assert result.n_examples == example.n_train
    out = tmp_path / "sft"
    saved = json.loads((out / "sft_result.json").read_text())
    assert saved["steps"] == 40 and saved["final_loss"] == result.final_loss
    assert SFTConfig.from_dict(json.loads((out / "sft_config.json").read_text())) == config
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    # The fine-tuned model scores a dev answer better than the initial model does
    tokens = tokenize(read_rows(example.sft_dev)[:8], tokenizer, 384).examples
    batch = sft_train.Collator(tokenizer.pad_token_id)(tokens)
    with torch.no_grad():
        before = AutoModelForCausalLM.from_pretrained(config.model_name_or_path)(**batch).loss
        after = model(**batch).loss
    assert after < before


@pytest.mark.slow
def test_resume_continues_from_the_newest_checkpoint(tmp_path_factory, tmp_path):
    out = tmp_path / "sft"
    first = run_sft(_config(tmp_path_factory, out, max_steps=4, save_steps=2,
                            save_total_limit=None, resume_from_checkpoint="auto"))
    assert first.steps == 4 and first.resumed_from is None
    # Checkpoints survive the final save (the model is swapped in beside them)
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-2", "checkpoint-4"}
    # An interrupted checkpoint (no trainer state yet) is ignored
    (out / "checkpoint-9").mkdir()
    second = run_sft(_config(tmp_path_factory, out, max_steps=6, save_steps=2,
                             save_total_limit=None, resume_from_checkpoint="auto"))
    assert second.resumed_from == str(out / "checkpoint-4")
    assert second.start_step == 4 and second.steps == 6
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    logged = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert logged[0] == 1 and logged[-1] == 6  # one history, continued, not restarted
    # max_steps may change between a run and its resume (above); what the weights learn from
    # may not: another learning rate or seed is refused in one line, nothing touched
    recorded = json.loads((out / sft_train.CHECKPOINT_SETTINGS).read_text())
    assert recorded["learning_rate"] == 3e-3 and "max_steps" not in recorded
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ConfigError, match=r"holds checkpoints of a run with other settings "
                       r"\(learning_rate 0\.003 -> 0\.001; seed 0 -> 1\)") as info:
        run_sft(_config(tmp_path_factory, out, max_steps=8, save_steps=2, learning_rate=1e-3,
                        seed=1, save_total_limit=None, resume_from_checkpoint="auto"))
    assert info.value.key == "output_dir"
    assert sorted(p.name for p in out.iterdir()) == before
    with pytest.raises(ConfigError, match="no such checkpoint directory"):
        run_sft(_config(tmp_path_factory, out, resume_from_checkpoint=str(tmp_path / "none")))


def test_lora_saves_a_merged_model(tmp_path_factory, tmp_path):
    config = _config(tmp_path_factory, tmp_path / "lora", max_steps=2,
                     lora={"r": 4, "alpha": 8, "dropout": 0.0,
                           "target_modules": ["q_proj", "v_proj"]})
    result = run_sft(config)
    assert result.steps == 2
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert not (tmp_path / "lora" / "adapter_config.json").exists()


def test_bf16_without_hardware_support_falls_back_with_a_warning(tmp_path_factory, tmp_path,
                                                                 monkeypatch):
    # A CPU without bfloat16 cannot be had on demand: pretend this one lacks it
    monkeypatch.setattr(sft_train, "bf16_supported", lambda: False)
    config = _config(tmp_path_factory, tmp_path / "bf16", max_steps=1, bf16=True)
    with pytest.warns(UserWarning, match="bf16 was requested"):
        result = run_sft(config)
    assert result.bf16 is False and result.steps == 1


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_config_file_with_learning_rate_1e_5_trains(tmp_path_factory, tmp_path, suffix):
    """YAML 1.1 reads ``1e-5`` as a string; every rewardsql config reads it as a number."""
    example = quick_example(tmp_path_factory)
    lines = [f"model_name_or_path: {tiny_model(tmp_path_factory)}",
             f"train_file: {example.sft_train}", f"output_dir: {tmp_path / 'out'}",
             "learning_rate: 1e-5", "max_steps: 2", "per_device_train_batch_size: 4",
             "max_length: 384", "resume_from_checkpoint: null", "save_steps: 1000"]
    path = tmp_path / f"sft{suffix}"
    if suffix == ".yaml":
        path.write_text("\n".join(lines) + "\n")
    else:
        import yaml

        path.write_text(json.dumps(yaml.safe_load("\n".join(lines).replace("1e-5", "1.0e-5"))))
    assert "1e-5" in path.read_text() or "1e-05" in path.read_text()
    config = SFTConfig.from_file(path)
    assert config.learning_rate == 1e-5
    result = run_sft(config)
    assert result.steps == 2 and (tmp_path / "out" / "config.json").is_file()


class _Marker:
    """Unpickling this would create a file: what a hostile checkpoint can do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_crafted_pickle_in_a_checkpoint_is_refused_in_one_line(tmp_path_factory, tmp_path):
    import pickle

    from rewardsql.errors import LaunchError

    out = tmp_path / "sft"
    run_sft(_config(tmp_path_factory, out, max_steps=1, save_steps=1, save_total_limit=None,
                    resume_from_checkpoint="auto"))
    marker = tmp_path / "pwned"
    (out / "checkpoint-1" / "rng_state.pth").write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(LaunchError, match=r"cannot resume from .*checkpoint-1 safely"):
        run_sft(_config(tmp_path_factory, out, max_steps=2, save_steps=1,
                        save_total_limit=None, resume_from_checkpoint="auto"))
    assert not marker.exists()
