"""``rewardsql rm train`` on the tiny model: the tag loss goes down, held-out step labels are
predicted above chance, the output scores with ``PRMScorer``; config checks and dry runs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from _tiny_helpers import REPO, read_jsonl, run_cli, tiny_model
from _train_helpers import prm_records
from rewardsql.errors import ConfigError, RewardSQLWarning
from rewardsql.training.prm import PRMScorer
from rewardsql.training.prm.config import PRMConfig
from rewardsql.training.prm.metrics import auc, prm_metrics
from rewardsql.training.prm.trainer import run_prm

PAPER_RM_CONFIG = REPO / "examples" / "rewardsql" / "rm_config.json"
def _write(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture(autouse=True)
def one_thread():
    """The micro model trains faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prm-data")
    return _write(folder / "train.jsonl", prm_records(160, 0)), _write(folder / "dev.jsonl",
                                                                    prm_records(60, 1))


def _config(tmp_path_factory, data, out, **changes) -> PRMConfig:
    train, dev = data
    return PRMConfig.from_dict({
        "model_name_or_path": str(tiny_model(tmp_path_factory)), "train_file": train,
        "eval_file": dev, "output_dir": str(out), "per_device_train_batch_size": 8,
        "learning_rate": 3e-3, "num_train_epochs": 2, "max_length": 256, "logging_steps": 5,
        "save_steps": 1000, "warmup_ratio": 0.1, "seed": 0, "resume_from_checkpoint": None,
        **changes})


def test_training_lowers_the_loss_and_beats_chance(tmp_path_factory, tmp_path, data):
    config = _config(tmp_path_factory, data, tmp_path / "prm")
    result = run_prm(config)
    assert result.final_loss < result.first_loss * 0.7
    assert len(result.evaluations) == 2  # one per epoch
    last = result.evaluations[-1]
    assert last["step_accuracy"] > last["majority_step_accuracy"] + 0.1
    assert last["auc"] > 0.8
    assert last["step_accuracy"] > result.evaluations[0]["step_accuracy"] - 0.05
    settings = json.loads((tmp_path / "prm" / "prm_config.json").read_text())
    assert settings["step_tag"] == " и " and settings["candidate_tokens"] == ["+", "-"]
    assert settings["execution_results"] is True and settings["result_rows"] == 50
    # The saved PRM scores the held-out data the way the last evaluation did
    scorer = PRMScorer(tmp_path / "prm", batch_size=7)
    dev = read_jsonl(Path(data[1]))
    predicted = scorer.score_many([(r["prompt"], r["annotated_steps"]) for r in dev])
    targets = [[1.0 if lab == "+" else 0.0 for lab in r["labels"]] for r in dev]
    again = prm_metrics(predicted, targets)
    assert again["step_accuracy"] == pytest.approx(last["step_accuracy"])
    assert PRMConfig.from_dict(json.loads((tmp_path / "prm" / "rm_config.json").read_text())
                               ) == config


def test_soft_targets_train(tmp_path_factory, tmp_path, data):
    config = _config(tmp_path_factory, data, tmp_path / "soft", label_type="soft",
                     max_steps=8, eval_file=None)
    result = run_prm(config)
    assert result.final_loss < result.first_loss and result.evaluations == []


def test_tag_that_is_not_one_token_is_a_clear_error(tmp_path_factory, tmp_path, data):
    config = _config(tmp_path_factory, data, tmp_path / "x", step_tag="<step>")
    with pytest.raises(ConfigError, match="exactly one token") as info:
        run_prm(config)
    assert info.value.key == "step_tag" and not (tmp_path / "x").exists()


def test_data_must_match_the_annotation_settings(tmp_path_factory, tmp_path, data):
    config = _config(tmp_path_factory, data, tmp_path / "x", result_rows=10)
    with pytest.raises(ConfigError, match="annotated with result_rows=50"):
        run_prm(config)
    plain = _write(tmp_path / "plain.jsonl", [
        {k: v for k, v in r.items() if k != "annotated_steps"} for r in prm_records(3, 2)])
    with pytest.raises(ConfigError, match=r"'annotated_steps'.*execution_results"):
        run_prm(_config(tmp_path_factory, (plain, None), tmp_path / "y"))


