"""``run_sft``: supervised fine-tuning with transformers' Trainer.

The Trainer gives checkpoints, resume, DeepSpeed, report_to and the progress bar; this module
picks the attention kernel and precision the machine supports, builds the response-only labels,
and saves the final model (merged when LoRA is used) with its tokenizer atomically.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import pickle
import shutil
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

from rewardsql.errors import ConfigError, LaunchError, RewardSQLWarning
from rewardsql.io import atomic_directory, atomic_write_json
from rewardsql.training.cpu_math import describe_cpu_math
from rewardsql.training.pretrained import from_pretrained
from rewardsql.training.sft.config import SFTConfig, check_paths
from rewardsql.training.sft.data import Collator, read_rows, tokenize

log = logging.getLogger(__name__)
RESULT_FILE = "sft_result.json"
CONFIG_FILE = "sft_config.json"
#: The learning settings of the run whose ``checkpoint-*`` folders are in output_dir, written
#: as it starts (:meth:`SFTConfig.learning_settings`).
CHECKPOINT_SETTINGS = "checkpoint_settings.json"


@dataclass(frozen=True)
class TrainingResult:
    """What every trainer's run reports first: where, losses (first and last logged training
    loss), steps and timing. Each trainer's result adds its own fields."""

    output_dir: Path
    first_loss: float | None
    final_loss: float | None
    steps: int
    start_step: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True, kw_only=True)  # kw_only: fields without defaults after the base's
class SFTResult(TrainingResult):
    """What an SFT run did: :class:`TrainingResult`, the data counts and the eval loss."""

    n_examples: int
    dropped: int
    resumed_from: str | None = None
    eval_loss: float | None = None
    attn_implementation: str = "sdpa"
    bf16: bool = False
    #: ``rewardsql.training.cpu_math.describe_cpu_math()``: whether the run's CPU arithmetic was
    #: pinned
    cpu_math: dict[str, Any] = field(default_factory=dict)


def attention_implementation(setting: str | bool) -> str:
    """The attention kernel for ``flash_attention``: "auto", true or false."""
    import torch

    installed = importlib.util.find_spec("flash_attn") is not None
    cuda = torch.cuda.is_available()
    if setting is True:
        if not installed:
            raise ConfigError("FlashAttention was requested but the flash_attn package is not "
                              "installed: pip install rewardsql[flash-attn] (needs CUDA), or set "
                              '"flash_attention": "auto"', key="flash_attention")
        if not cuda:
            raise ConfigError("FlashAttention needs a CUDA GPU and none is available; set "
                              '"flash_attention": "auto" or false', key="flash_attention")
        return "flash_attention_2"
    if setting == "auto" and installed and cuda:
        return "flash_attention_2"
    return "sdpa"


def bf16_supported() -> bool:
    """Whether this machine trains in bfloat16 natively (a CUDA GPU that has it, or a CPU
    with AVX512-BF16 / AMX)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, probe, None)
        if check is not None and check():
            return True
    return False


def check_device(device: str) -> None:
    """``device: cuda`` on a machine without a usable GPU is an error, not a silent CPU run."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        build = (f"built for CUDA {torch.version.cuda}" if torch.version.cuda
                 else "a CPU-only build")
        raise ConfigError(f"CUDA is not available (torch {torch.__version__}, {build}); use "
                          '"auto" or "cpu"', key="device")


def check_deepspeed(config: SFTConfig) -> None:
    if config.deepspeed is not None and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("a DeepSpeed config is set but the deepspeed package is not installed: "
                          "pip install rewardsql[deepspeed], or set \"deepspeed\": null",
                          key="deepspeed")


def find_checkpoint(config: SFTConfig) -> str | None:
    """The checkpoint to resume from, per ``resume_from_checkpoint``."""
    setting = config.resume_from_checkpoint
    if setting is None:
        return None
    if setting != "auto":
        return setting
    out = Path(config.output_dir)
    steps = []
    for child in out.glob("checkpoint-*") if out.is_dir() else ():
        suffix = child.name.removeprefix("checkpoint-")
        # A checkpoint is complete once the Trainer wrote its state file (it writes it last,
        # and not atomically: a kill can leave it torn)
        if suffix.isdigit() and _complete_state(child / "trainer_state.json"):
            steps.append((int(suffix), child))
    if not steps:
        return None
    check_same_run(config)
    return str(max(steps)[1])


