"""``SFTConfig``: the settings of ``rewardsql sft``, read from JSON or YAML with clear errors."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardsql.config import (
    OverrideKind,
    check_known_keys,
    get_key,
    load_config,
    parse_override,
    set_key,
)
from rewardsql.errors import ConfigError

_REQUIRED = ("model_name_or_path", "train_file", "output_dir")
DATA_SUFFIXES = (".json", ".jsonl", ".parquet")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters (peft): rank, scaling numerator, dropout and the modules they wrap."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


#: Values of ``device`` (SFT's key and ``rewardsql demo --device``).
#: Settings a checkpoint may be resumed with other values of: where and how the run is carried
#: out and for how long, not what it learns from or how (``resume_from_checkpoint: auto``
#: refuses a checkpoint whose run differs in any other key).
RESUMABLE_WITH_OTHER = frozenset({
    "output_dir", "eval_file", "per_device_eval_batch_size", "max_steps", "num_train_epochs",
    "gradient_checkpointing", "deepspeed", "flash_attention", "device", "report_to",
    "logging_steps", "save_steps", "save_total_limit", "eval_steps", "resume_from_checkpoint"})
DEVICES = ("auto", "cpu", "cuda")
#: The error for any other value.
DEVICE_EXPECTED = 'expected "auto", "cpu" or "cuda"'


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning settings (the keys of ``sft_config.json``).

    Relative paths are taken relative to the current directory. ``flash_attention``: ``"auto"``
    uses FlashAttention-2 when ``flash_attn`` is installed and CUDA is available, else SDPA.
    ``resume_from_checkpoint``: ``"auto"`` resumes from the newest checkpoint in ``output_dir``
    when there is one, and refuses it when it was made with other settings than those of
    :data:`RESUMABLE_WITH_OTHER` (another model, data, seed...); a path resumes from that
    checkpoint, ``None`` starts afresh.
    ``max_steps`` > 0 overrides ``num_train_epochs``. ``deepspeed`` is a DeepSpeed config file or
    an inline mapping. ``device``: ``"auto"`` trains on the GPU when there is one, ``"cpu"`` on the
    CPU, ``"cuda"`` on the GPU or fails. ``group_by_length``: batches of examples of about the same
    length (transformers' length-grouped sampler), so a batch is padded less: faster where
    lengths vary a lot (a PRM reading steps with their execution results), the same examples per
    epoch in another order.
    """

    model_name_or_path: str
    train_file: str
    output_dir: str
    eval_file: str | None = None
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    num_train_epochs: float = 3.0
    max_steps: int = -1
    max_length: int = 2048
    warmup_ratio: float = 0.0
    lr_scheduler_type: str = "cosine"
    bf16: bool = False
    gradient_checkpointing: bool = False
    group_by_length: bool = False
    deepspeed: str | dict[str, Any] | None = None
    flash_attention: str | bool = "auto"
    device: str = "auto"
    lora: LoraSettings | None = None
    report_to: str | tuple[str, ...] = "none"
    seed: int = 42
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    eval_steps: int | None = None
    resume_from_checkpoint: str | None = "auto"

    @classmethod
    def from_file(cls, path: str | os.PathLike[str],
                  overrides: Mapping[str, Any] | Sequence[str] = ()) -> SFTConfig:
        """Read a JSON/YAML config; ``overrides`` win: a mapping of keys, or ``KEY=VALUE``
        strings in the grammar every command shares (:func:`rewardsql.config.parse_override`:
        ``lora.r=8`` changes r and keeps the rest of lora, ``~eval_file`` removes a key)."""
        data = load_config(path)
        if isinstance(overrides, Mapping):
            data.update(overrides)
            return cls.from_dict(data, source=path)
        for text in overrides:
            override = parse_override(text)
            if override.kind is OverrideKind.DELETE:
                parent, _, last = override.key.rpartition(".")
                node = get_key(data, parent, None) if parent else data
                if not isinstance(node, dict) or last not in node:
                    raise ConfigError("cannot delete a key that is not there", key=override.key,
                                      source=f"command-line override {text!r}")
                del node[last]
            else:
                set_key(data, override.key, override.value,
                        source=f"command-line override {text!r}")
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  source: str | os.PathLike[str] | None = None) -> SFTConfig:
        """Validate a mapping of settings: unknown keys, missing keys and wrong types fail."""
        known = [f.name for f in dataclasses.fields(cls)]
        check_known_keys(data, known, source=source)
        for key in _REQUIRED:
            if data.get(key) in (None, ""):
                raise ConfigError("required key is missing", source=source, key=key)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                values[f.name] = _check(f.name, data[f.name], source)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-able data (for printing and for the run's record)."""
        out = dataclasses.asdict(self)
        if self.lora is not None:
            out["lora"]["target_modules"] = list(self.lora.target_modules)
        if isinstance(self.report_to, tuple):
            out["report_to"] = list(self.report_to)
        return out

    def learning_settings(self) -> dict[str, Any]:
        """:meth:`to_dict` without :data:`RESUMABLE_WITH_OTHER`: what a checkpoint's weights
        depend on, recorded with the checkpoints (``checkpoint_settings.json``)."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUMABLE_WITH_OTHER}

    def replace(self, **changes: Any) -> SFTConfig:
        """A copy with ``changes`` applied and validated like a file's keys."""
        return SFTConfig.from_dict({**self.to_dict(), **changes})


_INT = {"per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
        "max_length", "logging_steps", "save_steps"}
_FLOAT = {"learning_rate", "weight_decay", "max_grad_norm", "num_train_epochs", "warmup_ratio"}
_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
               "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau",
               "cosine_with_min_lr", "warmup_stable_decay")


