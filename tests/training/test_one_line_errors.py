"""Bad input the training wing meets is one line naming the key and value (issue 26): a model
that is neither a local directory nor reachable on the Hub, a directory that holds no model, and
a command-line override of a key verl has but leaves unset (``???``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _tiny_helpers import quick_example
from rewardsql.errors import ConfigError
from rewardsql.training.pretrained import from_pretrained


def test_sft_with_a_model_that_is_not_local_and_no_network_is_one_line(tmp_path_factory,
                                                                        tmp_path):
    # HF_HUB_OFFLINE=1 is how the Hub client behaves without a network, without waiting for one.
    example = quick_example(tmp_path_factory)
    config = tmp_path / "sft.json"
    config.write_text(json.dumps({"model_name_or_path": "no-such-org/no-such-model-26",
                                  "train_file": str(example.sft_train),
                                  "output_dir": str(tmp_path / "out")}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "rewardsql", "sft", "--config", str(config)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "key 'model_name_or_path'" in lines[0]
    assert "'no-such-org/no-such-model-26'" in lines[0]
    assert "must be a local directory or a reachable hub id" in lines[0]
    assert "Traceback" not in result.stderr


def test_a_directory_without_a_model_names_the_key(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    with pytest.raises(ConfigError) as info:
        from_pretrained(AutoModelForCausalLM, tmp_path, key="actor_rollout_ref.model.path")
    assert info.value.key == "actor_rollout_ref.model.path"
    assert str(tmp_path) in str(info.value) and "cannot be loaded" in str(info.value)
    assert "\n" not in str(info.value)


def test_override_of_a_key_verl_leaves_unset_sets_it_and_never_suggests_itself() -> None:
    pytest.importorskip("verl")
    from rewardsql.training.launcher import compose

    # verl's ppo_trainer.yaml has "name: ???" here: Hydra sets it with a plain KEY=VALUE.
    config = compose.verl_defaults()
    compose.apply_overrides(config, ["actor_rollout_ref.rollout.name=vllm"])
    assert config.actor_rollout_ref.rollout.name == "vllm"
    with pytest.raises(ConfigError, match="without '\\+'"):
        compose.apply_overrides(compose.verl_defaults(), ["+actor_rollout_ref.rollout.name=x"])
    # A key that is not there never gets itself as the suggestion.
    defaults = compose.to_plain(compose.verl_defaults(), resolve=False)
    error = compose.unknown_key_error("actor_rollout_ref.rollout.name", defaults, None)
    assert "did you mean" not in str(error)
