"""Step scores of candidates from a process reward model: :class:`StepScorer`, the one
interface; :class:`PRMScorer`, the PRM in this process (transformers, padded batches);
:func:`open_scorer`, in process or on a vLLM server (:mod:`.served`).

A step's score is the softmax over the two candidate logits ("+", "-") at its tag, probability of
"+" (spec/cocte.md). The model is loaded once; candidates are sorted by length and scored in
right-padded batches (a causal LM's logits at a real position do not depend on the padding after
it), on the CPU or a GPU. Only the hidden states at tag positions go through the LM head, so a
long batch never materialises vocabulary-sized logits for every token; the candidates of one
prompt share its KV cache, and identical candidates are scored once.
"""

from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewardsql.errors import ConfigError
from rewardsql.training.prm.encode import (
    DEFAULT_CANDIDATES,
    DEFAULT_TAG,
    Encoded,
    TagTokens,
    encode,
    split_tagged,
    tag_tokens,
)

#: The file beside a trained PRM that says how to score with it (written by ``rm train``).
PRM_CONFIG_FILE = "prm_config.json"
#: Ways to turn a candidate's step scores into one number for best-of-N.
AGGREGATIONS = ("min", "product", "last_step", "average")


def aggregate(scores: Sequence[float], how: str = "min") -> float:
    """One candidate score from its step scores; a candidate without steps scores 0."""
    if how not in AGGREGATIONS:
        raise ConfigError(f"unknown aggregation {how!r}; choose one of {', '.join(AGGREGATIONS)}",
                          key="aggregation")
    if not scores:
        return 0.0
    if how == "min":
        return float(min(scores))
    if how == "product":
        return float(math.prod(scores))
    if how == "last_step":
        return float(scores[-1])
    return float(sum(scores) / len(scores))


def read_prm_config(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``prm_config.json`` of a trained PRM, or {} for a directory without one."""
    path = Path(model_dir) / PRM_CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"unreadable PRM config: {exc}", source=path) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a JSON object", source=path)
    return data


def candidate_logits(model: Any, input_ids: Any, attention_mask: Any, rows: Any, cols: Any,
                     ids: Sequence[int]) -> Any:
    """Logits of the token ``ids`` at positions ``(rows[i], cols[i])`` of a padded batch.

    Runs the base model and applies the LM head to the selected hidden states only. Models the
    shortcut does not fit (a PEFT wrapper, logit soft-capping) take the full forward pass.
    """
    parts = _plain_parts(model)
    if parts is not None:
        base, head = parts
        hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return head(hidden[rows, cols])[:, list(ids)]
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return logits[rows, cols][:, list(ids)]


def _plain_parts(model: Any) -> tuple[Any, Any] | None:
    """The base model and LM head when the head can be applied to chosen positions alone."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if (base is None or base is model or head is None
            or getattr(model.config, "final_logit_softcapping", None)):
        return None
    return base, head


def step_probabilities(model: Any, encoded: Sequence[Encoded], tokens: TagTokens, *,
                       batch_size: int = 16, pad_id: int = 0,
                       share_prompts: bool = True) -> list[list[float]]:
    """P(good) at every tag of every encoded input, scored in length-sorted padded batches.

    Identical inputs are scored once. With ``share_prompts`` (and a model whose LM head can be
    applied to chosen positions), inputs with the same prompt (best-of-N candidates of one
    question) run the prompt once: its KV cache is repeated over the candidates and only their
    step tokens go through the model. On a long schema prompt that is most of the work.
    """
    import torch

    out: list[list[float]] = [[] for _ in encoded]
    unique: dict[tuple[int, ...], int] = {}
    first_of = [unique.setdefault(tuple(e.input_ids), i) for i, e in enumerate(encoded)]
    todo = [i for i in sorted(set(first_of)) if encoded[i].tag_positions]
    parts = _plain_parts(model) if share_prompts else None
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in todo:
        prompt = encoded[i].input_ids[:encoded[i].prompt_length]
        key = tuple(prompt) if parts is not None and len(prompt) > 1 else ()
        groups.setdefault(key, []).append(i)
    with torch.inference_mode():
        for prompt_ids, members in groups.items():
            if prompt_ids and len(members) > 1:
                _score_shared(model, parts, encoded, members, list(prompt_ids), tokens,
                              batch_size, pad_id, out)
            else:
                _score_plain(model, encoded, members, tokens, batch_size, pad_id, out)
    return [out[first] for first in first_of]