def _check(key: str, value: Any, source: Any) -> Any:
    def fail(message: str) -> ConfigError:
        return ConfigError(f"{message}, got {value!r}", source=source, key=key)

    is_int = isinstance(value, int) and not isinstance(value, bool)
    if key in _INT:
        if not is_int or value < 1:
            raise fail("expected a positive integer")
        return value
    if key == "seed":
        if not is_int or value < 0:
            raise fail("expected a non-negative integer")
        return value
    if key in _FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise fail("expected a non-negative number")
        if key == "warmup_ratio" and value >= 1:
            raise fail("expected a ratio below 1")
        if key in ("learning_rate", "num_train_epochs") and value == 0:
            raise fail("expected a positive number")
        return float(value)
    if key in ("model_name_or_path", "train_file", "output_dir"):
        if not isinstance(value, str) or not value:
            raise fail("expected a path")
        return value
    if key == "eval_file":
        if value is not None and (not isinstance(value, str) or not value):
            raise fail("expected a path or null")
        return value
    if key in ("bf16", "gradient_checkpointing", "group_by_length"):
        if not isinstance(value, bool):
            raise fail("expected true or false")
        return value
    if key == "max_steps":
        if not is_int or value == 0 or value < -1:
            raise fail("expected a positive integer, or -1 for epochs")
        return value
    if key in ("save_total_limit", "eval_steps"):
        if value is not None and (not is_int or value < 1):
            raise fail("expected a positive integer or null")
        return value
    if key == "lr_scheduler_type":
        if value not in _SCHEDULERS:
            raise fail(f"expected one of {', '.join(_SCHEDULERS)}")
        return value
    if key == "flash_attention":
        if value not in ("auto", True, False):
            raise fail('expected "auto", true or false')
        return value
    if key == "device":
        if value not in DEVICES:
            raise fail(DEVICE_EXPECTED)
        return value
    if key == "deepspeed":
        if value is not None and not isinstance(value, (str, dict)):
            raise fail("expected a DeepSpeed config path, an inline mapping or null")
        return value
    if key == "report_to":
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise fail('expected a string or a list of strings (e.g. "none", ["tensorboard"])')
    if key == "resume_from_checkpoint":
        if value is not None and (not isinstance(value, str) or not value):
            raise fail('expected "auto", a checkpoint path or null')
        return value
    if key == "lora":
        return _check_lora(value, source)
    raise AssertionError(f"unchecked key {key}")  # pragma: no cover - every field is listed


def _check_lora(value: Any, source: Any) -> LoraSettings | None:
    if value is None or value is False:
        return None
    if isinstance(value, LoraSettings):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a mapping {{r, alpha, dropout, target_modules}} or null, "
                          f"got {value!r}", source=source, key="lora")
    check_known_keys(value, [f.name for f in dataclasses.fields(LoraSettings)], source=source,
                     prefix="lora.")
    out: dict[str, Any] = {}
    for k, v in value.items():
        if k in ("r", "alpha"):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"expected a positive integer, got {v!r}", source=source,
                                  key=f"lora.{k}")
        elif k == "dropout":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ConfigError(f"expected a number in [0, 1), got {v!r}", source=source,
                                  key="lora.dropout")
            v = float(v)
        elif k == "target_modules":
            if isinstance(v, str):
                v = [v]
            if not isinstance(v, (list, tuple)) or not v or not all(isinstance(m, str) for m in v):
                raise ConfigError(f"expected a list of module names, got {v!r}", source=source,
                                  key="lora.target_modules")
            v = tuple(v)
        out[k] = v
    return LoraSettings(**out)


def check_paths(config: SFTConfig, source: Any = None) -> list[str]:
    """Fail when a data file or local path is missing; return notes for the dry-run summary."""
    notes = []
    for key in ("train_file", "eval_file"):
        value = getattr(config, key)
        if value is None:
            continue
        path = Path(value)
        if not path.is_file():
            raise ConfigError(f"no such file: {path}", source=source, key=key)
        if not value.endswith(DATA_SUFFIXES):
            raise ConfigError(f"expected a {', '.join(DATA_SUFFIXES)} file, got {path.name}",
                              source=source, key=key)
    model = Path(config.model_name_or_path)
    if model.exists():
        if not (model / "config.json").is_file():
            raise ConfigError(f"{model} has no config.json: not a Hugging Face model directory",
                              source=source, key="model_name_or_path")
    elif _looks_like_hub_id(config.model_name_or_path):
        notes.append(f"model {config.model_name_or_path!r} is not a local directory: it will be "
                     "loaded from the Hugging Face Hub (or its cache)")
    else:
        raise ConfigError(f"no such model directory: {model}", source=source,
                          key="model_name_or_path")
    if isinstance(config.deepspeed, str) and not Path(config.deepspeed).is_file():
        raise ConfigError(f"no such DeepSpeed config file: {config.deepspeed}", source=source,
                          key="deepspeed")
    resume = config.resume_from_checkpoint
    if resume not in (None, "auto") and not Path(resume).is_dir():
        raise ConfigError(f"no such checkpoint directory: {resume}", source=source,
                          key="resume_from_checkpoint")
    return notes


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return (len(parts) == 2 and all(parts) and not name.startswith((".", "~"))
            and not os.path.isabs(name))


__all__ = ["LoraSettings", "SFTConfig", "check_paths"]
