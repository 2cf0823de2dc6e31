"""Checkpoints: model, optimizer, scheduler, RNG states, step and data position, written whole.

Layout, under ``<output_dir>/checkpoints``: ``global_step_<k>/`` with ``model/`` (Hugging Face
format), ``optimizer.pt``, ``scheduler.pt``, ``rng.pt`` and ``trainer_state.json``; and
``latest_checkpointed_iteration.txt`` (verl's name) holding the newest step. Each checkpoint
directory is built beside its final name and renamed into place, so an interrupted save leaves
the previous checkpoints intact and never a partial one.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rewardsql.errors import LaunchError
from rewardsql.io import atomic_directory, atomic_write_json, atomic_write_text

LATEST = "latest_checkpointed_iteration.txt"
_STEP_DIR = re.compile(r"^global_step_(\d+)$")


@dataclass
class TrainerState:
    """Where training stands after ``global_step`` optimizer steps.

    ``batches_drawn`` counts the prompt batches taken from the data so far: ``global_step`` of
    them, or more with dynamic sampling (``algorithm.filter_groups``), which draws batches until
    it has enough groups whose rewards differ.
    """

    global_step: int
    epoch: int
    batch_in_epoch: int
    dev_history: list[list[float]]
    batches_drawn: int = -1

    def __post_init__(self) -> None:
        if self.batches_drawn < 0:  # a checkpoint written before dynamic sampling existed
            self.batches_drawn = self.global_step


def rng_state(engine_rng: np.random.Generator) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "engine": engine_rng.bit_generator.state,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], engine_rng: np.random.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    engine_rng.bit_generator.state = state["engine"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: Path, state: TrainerState, *, model: Any, tokenizer: Any,
                    optimizer: torch.optim.Optimizer, scheduler: Any,
                    engine_rng: np.random.Generator, keep: int | None) -> Path:
    """Write ``root/global_step_<k>`` atomically, then point ``latest`` at it."""
    target = root / f"global_step_{state.global_step}"
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "model")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(engine_rng), tmp / "rng.pt")
        atomic_write_json(tmp / "trainer_state.json", state.__dict__)
    atomic_write_text(root / LATEST, f"{state.global_step}\n")
    if keep:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / "trainer_state.json").is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint (``latest`` file first, else the highest step)."""
    marker = root / LATEST
    if marker.is_file():
        step = marker.read_text(encoding="utf-8").strip()
        candidate = root / f"global_step_{step}"
        if (candidate / "trainer_state.json").is_file():
            return candidate
    checkpoints = list_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


def load_state(path: Path) -> TrainerState:
    data = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    return TrainerState(**data)


def _numpy_array_globals() -> list[Any]:
    """What unpickling numpy's legacy RNG state (a uint32 array) needs, and nothing more: the
    array reconstructor (``numpy._core`` or ``numpy.core`` by version), the array and dtype
    classes, and the uint32 dtype's class."""
    reconstruct = np.zeros(1, dtype=np.uint32).__reduce__()[0]
    return [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def safe_load(file: Path) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only (plus the
    numpy types of :func:`_numpy_array_globals`). A checkpoint directory may come from
    elsewhere; a full unpickle of it could run any code, so anything else is refused with a
    :class:`LaunchError` naming the file."""
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, zip errors: all the file's fault
        raise LaunchError(f"cannot load checkpoint file {file} safely (only tensors and plain "
                          f"state are loaded): {_load_failure(exc)}") from None


def _load_failure(exc: Exception) -> str:
    """The cause in torch's message, which is mostly paragraphs of advice."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it refers to the Python object {found.group(1)}"
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if found:
        return found.group(1).strip()[:200]
    return " ".join(text.split())[:200]


def load_training_state(path: Path, *, optimizer: torch.optim.Optimizer, scheduler: Any,
                        engine_rng: np.random.Generator) -> TrainerState:
    """Restore optimizer, scheduler and RNG states from ``path``; return its trainer state."""
    optimizer.load_state_dict(safe_load(path / "optimizer.pt"))
    scheduler.load_state_dict(safe_load(path / "scheduler.pt"))
    restore_rng(safe_load(path / "rng.pt"), engine_rng)
    return load_state(path)