def _padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
    return ids, mask


def _spread(probs: list[float], chunk: Sequence[int], encoded: Sequence[Encoded],
            out: list[list[float]]) -> None:
    at = 0
    for i in chunk:
        n = len(encoded[i].tag_positions)
        out[i] = probs[at:at + n]
        at += n


def _score_plain(model: Any, encoded: Sequence[Encoded], members: Sequence[int],
                 tokens: TagTokens, batch_size: int, pad_id: int,
                 out: list[list[float]]) -> None:
    import torch

    device = next(model.parameters()).device
    order = sorted(members, key=lambda i: -len(encoded[i].input_ids))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids, mask = _padded([encoded[i].input_ids for i in chunk], pad_id)
        rows = [r for r, i in enumerate(chunk) for _ in encoded[i].tag_positions]
        cols = [c for i in chunk for c in encoded[i].tag_positions]
        logits = candidate_logits(model, ids.to(device), mask.to(device),
                                  torch.tensor(rows, device=device),
                                  torch.tensor(cols, device=device),
                                  (tokens.good_id, tokens.bad_id))
        _spread(torch.softmax(logits.float(), dim=-1)[:, 0].tolist(), chunk, encoded, out)


def _score_shared(model: Any, parts: Any, encoded: Sequence[Encoded], members: Sequence[int],
                  prompt: list[int], tokens: TagTokens, batch_size: int, pad_id: int,
                  out: list[list[float]]) -> None:
    import copy

    import torch

    base, head = parts
    device = next(model.parameters()).device
    length = len(prompt)
    cache = base(input_ids=torch.tensor([prompt], device=device), use_cache=True
                 ).past_key_values
    order = sorted(members, key=lambda i: -len(encoded[i].input_ids))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids, mask = _padded([encoded[i].input_ids[length:] for i in chunk], pad_id)
        width = ids.shape[1]
        rows_cache = copy.deepcopy(cache)
        rows_cache.batch_repeat_interleave(len(chunk))
        full_mask = torch.cat([torch.ones((len(chunk), length), dtype=torch.long), mask], 1)
        positions = torch.arange(length, length + width).expand(len(chunk), width)
        hidden = base(input_ids=ids.to(device), attention_mask=full_mask.to(device),
                      position_ids=positions.to(device), past_key_values=rows_cache,
                      use_cache=True).last_hidden_state
        rows = [r for r, i in enumerate(chunk) for _ in encoded[i].tag_positions]
        cols = [c - length for i in chunk for c in encoded[i].tag_positions]
        logits = head(hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]
                      )[:, [tokens.good_id, tokens.bad_id]]
        _spread(torch.softmax(logits.float(), dim=-1)[:, 0].tolist(), chunk, encoded, out)


#: PRM models this process has loaded in process (a reward manager reports it: on a server
#: path it stays 0).
MODELS_LOADED = 0


def models_loaded() -> int:
    """PRM models this process has loaded in process (:data:`MODELS_LOADED`)."""
    return MODELS_LOADED


def load_prm_tokenizer(prm_dir: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """The tokenizer and ``prm_config.json`` settings of the PRM in ``prm_dir`` (no weights)."""
    from transformers import AutoTokenizer

    path = Path(prm_dir).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} is not a Hugging Face model directory (no config.json)",
                          key="prm")
    return AutoTokenizer.from_pretrained(path), read_prm_config(path)


