"""verl's trained actor as a Hugging Face model directory, made by verl's own model merger.

verl saves the actor as FSDP shards, ``OUT/global_step_N/actor/model_world_size_W_rank_R.pt``,
beside ``fsdp_config.json`` (W) and ``huggingface/`` (the model's config and tokenizer); its
tracker file ``OUT/latest_checkpointed_iteration.txt`` names the newest step. verl's model merger
(:mod:`verl.model_merger`, the library behind ``python -m verl.model_merger merge --backend
fsdp``) joins the shards into one Hugging Face directory, in bfloat16 (a LoRA actor's adapter is
then folded into the weights). ``rewardsql train`` exports the last checkpoint to
``OUT/hf_model`` when it ends; ``rewardsql export`` exports any checkpoint.

The directory is written beside its final name and renamed into place, so it is either the whole
model or absent; it carries ``rewardsql_export.json`` (which checkpoint it is), by which a later
export knows it may replace it. Importing this module imports neither torch nor verl.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rewardsql.errors import ConfigError, LaunchError, require_verl
from rewardsql.io import atomic_directory, atomic_write_json

#: Where ``rewardsql train`` exports the last checkpoint, under its output directory.
HF_MODEL = "hf_model"
#: Written into every exported directory: the checkpoint it was made from.
EXPORT_RECORD = "rewardsql_export.json"
#: verl's tracker of the newest checkpoint, in ``trainer.default_local_dir``.
TRACKER = "latest_checkpointed_iteration.txt"
#: Where verl's merger puts a LoRA actor's adapter, beside the base weights.
LORA_ADAPTER = "lora_adapter"
_STEP_DIR = re.compile(r"global_step_(\d+)")


@dataclass(frozen=True)
class Checkpoint:
    """One actor that verl saved: ``run_dir/global_step_<step>/actor``."""

    actor_dir: Path
    #: None when the actor directory was moved out of verl's ``global_step_N`` layout.
    step: int | None
    #: The trainer's ``default_local_dir`` (the folder holding ``global_step_N``).
    run_dir: Path

    def describe(self) -> str:
        return f"global_step_{self.step}" if self.step is not None else str(self.actor_dir)


def find_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint ``path`` names: a run's output directory (its newest checkpoint, by verl's
    tracker file), ``global_step_N`` or ``global_step_N/actor``.

    Raises:
        ConfigError: naming ``path``, when it is none of these or the checkpoint is incomplete
            (a shard, ``fsdp_config.json`` or ``huggingface/config.json`` missing).
    """
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError("no such directory (expected a verl checkpoint: OUT, "
                          "OUT/global_step_N or OUT/global_step_N/actor)", source=path)
    if (path / TRACKER).is_file():
        found = latest_checkpoint(path)
        assert found is not None  # the tracker exists
        return found
    actor = path / "actor" if (path / "actor").is_dir() else path
    if not (actor / "fsdp_config.json").is_file():
        raise ConfigError(
            "not a verl checkpoint: expected a run's output directory (with "
            f"{TRACKER}), global_step_N (with actor/) or its actor/ (with fsdp_config.json)"
            + _megatron_hint(actor), source=path)
    match = _STEP_DIR.fullmatch(actor.parent.name)
    checkpoint = Checkpoint(actor, int(match.group(1)) if match else None,
                            actor.parent.parent if match else actor.parent)
    check_complete(checkpoint)
    return checkpoint


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The checkpoint verl's tracker file in ``run_dir`` names; None when there is no tracker
    (no checkpoint was saved). A tracker naming a missing or incomplete checkpoint is a
    ConfigError naming it."""
    run_dir = Path(run_dir).expanduser().resolve()
    tracker = run_dir / TRACKER
    if not tracker.is_file():
        return None
    text = tracker.read_text(encoding="utf-8").strip()
    if not text.isdigit():
        raise ConfigError(f"expected a step number, found {text[:40]!r}", source=tracker)
    actor = run_dir / f"global_step_{int(text)}" / "actor"
    if not actor.is_dir():
        raise ConfigError(f"names step {int(text)}, and {actor} does not exist", source=tracker)
    checkpoint = Checkpoint(actor, int(text), run_dir)
    check_complete(checkpoint)
    return checkpoint


def check_complete(checkpoint: Checkpoint) -> None:
    """Every file verl's FSDP merger reads is there: ``fsdp_config.json`` with the world size,
    one model shard per rank, and the config in ``huggingface/``; a ConfigError naming the
    first one missing."""
    actor = checkpoint.actor_dir
    config_file = actor / "fsdp_config.json"
    if not config_file.is_file():
        raise ConfigError("not an FSDP checkpoint (no fsdp_config.json)" + _megatron_hint(actor),
                          source=actor)
    try:
        world_size = json.loads(config_file.read_text(encoding="utf-8")).get("world_size")
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"unreadable: {exc}", source=config_file) from None
    if not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(f"expected a positive world_size, got {world_size!r}",
                          source=config_file)
    missing = [f"model_world_size_{world_size}_rank_{rank}.pt" for rank in range(world_size)
               if not (actor / f"model_world_size_{world_size}_rank_{rank}.pt").is_file()]
    if missing:
        # on several nodes each rank writes its shard on its own node's disk
        raise ConfigError(
            f"{len(missing)} of {world_size} model shards missing ({missing[0]}"
            f"{', ...' if len(missing) > 1 else ''}); a checkpoint saved on several nodes must "
            "be on a shared file system, or gathered into one folder", source=actor)
    if not (actor / "huggingface" / "config.json").is_file():
        raise ConfigError("no huggingface/config.json (verl saves the model's config and "
                          "tokenizer there)", source=actor)


def _megatron_hint(actor: Path) -> str:
    if (actor / "dist_ckpt").is_dir() or (actor / "model" / "dist_ckpt").is_dir():
        return ("; this is a Megatron checkpoint: merge it with `python -m verl.model_merger "
                "merge --backend megatron --local_dir ACTOR_DIR --target_dir DIR`")
    return ""


def default_output(checkpoint: Checkpoint, *, newest: bool) -> Path:
    """``OUT/hf_model`` for a run's newest checkpoint (where ``train`` exports), else
    ``OUT/hf_model_step_N`` (``hf_model`` beside an actor directory moved out of verl's
    layout)."""
    if newest or checkpoint.step is None:
        return checkpoint.run_dir / HF_MODEL
    return checkpoint.run_dir / f"{HF_MODEL}_step_{checkpoint.step}"


def check_output(output: Path, remedy: str = "choose another --output, or move it away") -> None:
    """``output`` may be written: absent, empty, or an earlier export (it is replaced); a
    ConfigError ending with ``remedy`` otherwise, so that no other model directory is
    overwritten by a slip."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"exists and is not a directory: {remedy}", source=output)
    if output.is_dir() and any(output.iterdir()) and not (output / EXPORT_RECORD).is_file():
        raise ConfigError(f"exists and is not an earlier export (no {EXPORT_RECORD}), so it is "
                          f"not replaced: {remedy}", source=output)


