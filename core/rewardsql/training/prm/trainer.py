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

import warnings
from dataclasses import dataclass, field
from typing import Any

from rewardsql.errors import ConfigError, RewardSQLWarning
from rewardsql.training.prm.config import PRMConfig
from rewardsql.training.prm.data import PRMCollator, PRMExamples, encode_records
from rewardsql.training.prm.encode import Encoded, TagTokens, tag_tokens
from rewardsql.training.prm.metrics import prm_metrics
from rewardsql.training.prm.scorer import PRM_CONFIG_FILE, candidate_logits, step_probabilities
from rewardsql.training.sft.data import read_rows
from rewardsql.training.sft.train import TrainingResult, run_training

RESULT_FILE = "prm_result.json"
CONFIG_FILE = "rm_config.json"
#: Bump when the meaning of prm_config.json changes.
PRM_FORMAT = 1


@dataclass(frozen=True, kw_only=True)
class PRMResult(TrainingResult):
    """What a PRM run did: :class:`TrainingResult`, the data counts and the held-out metrics of
    every epoch."""

    n_examples: int
    n_steps: int
    positive_steps: int
    dropped: int
    cut_steps: int = 0
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None
    attn_implementation: str = "sdpa"
    bf16: bool = False
    cpu_math: dict[str, Any] = field(default_factory=dict)


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
    if examples.cut_steps:  # silently short inputs made a PRM that never saw later steps
        total = examples.steps + examples.cut_steps
        warnings.warn(f"{path}: {examples.cut_steps} of {total} labelled steps lie past "
                      f"max_length={config.max_length} and are left out (the PRM will not score "
                      "such steps either): raise max_length, or shorten the execution results "
                      "(result_rows, result_chars)", RewardSQLWarning,
                      stacklevel=2)
    return examples


class _PRMRecipe:
    """:func:`~rewardsql.training.sft.train.run_training` for a PRM: the tag loss, and the
    held-out step metrics after every epoch (logged as ``eval_*``)."""

    result_file, config_file, result_type = RESULT_FILE, CONFIG_FILE, PRMResult
    has_eval = False  # held-out examples are scored by the callback, not the Trainer

    def __init__(self, config: PRMConfig) -> None:
        self.config = config
        self.tokens: Any = None
        self.train: Any = None
        self.held_out: PRMExamples | None = None
        self.evaluations: list[dict[str, Any]] = []
        self.pad_id = 0

    def load_data(self, tokenizer: Any) -> None:
        config = self.config
        try:
            self.tokens = tag_tokens(tokenizer, config.step_tag, config.candidate_tokens)
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({config.model_name_or_path}'s tokenizer)",
                              key=exc.key) from None
        self.pad_id = tokenizer.pad_token_id
        self.train = _load_examples(config.train_file, "train_file", config, tokenizer,
                                    self.tokens)
        if config.eval_file:
            self.held_out = _load_examples(config.eval_file, "eval_file", config, tokenizer,
                                           self.tokens)

    def _evaluate(self, model: Any) -> dict[str, Any]:
        assert self.held_out is not None
        return evaluate_examples(model, self.held_out, self.tokens,
                                 batch_size=self.config.per_device_eval_batch_size,
                                 pad_id=self.pad_id)

    def make_trainer(self, model: Any, args: Any, tokenizer: Any, callback: Any) -> Any:
        from transformers import Trainer, TrainerCallback

        recipe = self

        class PRMTrainer(Trainer):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                loss = tag_loss(model, inputs, recipe.tokens)
                return (loss, None) if return_outputs else loss

        class HeldOut(TrainerCallback):
            def on_epoch_end(self, args, state, control, model=None, **_):
                if recipe.held_out is None or model is None:
                    return
                metrics = recipe._evaluate(model)
                metrics = {"epoch": round(state.epoch or 0, 4), "step": state.global_step,
                           **metrics}
                recipe.evaluations.append(metrics)
                trainer.log({f"eval_{k}": v for k, v in metrics.items()
                             if isinstance(v, (int, float)) and k not in ("epoch", "step")})

        trainer = PRMTrainer(model=model, args=args, train_dataset=self.train.examples,
                             data_collator=PRMCollator(tokenizer.pad_token_id),
                             processing_class=tokenizer, callbacks=[callback, HeldOut()])
        return trainer

    def finish(self, trainer: Any, losses: Any) -> dict[str, Any]:
        if self.held_out is not None and not self.evaluations:  # resumed after the last epoch
            self.evaluations.append(self._evaluate(trainer.model))
        return {"n_examples": len(self.train.examples), "n_steps": self.train.steps,
                "positive_steps": self.train.positives, "dropped": self.train.dropped,
                "cut_steps": self.train.cut_steps,
                "evaluations": self.evaluations}

    def extra_files(self, result: PRMResult) -> dict[str, Any]:
        return {PRM_CONFIG_FILE: prm_settings(self.config, self.tokens)}


def run_prm(config: PRMConfig) -> PRMResult:
    """Train ``config.model_name_or_path`` as a PRM on ``config.train_file``; save to output_dir."""
    return run_training(config, _PRMRecipe(config))


__all__ = ["PRMResult", "evaluate_examples", "prm_settings", "run_prm", "tag_loss"]