class StepScorer(ABC):
    """Step scores of candidates from a PRM, wherever it runs (in process, or on a server).

    Subclasses implement :meth:`score_encoded`; the ids are built here, by the one encoder, from
    the PRM's tokenizer and ``prm_config.json`` (tag, candidates, ``max_length``).
    """

    def __init__(self, tokenizer: Any, settings: dict[str, Any], *, tag: str | None = None,
                 candidates: Sequence[str] | None = None,
                 max_length: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.settings = settings
        self.tag = tag or settings.get("step_tag", DEFAULT_TAG)
        self.candidates = tuple(candidates or settings.get("candidate_tokens",
                                                           DEFAULT_CANDIDATES))
        self.tokens = tag_tokens(tokenizer, self.tag, self.candidates)
        self.max_length = max_length or settings.get("max_length")

    def encode(self, prompt: str, steps: Sequence[str]) -> Encoded:
        """The model input of one candidate (see :func:`rewardsql.training.prm.encode.encode`)."""
        return encode(self.tokenizer, prompt, steps, self.tokens.tag_id,
                      max_length=self.max_length)

    @abstractmethod
    def score_encoded(self, encoded: Sequence[Encoded]) -> list[list[float]]:
        """P("+") at every tag of every encoded input, in input order."""

    def score_many(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Step scores of many ``(prompt, steps)`` candidates."""
        return self.score_encoded([self.encode(prompt, steps) for prompt, steps in items])

    def score_steps(self, prompt: str, steps: Sequence[str]) -> list[float]:
        """P("+") at each step's tag: one score per step (fewer if ``max_length`` cut steps)."""
        return self.score_many([(prompt, steps)])[0]

    def score_text(self, prompt: str, text: str) -> list[float]:
        """Step scores of step-tagged text (split at the tag; no tag: one step)."""
        return self.score_steps(prompt, split_tagged(text, self.tag))


class PRMScorer(StepScorer):
    """Score candidates' steps with a PRM loaded in this process, in padded batches.

    Args:
        model: a model directory (Hugging Face format; its ``prm_config.json``, when present,
            gives the tag and candidates), or a loaded causal LM (then pass ``tokenizer``).
        tokenizer: the tokenizer of a loaded model; read from ``model`` when it is a directory.
        tag, candidates: override the step tag and the ("+", "-") candidates.
        device: "auto" (a GPU when there is one), "cpu", "cuda" or "cuda:N".
        batch_size: candidates per forward pass.
        max_length: longest input in tokens; trailing steps that do not fit are not scored.
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, tag: str | None = None,
                 candidates: Sequence[str] | None = None, device: str = "auto",
                 batch_size: int = 16, max_length: int | None = None) -> None:
        global MODELS_LOADED
        import torch

        settings: dict[str, Any] = {}
        if isinstance(model, (str, os.PathLike)):
            from transformers import AutoModelForCausalLM

            path = Path(model)
            loaded_tokenizer, settings = load_prm_tokenizer(path)
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype = "auto" if device.startswith("cuda") else torch.float32
            tokenizer = tokenizer or loaded_tokenizer
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
        elif tokenizer is None:
            raise ConfigError("a loaded PRM needs its tokenizer", key="tokenizer")
        elif device != "auto":
            model = model.to(device)
        model.eval()
        MODELS_LOADED += 1
        super().__init__(tokenizer, settings, tag=tag, candidates=candidates,
                         max_length=max_length)
        self.model = model
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def score_encoded(self, encoded: Sequence[Encoded]) -> list[list[float]]:
        """P("+") at every tag of every input, in padded batches (:func:`step_probabilities`)."""
        return step_probabilities(self.model, encoded, self.tokens, batch_size=self.batch_size,
                                  pad_id=self.pad_id)


#: How a PRM is scored: ``server`` (a vLLM server, over HTTP), ``in_process`` (transformers,
#: here), ``auto`` (a server when one is known, else in process).
SCORING = ("auto", "server", "in_process")


def open_scorer(prm: str | os.PathLike[str], *, url: str | None = None, scoring: str = "auto",
                device: str = "auto", batch_size: int = 16, max_length: int | None = None,
                timeout: float | None = None, retries: int | None = None) -> StepScorer:
    """The scorer for the PRM directory ``prm``: on the server at ``url`` or in this process,
    as ``scoring`` says (:data:`SCORING`). ``device`` and ``batch_size`` are the in-process
    scorer's; ``timeout`` and ``retries`` the server's (None: their defaults)."""
    if scoring not in SCORING:
        raise ConfigError(f"unknown PRM scoring {scoring!r}; choose one of {', '.join(SCORING)}",
                          key="prm_scoring")
    if scoring == "server" and not url:
        raise ConfigError("PRM scoring on a server needs its URL (a vLLM server of the PRM, "
                          "e.g. `rewardsql rm serve`)", key="prm_url")
    if url and scoring != "in_process":
        from rewardsql.training.prm import served

        return served.ServedPRMScorer(
            prm, url, max_length=max_length,
            timeout=served.DEFAULT_TIMEOUT if timeout is None else timeout,
            retries=served.DEFAULT_RETRIES if retries is None else retries)
    return PRMScorer(prm, device=device, batch_size=batch_size, max_length=max_length)


__all__ = ["AGGREGATIONS", "PRM_CONFIG_FILE", "SCORING", "PRMScorer", "StepScorer", "aggregate",
           "candidate_logits", "load_prm_tokenizer", "models_loaded", "open_scorer",
           "read_prm_config", "step_probabilities"]