def check_same_run(config: SFTConfig) -> None:
    """Refuse to resume output_dir's checkpoints when they were made with other learning
    settings (another model, data, seed, learning rate...): training on would silently mix two
    runs. Checkpoints without a record (older rewardsql) are resumed as before."""
    out = Path(config.output_dir)
    try:
        recorded = json.loads((out / CHECKPOINT_SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    wanted = json.loads(json.dumps(config.learning_settings()))
    changed = [f"{key} {recorded.get(key)!r} -> {wanted.get(key)!r}"
               for key in sorted(set(recorded) | set(wanted))
               if recorded.get(key) != wanted.get(key)]
    if changed:
        raise ConfigError(
            f"{out} holds checkpoints of a run with other settings ({'; '.join(changed)}): "
            "resuming them would mix two runs; use another output_dir, remove its checkpoint-* "
            "folders, or name one in resume_from_checkpoint to resume it anyway",
            key="output_dir")


def finished_state(resume: str | None, config: SFTConfig) -> dict[str, Any] | None:
    """The trainer state of ``resume`` when it ends the run ``config`` asks for (same total
    steps or epochs, all done); None otherwise, and always with LoRA (its checkpoints hold the
    adapter only)."""
    if resume is None or config.lora is not None:
        return None
    state = json.loads((Path(resume) / "trainer_state.json").read_text(encoding="utf-8"))
    total = state.get("max_steps") or 0
    same_run = (config.max_steps == total if config.max_steps > 0
                else state.get("num_train_epochs") == config.num_train_epochs)
    return state if same_run and 0 < total <= state.get("global_step", 0) else None


def _complete_state(path: Path) -> bool:
    try:
        return "global_step" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


class _LossLog:
    """Collects the training losses the Trainer logs, and forces a log on the last step."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        losses: list[tuple[int, float]] = []
        evals: list[float] = []

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step >= state.max_steps:
                    control.should_log = True

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    losses.append((state.global_step, float(logs["loss"])))
                if logs and "eval_loss" in logs:
                    evals.append(float(logs["eval_loss"]))

        self.callback = Callback()
        self.losses = losses
        self.evals = evals


_Result = TypeVar("_Result", bound=TrainingResult)


def earlier_result(config: SFTConfig, result_file: str, config_file: str,
                   result_type: type[_Result]) -> _Result | None:
    """The result of a finished run of this very config in ``output_dir``, when
    ``resume_from_checkpoint`` is "auto": the same command run again returns at once (a run
    with no checkpoint to resume from would otherwise train from the start). None otherwise,
    and when the training or evaluation file changed after that run."""
    if config.resume_from_checkpoint != "auto":
        return None
    out = Path(config.output_dir)
    try:
        stored = json.loads((out / config_file).read_text(encoding="utf-8"))
        data = json.loads((out / result_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if stored != json.loads(json.dumps(config.to_dict())):
        return None
    made = (out / result_file).stat().st_mtime
    for data_file in (config.train_file, config.eval_file):  # data written since: train again
        if data_file and Path(data_file).stat().st_mtime > made:
            return None
    known = {f.name for f in fields(result_type)}  # type: ignore[arg-type]
    data = {k: v for k, v in data.items() if k in known}
    data["output_dir"] = out
    log.info("%s already holds this run's result (%s): not training again", out, result_file)
    return result_type(**data)


def train_or_adopt(trainer: Any, resume: str | None, finished: dict[str, Any] | None,
                   losses: _LossLog) -> int:
    """Train from ``resume`` (None: from the start); return the step training started at.

    ``finished`` (:func:`finished_state`): the run had ended before it was killed, before or
    while saving the final model. Resuming the Trainer there would train one more step, so the
    checkpoint's state and losses are adopted instead (its weights were loaded as the model).
    """
    start_step = 0
    if resume is not None:
        start_step = json.loads((Path(resume) / "trainer_state.json").read_text())["global_step"]
        log.info("resuming from %s (step %d)", resume, start_step)
    if finished is not None:
        trainer.state.global_step = start_step
        history = finished.get("log_history", [])
        losses.losses.extend((e["step"], float(e["loss"])) for e in history if "loss" in e)
        losses.evals.extend(float(e["eval_loss"]) for e in history if "eval_loss" in e)
        return start_step
    try:
        trainer.train(resume_from_checkpoint=resume)
    except pickle.UnpicklingError as exc:  # transformers loads resume files weights-only
        raise LaunchError(f"cannot resume from {resume} safely (only tensors and plain "
                          f"state are loaded): {str(exc).splitlines()[0]}") from None
    return start_step


def prepare_run(config: SFTConfig) -> tuple[str, bool]:
    """What every trainer on this machinery checks and sets first: paths, device, DeepSpeed,
    the attention implementation and bf16 (with its fallback), the seed. Returns
    ``(attention implementation, bf16)``."""
    import transformers

    check_paths(config)
    check_device(config.device)
    check_deepspeed(config)
    attn = attention_implementation(config.flash_attention)
    bf16 = config.bf16
    if bf16 and not bf16_supported():
        warnings.warn("bf16 was requested but this machine has no native bfloat16 support; "
                      "training in float32 instead", RewardSQLWarning,
                      stacklevel=3)
        bf16 = False
    transformers.set_seed(config.seed)
    return attn, bf16


class TrainingRecipe(Protocol[_Result]):
    """What one trainer adds to the skeleton :func:`run_training`: its record files, its data,
    its Trainer and the fields of its result beyond :func:`run_training`'s common ones."""

    #: the result's file and the config's file in output_dir (a finished run's record)
    result_file: str
    config_file: str
    result_type: type[_Result]
    #: whether the Trainer evaluates on its own (``eval_strategy``); known after load_data
    has_eval: bool

    def load_data(self, tokenizer: Any) -> None:
        """Read and encode the data (bad data fails here, before the model is loaded)."""

    def make_trainer(self, model: Any, args: Any, tokenizer: Any, callback: Any) -> Any:
        """The transformers Trainer, with ``callback`` among its callbacks."""

    def finish(self, trainer: Any, losses: _LossLog) -> dict[str, Any]:
        """After training: the result's own fields (final evaluation included)."""

    def extra_files(self, result: _Result) -> dict[str, Any]:
        """Files (name -> JSON data) saved with the model besides the result and config."""


def run_training(config: SFTConfig, recipe: TrainingRecipe[_Result]) -> _Result:
    """The skeleton of every trainer on this machinery (``rewardsql sft``, ``rewardsql rm
    train``): check the machine, return a finished run's result, load the tokenizer, the data
    (``recipe``), the model (from the last checkpoint when that ended the run; LoRA when set),
    train or resume, and save the final model with its record files atomically."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    attn, bf16 = prepare_run(config)
    done = earlier_result(config, recipe.result_file, recipe.config_file, recipe.result_type)
    if done is not None:
        return done
    started = time.monotonic()

    tokenizer = from_pretrained(AutoTokenizer, config.model_name_or_path, key="model_name_or_path")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    recipe.load_data(tokenizer)

    resume = find_checkpoint(config)
    finished = finished_state(resume, config)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(config.output_dir) / CHECKPOINT_SETTINGS, config.learning_settings())
    dtype = torch.bfloat16 if bf16 and config.deepspeed is not None else torch.float32
    source = resume if finished is not None and resume else config.model_name_or_path
    model = from_pretrained(AutoModelForCausalLM, source, key="model_name_or_path", dtype=dtype,
                            attn_implementation=attn)
    if config.gradient_checkpointing:
        model.config.use_cache = False
    if config.lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
            target_modules=list(config.lora.target_modules), task_type="CAUSAL_LM"))

    args = TrainingArguments(**_training_arguments(config, bf16, recipe.has_eval,
                                                   major=int(transformers.__version__[0])))
    losses = _LossLog()
    trainer = recipe.make_trainer(model, args, tokenizer, losses.callback)
    start_step = train_or_adopt(trainer, resume, finished, losses)
    own = recipe.finish(trainer, losses)
    result = recipe.result_type(
        output_dir=Path(config.output_dir), steps=trainer.state.global_step,
        first_loss=losses.losses[0][1] if losses.losses else None,
        final_loss=losses.losses[-1][1] if losses.losses else None,
        start_step=start_step, seconds=round(time.monotonic() - started, 2),
        resumed_from=resume, attn_implementation=attn, bf16=bf16, cpu_math=describe_cpu_math(),
        **own)
    files = {recipe.result_file: result.to_dict(), recipe.config_file: config.to_dict(),
             **recipe.extra_files(result)}
    _save_final(trainer, tokenizer, config, files)
    return result


class _SFTRecipe:
    """:func:`run_training` for SFT: response-only labels, the Trainer's own eval loss."""

    result_file, config_file, result_type = RESULT_FILE, CONFIG_FILE, SFTResult

    def __init__(self, config: SFTConfig) -> None:
        self.config = config
        self.train: Any = None
        self.evaluation: Any = None
        self.has_eval = False

    def load_data(self, tokenizer: Any) -> None:
        config = self.config
        self.train = tokenize(read_rows(config.train_file), tokenizer, config.max_length,
                              source=config.train_file)
        if config.eval_file:
            self.evaluation = tokenize(read_rows(config.eval_file, key="eval_file"), tokenizer,
                                       config.max_length, source=config.eval_file)
        self.has_eval = self.evaluation is not None

    def make_trainer(self, model: Any, args: Any, tokenizer: Any, callback: Any) -> Any:
        from transformers import Trainer

        return Trainer(model=model, args=args, train_dataset=self.train.examples,
                       eval_dataset=self.evaluation.examples if self.evaluation else None,
                       data_collator=Collator(tokenizer.pad_token_id),
                       processing_class=tokenizer, callbacks=[callback])

    def finish(self, trainer: Any, losses: _LossLog) -> dict[str, Any]:
        eval_loss = losses.evals[-1] if losses.evals else None
        if self.evaluation is not None and eval_loss is None:
            eval_loss = float(trainer.evaluate()["eval_loss"])
        return {"n_examples": len(self.train.examples), "dropped": self.train.dropped,
                "eval_loss": eval_loss}

    def extra_files(self, result: SFTResult) -> dict[str, Any]:
        return {}


def run_sft(config: SFTConfig) -> SFTResult:
    """Fine-tune ``config.model_name_or_path`` on ``config.train_file``; save to output_dir."""
    return run_training(config, _SFTRecipe(config))


def _training_arguments(config: SFTConfig, bf16: bool, has_eval: bool, major: int) -> dict:
    import torch

    kwargs: dict[str, Any] = dict(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate, weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm, num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps, lr_scheduler_type=config.lr_scheduler_type,
        bf16=bf16, gradient_checkpointing=config.gradient_checkpointing,
        deepspeed=config.deepspeed,
        report_to=list(config.report_to) if isinstance(config.report_to, tuple)
        else config.report_to,
        seed=config.seed, logging_steps=config.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.eval_steps or config.save_steps,
        remove_unused_columns=False, dataloader_num_workers=0,
        use_cpu=config.device == "cpu" or not torch.cuda.is_available(),
    )
    # transformers 5 takes the warmup ratio as a float warmup_steps; 4.x has warmup_ratio
    if major >= 5:
        kwargs["warmup_steps"] = config.warmup_ratio
    else:
        kwargs["warmup_ratio"] = config.warmup_ratio
    if config.group_by_length:  # 5 names the sampler; 4.x has a flag
        if major >= 5:
            kwargs["train_sampling_strategy"] = "group_by_length"
        else:
            kwargs["group_by_length"] = True
    return kwargs


def _save_final(trainer, tokenizer, config: SFTConfig, files: dict[str, Any]) -> None:
    """Replace output_dir whole with the final model, carrying checkpoints and logs across.

    Every process takes part in saving (DeepSpeed ZeRO-3 gathers the weights); the main process
    then swaps the directory in, with ``files`` (name -> JSON data: the result, the config, and
    whatever else the trainer records) written next to the model.
    """
    out = Path(config.output_dir)
    staging = out.with_name(f".{out.name}.final")
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
    trainer.accelerator.wait_for_everyone()
    model = trainer.model
    if hasattr(model, "merge_and_unload"):  # LoRA: save a plain model every command can load
        if trainer.is_world_process_zero():
            model.merge_and_unload().save_pretrained(staging)
    else:
        trainer.save_model(str(staging))
    if not trainer.is_world_process_zero():
        return
    with atomic_directory(out) as tmp:
        for entry in staging.iterdir():
            os.replace(entry, tmp / entry.name)
        tokenizer.save_pretrained(tmp)
        for name, data in files.items():
            atomic_write_json(tmp / name, data)
        moved: list[tuple[Path, Path]] = []
        try:
            for entry in sorted(out.iterdir()) if out.is_dir() else ():
                if not (tmp / entry.name).exists():
                    os.replace(entry, tmp / entry.name)
                    moved.append((entry, tmp / entry.name))
        except BaseException:
            # Put checkpoints back before atomic_directory discards the temp dir
            for original, now in reversed(moved):
                with contextlib.suppress(OSError):
                    os.replace(now, original)
            raise
    shutil.rmtree(staging, ignore_errors=True)
