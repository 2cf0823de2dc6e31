"""``run_prm``: train a process reward model with transformers' Trainer (``rewardsql rm train``).

The loss is the one that matches PRM scoring: cross-entropy over the two candidate logits ("+",
"-") at the step-tag positions only, against hard (0/1) or soft (p) targets. Everything else is
SFT's machinery (:mod:`rewardsql.training.sft.train`): attention kernel, bf16 fallback,
DeepSpeed check, LoRA, resume from checkpoints, progress bar and report_to through the Trainer,
and the atomic final save. After every epoch the held-out examples are scored with the scorer's
own batched code and step accuracy, first-error accuracy and AUC are logged. The output is a
Hugging Face model directory with ``prm_config.json`` naming the tag, the candidates and the
annotation settings, so every consumer scores the way the PRM was trained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardsql.errors import ConfigError
from rewardsql.training.cpu_math import describe_cpu_math
from rewardsql.training.pretrained import from_pretrained
from rewardsql.training.prm.config import PRMConfig
from rewardsql.training.prm.data import PRMCollator, PRMExamples, encode_records
from rewardsql.training.prm.encode import Encoded, TagTokens, tag_tokens
from rewardsql.training.prm.metrics import prm_metrics
from rewardsql.training.prm.scorer import PRM_CONFIG_FILE, candidate_logits, step_probabilities
from rewardsql.training.sft.data import read_rows
from rewardsql.training.sft.train import (
    _LossLog,
    _save_final,
    _training_arguments,
    earlier_result,
    find_checkpoint,
    finished_state,
    prepare_run,
    train_or_adopt,
)

RESULT_FILE = "prm_result.json"
CONFIG_FILE = "rm_config.json"
#: Bump when the meaning of prm_config.json changes.
PRM_FORMAT = 1


@dataclass(frozen=True)
class PRMResult:
    """What a run did: losses, steps, data counts and the held-out metrics of every epoch."""

    output_dir: Path
    first_loss: float | None
    final_loss: float | None
    steps: int
    start_step: int
    seconds: float
    n_examples: int
    n_steps: int
    positive_steps: int
    dropped: int
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None
    attn_implementation: str = "sdpa"
    bf16: bool = False
    cpu_math: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def prm_settings(config: PRMConfig, tokens: TagTokens) -> dict[str, Any]:
    """The ``prm_config.json`` a trained PRM carries: how to build its input and read its output."""
    return {"format": PRM_FORMAT, "step_tag": config.step_tag,
            "candidate_tokens": list(config.candidate_tokens), "tag_id": tokens.tag_id,
            "candidate_ids": [tokens.good_id, tokens.bad_id], "label_type": config.label_type,
            "max_length": config.max_length, **config.annotation()}


def tag_loss(model: Any, inputs: dict[str, Any], tokens: TagTokens) -> Any:
    """Mean cross-entropy over the two candidate logits at the tags, soft or hard targets."""
    import torch

    logits = candidate_logits(model, inputs["input_ids"], inputs["attention_mask"],
                              inputs["tag_rows"], inputs["tag_cols"],
                              (tokens.good_id, tokens.bad_id))
    logp = torch.log_softmax(logits.float(), dim=-1)
    targets = inputs["targets"].float()
    return -(targets * logp[:, 0] + (1 - targets) * logp[:, 1]).mean()


def evaluate_examples(model: Any, examples: PRMExamples, tokens: TagTokens, *,
                      batch_size: int, pad_id: int) -> dict[str, Any]:
    """Held-out metrics of ``model`` (step accuracy, first-error accuracy, AUC, loss)."""
    encoded = [Encoded(e["input_ids"], e["tag_positions"], 0) for e in examples.examples]
    was_training = model.training
    model.eval()
    try:
        predicted = step_probabilities(model, encoded, tokens, batch_size=batch_size,
                                       pad_id=pad_id)
    finally:
        model.train(was_training)
    return prm_metrics(predicted, [e["targets"] for e in examples.examples])


def _load_examples(path: str, key: str, config: PRMConfig, tokenizer: Any,
                   tokens: TagTokens) -> PRMExamples:
    examples = encode_records(read_rows(path, key=key), config, tokenizer, tokens.tag_id, path)
    if not examples.examples:
        raise ConfigError(f"{path}: no example fits max_length={config.max_length}", key=key)
    return examples


def run_prm(config: PRMConfig) -> PRMResult:
    """Train ``config.model_name_or_path`` as a PRM on ``config.train_file``; save to output_dir."""
    import torch
    import transformers
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    attn, bf16 = prepare_run(config)
    done = earlier_result(config, RESULT_FILE, CONFIG_FILE, PRMResult)
    if done is not None:
        return done
    started = time.monotonic()

    tokenizer = from_pretrained(AutoTokenizer, config.model_name_or_path, key="model_name_or_path")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        tokens = tag_tokens(tokenizer, config.step_tag, config.candidate_tokens)
    except ConfigError as exc:
        raise ConfigError(f"{exc} ({config.model_name_or_path}'s tokenizer)",
                          key=exc.key) from None
    train = _load_examples(config.train_file, "train_file", config, tokenizer, tokens)
    held_out = (_load_examples(config.eval_file, "eval_file", config, tokenizer, tokens)
                if config.eval_file else None)

    resume = find_checkpoint(config)
    finished = finished_state(resume, config)
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

    kwargs = _training_arguments(config, bf16, False, major=int(transformers.__version__[0]))
    evaluations: list[dict[str, Any]] = []

    class PRMTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = tag_loss(model, inputs, tokens)
            return (loss, None) if return_outputs else loss

    class HeldOut(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **_):
            if held_out is None or model is None:
                return
            metrics = evaluate_examples(model, held_out, tokens,
                                        batch_size=config.per_device_eval_batch_size,
                                        pad_id=tokenizer.pad_token_id)
            metrics = {"epoch": round(state.epoch or 0, 4), "step": state.global_step, **metrics}
            evaluations.append(metrics)
            trainer.log({f"eval_{k}": v for k, v in metrics.items()
                         if isinstance(v, (int, float)) and k not in ("epoch", "step")})

    losses = _LossLog()
    trainer = PRMTrainer(model=model, args=TrainingArguments(**kwargs),
                         train_dataset=train.examples,
                         data_collator=PRMCollator(tokenizer.pad_token_id),
                         processing_class=tokenizer, callbacks=[losses.callback, HeldOut()])
    start_step = train_or_adopt(trainer, resume, finished, losses)
    if held_out is not None and not evaluations:  # resumed after the last epoch ended
        evaluations.append(evaluate_examples(trainer.model, held_out, tokens,
                                             batch_size=config.per_device_eval_batch_size,
                                             pad_id=tokenizer.pad_token_id))

    result = PRMResult(
        output_dir=Path(config.output_dir), steps=trainer.state.global_step,
        first_loss=losses.losses[0][1] if losses.losses else None,
        final_loss=losses.losses[-1][1] if losses.losses else None,
        start_step=start_step, seconds=round(time.monotonic() - started, 2),
        n_examples=len(train.examples), n_steps=train.steps, positive_steps=train.positives,
        dropped=train.dropped, evaluations=evaluations, resumed_from=resume,
        attn_implementation=attn, bf16=bf16, cpu_math=describe_cpu_math())
    _save_final(trainer, tokenizer, config, result,  # type: ignore[arg-type]
                files={RESULT_FILE: result.to_dict(), CONFIG_FILE: config.to_dict(),
                       PRM_CONFIG_FILE: prm_settings(config, tokens)})
    return result


__all__ = ["PRMResult", "evaluate_examples", "prm_settings", "run_prm", "tag_loss"]