def export_checkpoint(checkpoint: Checkpoint, output: Path) -> Path:
    """Merge ``checkpoint``'s shards with verl's FSDP model merger into a Hugging Face
    directory at ``output`` (written whole, then renamed into place); return ``output``.

    Raises:
        ConfigError: ``output`` is another directory (:func:`check_output`), or verl is missing.
        LaunchError: the merger failed (a corrupt shard, a full disk); ``output`` is unchanged.
    """
    require_verl("exporting a verl checkpoint")
    output = Path(output).expanduser().resolve()
    check_output(output)
    try:
        with atomic_directory(output) as tmp:
            _merge(checkpoint.actor_dir, tmp)
            lora = (tmp / LORA_ADAPTER).is_dir()
            if lora:
                _fold_lora(tmp)
            atomic_write_json(tmp / EXPORT_RECORD, {
                "checkpoint": str(checkpoint.actor_dir), "step": checkpoint.step,
                "merged_by": "verl.model_merger (backend fsdp)",
                "lora": f"folded into the weights; the adapter alone in {LORA_ADAPTER}/"
                        if lora else None})
    except ConfigError:
        raise
    except Exception as exc:  # the merger's own errors, of every kind: one line
        raise LaunchError(f"verl's model merger could not export {checkpoint.actor_dir}: "
                          f"{type(exc).__name__}: {exc}") from None
    return output


def _merge(actor_dir: Path, target: Path) -> None:
    """verl's ``FSDPModelMerger`` on ``actor_dir``, as ``python -m verl.model_merger merge
    --backend fsdp --local_dir ACTOR --target_dir TARGET`` runs it."""
    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    config = ModelMergerConfig(operation="merge", backend="fsdp", local_dir=str(actor_dir),
                               target_dir=str(target),
                               hf_model_config_path=str(actor_dir / "huggingface"))
    with _quiet_merger():
        merger = FSDPModelMerger(config)
        try:
            merger.merge_and_save()
        finally:
            merger.cleanup()


def _fold_lora(target: Path) -> None:
    """verl's merger writes a LoRA actor as its base weights plus ``lora_adapter/``, a directory
    that transformers would load as the untrained base model: fold the adapter into the weights
    (peft's ``merge_and_unload``, in float32, saved in bfloat16 as the merger saves), so the
    directory is the trained policy. The adapter stays beside it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    settings = json.loads((target / LORA_ADAPTER / "adapter_config.json").read_text("utf-8"))
    if not settings.get("lora_alpha"):
        # the merger falls back to alpha 0, which folds into no change at all
        raise ValueError("the checkpoint has no lora_train_meta.json, so the adapter's "
                         "lora_alpha is unknown")
    base = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, target / LORA_ADAPTER).merge_and_unload()
    model.to(torch.bfloat16).save_pretrained(target)


@contextlib.contextmanager
def _quiet_merger() -> Iterator[None]:
    """The merger prints its progress (naming the temp directory) and torch warns that the
    shards' device mesh is unpickled without a process group, which a merge does not need:
    neither reaches the user; errors still do, as exceptions."""
    from transformers.utils import logging as hf_logging

    mesh_logger = logging.getLogger("torch.distributed.device_mesh")
    level, hf_level = mesh_logger.level, hf_logging.get_verbosity()
    mesh_logger.setLevel(logging.ERROR)
    hf_logging.set_verbosity_error()  # the merger's deprecated torch_dtype= is verl's to change
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        mesh_logger.setLevel(level)
        hf_logging.set_verbosity(hf_level)
