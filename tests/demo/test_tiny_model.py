"""The tiny model: trained tokenizer and Qwen2 model saved and reloaded with the Auto classes."""

from __future__ import annotations

import json

import pytest
import torch
from _tiny_helpers import quick_example, read_jsonl, tiny_model
from rewardsql.demo.tiny import build_tiny_model
from rewardsql.demo.tiny.model import STEP_TAG
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_round_trip_with_auto_classes_and_generation(tmp_path_factory):
    path = tiny_model(tmp_path_factory, size="tiny")
    example = quick_example(tmp_path_factory)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "qwen2"
    assert 1_000_000 <= model.num_parameters() <= 10_000_000
    assert model.config.vocab_size == len(tokenizer)

    # The loaded tokenizer encodes exactly as the trained one (tokenizer.json read directly)
    raw = Tokenizer.from_file(str(path / "tokenizer.json"))
    texts = [m["content"] for line in read_jsonl(example.sft_dev)[:20] for m in line["messages"]]
    for text in texts:
        assert tokenizer.encode(text, add_special_tokens=False) == raw.encode(
            text, add_special_tokens=False).ids
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    # Digits are single tokens, so unseen numbers are made of seen pieces
    assert len(tokenizer.encode("12345", add_special_tokens=False)) == 5

    messages = read_jsonl(example.sft_dev)[0]["messages"][:2]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape == (1, ids["input_ids"].shape[1] + 5) or tokenizer.eos_token_id in out[0]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_step_tag_and_prm_candidates_are_single_tokens(tmp_path_factory):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model(tmp_path_factory))
    for text in (STEP_TAG, "+", "-"):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert len(ids) == 1, text
        assert tokenizer.decode(ids) == text
    # The tag stays one token inside a CoCTE response and survives skip_special_tokens
    response = f"WITH a AS (SELECT 1){STEP_TAG}SELECT * FROM a;{STEP_TAG}"
    ids = tokenizer.encode(response, add_special_tokens=False)
    tag = tokenizer.convert_tokens_to_ids(STEP_TAG)
    assert ids.count(tag) == 2
    assert tokenizer.decode(ids, skip_special_tokens=True) == response


def test_rebuild_is_cached_and_seeded(tmp_path):
    corpus = ["SELECT name FROM customers WHERE city = 'Lyon';"] * 20 + ["hello world"] * 5
    path = build_tiny_model(tmp_path / "m", corpus, seed=1, size="micro")
    marker = json.loads((path / "rewardsql_tiny.json").read_text())
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(tmp_path / "m", iter(corpus), seed=1, size="micro") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    other = build_tiny_model(tmp_path / "m2", corpus, seed=2, size="micro")
    w1 = AutoModelForCausalLM.from_pretrained(path).model.embed_tokens.weight
    w2 = AutoModelForCausalLM.from_pretrained(other).model.embed_tokens.weight
    assert not torch.equal(w1, w2)
    build_tiny_model(tmp_path / "m", [*corpus, "more text"], seed=1, size="micro")
    assert json.loads((path / "rewardsql_tiny.json").read_text()) != marker


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size must be one of"):
        build_tiny_model(tmp_path, ["text"], size="huge")
    with pytest.raises(ValueError, match="corpus is empty"):
        build_tiny_model(tmp_path, [])


def test_module_command_builds_example_and_model(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "rewardsql.demo.tiny", "--output-dir", str(tmp_path), "--quick",
         "--size", "micro"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "example" / "manifest.json").is_file()
    assert (tmp_path / "model" / "config.json").is_file()
    assert "400 train / 80 rl / 60 dev questions" in result.stdout
