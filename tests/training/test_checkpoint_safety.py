"""Resuming a local-engine checkpoint loads no code (issue 27).

A checkpoint directory may come from elsewhere: its optimizer.pt, scheduler.pt and rng.pt are
loaded with ``weights_only=True``. A real checkpoint written by ``save_checkpoint`` (a tiny real
Qwen2 model, AdamW, verl's cosine scheduler) still restores; a crafted pickle put in its place,
whose ``__reduce__`` would create a marker file, is refused with a one-line LaunchError naming
the file, and the marker never appears.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from rewardsql.errors import LaunchError
from rewardsql.training.local import checkpoint as ckpt

pytest.importorskip("verl")


class _WritesMarker:
    """Unpickled by a full ``pickle`` load, this calls ``open(marker, "w")``: code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def _parts() -> tuple[torch.nn.Module, torch.optim.Optimizer, object, object]:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from verl.utils.torch_functional import get_cosine_schedule_with_warmup

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=1,
                                                num_training_steps=4)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "a": 1}, unk_token="<pad>")),
        pad_token="<pad>")
    return model, optimizer, scheduler, tokenizer


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: object) -> None:
    model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    optimizer.step()
    scheduler.step()  # type: ignore[attr-defined]
    optimizer.zero_grad()


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    model, optimizer, scheduler, tokenizer = _parts()
    _step(model, optimizer, scheduler)
    state = ckpt.TrainerState(global_step=1, epoch=0, batch_in_epoch=1, dev_history=[])
    return ckpt.save_checkpoint(tmp_path / "checkpoints", state, model=model, tokenizer=tokenizer,
                                optimizer=optimizer, scheduler=scheduler,
                                engine_rng=np.random.default_rng(7), keep=None)


def test_a_real_checkpoint_restores_with_safe_loading(checkpoint: Path) -> None:
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    saved_optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    _, optimizer, scheduler, _ = _parts()
    engine_rng = np.random.default_rng(123)
    random.random(), np.random.rand(), torch.rand(1)  # move every generator on
    # the state was saved before `expected` was drawn: restoring it draws the same numbers again
    state = ckpt.load_training_state(checkpoint, optimizer=optimizer, scheduler=scheduler,
                                     engine_rng=engine_rng)
    assert state.global_step == 1
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert engine_rng.random() == np.random.default_rng(7).random()
    assert scheduler.last_epoch == 1  # type: ignore[attr-defined]
    restored = optimizer.state_dict()["state"]
    assert restored.keys() == saved_optimizer["state"].keys()
    for key, value in saved_optimizer["state"].items():
        assert torch.equal(restored[key]["exp_avg"], value["exp_avg"])


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng.pt"])
def test_a_crafted_pickle_in_a_checkpoint_is_refused(checkpoint: Path, tmp_path: Path,
                                                     name: str) -> None:
    marker = tmp_path / "marker"
    torch.save({"state": {}, "param_groups": [], "payload": _WritesMarker(marker)},
               checkpoint / name)
    _, optimizer, scheduler, _ = _parts()
    with pytest.raises(LaunchError) as info:
        ckpt.load_training_state(checkpoint, optimizer=optimizer, scheduler=scheduler,
                                 engine_rng=np.random.default_rng(0))
    message = str(info.value)
    assert str(checkpoint / name) in message and "\n" not in message
    assert "io.open" in message  # says what was refused
    assert not marker.exists()


def test_a_plain_pickle_file_is_refused_too(checkpoint: Path, tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "marker"
    (checkpoint / "rng.pt").write_bytes(pickle.dumps(_WritesMarker(marker)))
    with pytest.raises(LaunchError, match=r"rng\.pt"):
        ckpt.safe_load(checkpoint / "rng.pt")
    assert not marker.exists()
