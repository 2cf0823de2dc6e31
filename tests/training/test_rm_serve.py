"""``rewardsql rm serve``'s command line, and its one-line errors where vLLM is absent (the main
test environment has no vLLM; the server itself runs in tests/verl_cpu/test_prm_server.py)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from _tiny_helpers import run_cli, tiny_model
from rewardsql.training.prm.serve import vllm_command
from rewardsql.training.prm.served import prm_fingerprint


@pytest.fixture(scope="module")
def prm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "prm"
    shutil.copytree(tiny_model(tmp_path_factory), path)
    (path / "prm_config.json").write_text(json.dumps({"step_tag": " и ", "max_length": 300}))
    return path


def test_ours_win_and_the_rest_passes_through(prm: Path) -> None:
    command = vllm_command(prm, "0.0.0.0", 9000, ["--dtype", "bfloat16", "--port", "1",
                                                   "--host=x", "--model", "other",
                                                   "--enforce-eager", "--max-model-len", "9"])
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    args = command[3:]
    assert args[:8] == ["--model", str(prm), "--served-model-name", prm_fingerprint(prm),
                        "--host", "0.0.0.0", "--port", "9000"]
    assert args[8:] == ["--max-model-len", "301", "--dtype", "bfloat16", "--enforce-eager"]


def test_the_fingerprint_follows_the_weights(prm: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(prm, copy)
    assert prm_fingerprint(copy) == prm_fingerprint(prm)  # the same PRM elsewhere
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one byte of the last tensor
    weights.write_bytes(bytes(data))
    assert prm_fingerprint(copy) != prm_fingerprint(prm)


def test_not_a_model_directory_is_one_line(tmp_path: Path) -> None:
    result = run_cli("rm", "serve", "--prm", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: key '--prm': {tmp_path.resolve()} is not a model directory (no config.json)"]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_without_vllm_it_says_what_to_install(prm: Path) -> None:
    result = run_cli("rm", "serve", "--prm", str(prm))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: rm serve needs vLLM: ")
    assert "rewardsql[verl-cpu]" in lines[0]