@pytest.mark.parametrize(("data", "key", "message"), [
    ({"label_typ": "hard"}, "label_typ", "did you mean 'label_type'"),
    ({"label_type": "fuzzy"}, "label_type", '"hard" or "soft"'),
    ({"candidate_tokens": ["+"]}, "candidate_tokens", "two different tokens"),
    ({"result_chars": 0}, "result_chars", "positive integer"),
    ({"learning_rate": "fast"}, "learning_rate", "non-negative number"),
])
def test_bad_keys_name_the_key(data, key, message):
    base = {"model_name_or_path": "m", "train_file": "t.jsonl", "output_dir": "o"}
    with pytest.raises(ConfigError, match=message) as info:
        PRMConfig.from_dict({**base, **data}, source="rm.json")
    assert info.value.key == key


def test_dry_run_of_the_papers_config(tmp_path, data):
    result = run_cli("rm", "train", "--config", str(PAPER_RM_CONFIG), "--dry-run",
                     f"train_file={data[0]}", f"eval_file={data[1]}")
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout[:result.stdout.index("\n}\n") + 2])
    assert settings["model_name_or_path"] == "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert settings["step_tag"] == " и " and settings["label_type"] == "hard"
    assert settings["deepspeed"]["zero_optimization"]["stage"] == 3
    assert "train_file: 160 examples" in result.stdout
    assert "dry run: config is valid" in result.stdout
    bad = run_cli("rm", "train", "--config", str(PAPER_RM_CONFIG), "--dry-run")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().endswith("key 'train_file': no such file: "
                                       "data/bird/prm_train.jsonl")


def test_auc():
    assert auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert auc([0.5, 0.5], [False, True]) == 0.5
    assert auc([0.2, 0.3], [True, True]) is None


def test_steps_past_max_length_are_counted_and_warned_about(tmp_path_factory, data):
    """Steps that do not fit are left out of training (and will not be scored): the loader
    counts them against the labelled steps and says so in one warning naming the file."""
    from rewardsql.training.prm.encode import encode, tag_tokens
    from rewardsql.training.prm.trainer import _load_examples
    from transformers import AutoTokenizer

    train, _ = data
    config = _config(tmp_path_factory, data, "unused", max_length=40)
    tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path)
    tokens = tag_tokens(tokenizer, config.step_tag, config.candidate_tokens)
    records = read_jsonl(Path(train))
    kept = [len(encode(tokenizer, r["prompt"], r["annotated_steps"], tokens.tag_id,
                       max_length=40).tag_positions) for r in records]
    labelled = sum(len(r["annotated_steps"]) for r in records)
    assert 0 < sum(kept) < labelled  # the check bites: some steps fit, some do not
    with pytest.warns(RewardSQLWarning, match=rf"{train}: {labelled - sum(kept)} of {labelled} "
                      r"labelled steps lie past max_length=40"):
        examples = _load_examples(train, "train_file", config, tokenizer, tokens)
    assert examples.cut_steps == labelled - sum(kept) and examples.steps == sum(kept)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing cut at the fixture's own max_length
        assert _load_examples(train, "train_file", _config(tmp_path_factory, data, "unused"),
                              tokenizer, tokens).cut_steps == 0


def test_the_command_says_the_cut_in_one_line(tmp_path_factory, tmp_path, data):
    """``rm train`` prints rewardsql's warnings as ``warning: ...``, without Python's
    ``file:line: UserWarning:`` prefix."""
    config = _config(tmp_path_factory, data, tmp_path / "prm", max_length=40, max_steps=1,
                     eval_file=None)
    path = tmp_path / "rm.json"
    path.write_text(json.dumps(config.to_dict()))
    result = run_cli("rm", "train", "--config", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    cut = [line for line in result.stderr.splitlines() if "labelled steps lie past" in line]
    assert len(cut) == 1 and cut[0].startswith(f"warning: {data[0]}: "), result.stderr[-3000:]
    assert "UserWarning" not in result.stderr
