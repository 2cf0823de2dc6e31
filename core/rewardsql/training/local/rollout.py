"""Sampling responses with transformers ``generate`` and computing per-token log-probs.

Prompts are left-padded so that every response starts at the same column; a response runs up to
and including its first stop token (eos or ``<|im_end|>``), and the response mask marks exactly
those tokens, as verl's ``compute_response_mask`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Rollout:
    """A batch of prompts with their responses, all tensors on one device.

    ``input_ids``/``attention_mask``: (B, P + T); ``responses``/``response_mask``: (B, T).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    responses: torch.Tensor
    response_mask: torch.Tensor
    prompt_length: int

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor | Sequence[int]) -> Rollout:
        index = torch.as_tensor(index, dtype=torch.long, device=self.input_ids.device)
        return Rollout(self.input_ids[index], self.attention_mask[index],
                       self.position_ids[index], self.responses[index],
                       self.response_mask[index], self.prompt_length)


def concat_rollouts(parts: Sequence[Rollout], pad: int) -> Rollout:
    """One rollout from several (dynamic sampling keeps groups from several generation batches).

    Prompts are left-padded again to the longest prompt, so responses still share their columns;
    every part must have the same response width (``generate`` pads to ``max_new_tokens``).
    """
    if len(parts) == 1:
        return parts[0]
    width = max(p.prompt_length for p in parts)
    ids, masks = [], []
    for part in parts:
        extra = width - part.prompt_length
        ids.append(torch.nn.functional.pad(part.input_ids, (extra, 0), value=pad))
        masks.append(torch.nn.functional.pad(part.attention_mask, (extra, 0), value=0))
    attention_mask = torch.cat(masks)
    return Rollout(
        input_ids=torch.cat(ids),
        attention_mask=attention_mask,
        position_ids=positions(attention_mask),
        responses=torch.cat([p.responses for p in parts]),
        response_mask=torch.cat([p.response_mask for p in parts]),
        prompt_length=width,
    )


def stop_token_ids(tokenizer: Any) -> list[int]:
    """eos, plus ``<|im_end|>`` when the tokenizer has it (chat models end turns with it)."""
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id and im_end not in ids:
        ids.append(im_end)
    if not ids:
        raise ValueError("the tokenizer has neither an eos token nor <|im_end|>: generation "
                         "could never stop")
    return ids


def pad_id(tokenizer: Any) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return stop_token_ids(tokenizer)[0]


def left_pad(prompts: Sequence[Sequence[int]], pad: int, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding (what ``generate`` uses)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def response_mask_of(responses: torch.Tensor, stops: Sequence[int]) -> torch.Tensor:
    """1 up to and including the first stop token of each row, 0 after it."""
    is_stop = torch.zeros_like(responses, dtype=torch.bool)
    for token in stops:
        is_stop |= responses == token
    # number of stop tokens strictly before t; t is valid while none came before
    before = torch.cumsum(is_stop.long(), dim=-1) - is_stop.long()
    return (before == 0).long()


def shared_prompt_cache(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
                        ) -> Any | None:
    """The KV cache of each row's prompt but its last token, computed once per distinct prompt.

    GRPO samples n responses to each prompt: encoding the prompt once and indexing its cache out
    to the n rows saves (n - 1) / n of the prompt's forward pass, which on a CPU is most of the
    cost of short SQL after a long schema prompt. Gradients flow through the indexing. The caller
    then runs only the tokens the cache lacks. None when no prompt repeats or prompts are one
    token wide.
    """
    width = input_ids.shape[1]
    if width < 2:
        return None
    unique, row_of = torch.unique(torch.cat([input_ids, attention_mask], dim=1), dim=0,
                                  return_inverse=True)
    if len(unique) == len(input_ids):
        return None
    ids, mask = unique[:, :width - 1], unique[:, width:2 * width - 1]
    cache = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                  use_cache=True).past_key_values
    cache.batch_select_indices(row_of)
    return cache


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
             do_sample: bool, temperature: float, top_p: float, top_k: int,
             batch_size: int | None = None, share_prompts: bool = True) -> Rollout:
    """Sample (or greedily decode) one response per prompt, in chunks of ``batch_size``.

    ``share_prompts``: encode a prompt that occurs in several rows once (shared_prompt_cache).
    """
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    stops = stop_token_ids(tokenizer)
    pad = pad_id(tokenizer)
    chunk = batch_size or len(prompts)
    # A fresh generation config: a model's generation_config.json (top_k=50, repetition
    # penalties...) must not silently change what is sampled.
    config = GenerationConfig(
        do_sample=do_sample, max_new_tokens=max_new_tokens, eos_token_id=stops,
        pad_token_id=pad, use_cache=True,
        **({"temperature": temperature, "top_p": top_p, "top_k": max(top_k, 0)} if do_sample
           else {}),
    )
    input_ids, attention_mask = left_pad(prompts, pad, device)
    outputs = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), chunk):
            ids = input_ids[start:start + chunk]
            mask = attention_mask[start:start + chunk]
            cache = shared_prompt_cache(model, ids, mask) if share_prompts else None
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                 **({"past_key_values": cache} if cache is not None else {}))
            resp = out[:, ids.shape[1]:]
            if resp.shape[1] < max_new_tokens:  # every row stopped early
                fill = torch.full((resp.shape[0], max_new_tokens - resp.shape[1]), pad,
                                  dtype=resp.dtype, device=device)
                resp = torch.cat([resp, fill], dim=1)
            outputs.append(resp)
    finally:
        model.train(was_training)
    responses = torch.cat(outputs, dim=0)
    response_mask = response_mask_of(responses, stops)
    responses = torch.where(response_mask.bool(), responses, torch.full_like(responses, pad))
    full_mask = torch.cat([attention_mask, response_mask], dim=1)
    return Rollout(
        input_ids=torch.cat([input_ids, responses], dim=1),
        attention_mask=full_mask,
        position_ids=positions(full_mask),
        responses=responses,
        response_mask=response_mask,
        prompt_length=input_ids.shape[1],
    )


def response_logits(model: Any, rollout: Rollout, *, share_prompts: bool = True) -> torch.Tensor:
    """Logits (B, T, V) that predict each response token.

    With ``share_prompts``, rows with the same prompt (a GRPO group) share one forward pass over
    the prompt (shared_prompt_cache) and only their response tokens run per row. The logits are
    those of one pass over every full row, up to float summation order.
    """
    p, t = rollout.prompt_length, rollout.responses.shape[1]
    cache = (shared_prompt_cache(model, rollout.input_ids[:, :p], rollout.attention_mask[:, :p])
             if share_prompts else None)
    if cache is not None:
        # the last prompt token and the responses but their last: each predicts the next
        columns = slice(p - 1, p - 1 + t)
        return model(input_ids=rollout.input_ids[:, columns],
                     attention_mask=rollout.attention_mask[:, :p - 1 + t],
                     position_ids=rollout.position_ids[:, columns],
                     past_key_values=cache, use_cache=True).logits
    logits = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
                   position_ids=rollout.position_ids, use_cache=False).logits
    # logits at column c predict token c + 1; responses occupy columns P .. P + T - 1
    return logits[:, p - 1:p - 1 + t]


def forward_log_probs(model: Any, rollout: Rollout, *, temperature: float,
                      with_entropy: bool, share_prompts: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (B, T) of the response tokens under ``model`` (and entropy, from the logits).

    Logits are divided by the sampling temperature first, as verl's actor does, so that the
    ratio to the rollout policy is measured against the distribution that was sampled.
    """
    from verl.utils import torch_functional as verl_F

    logits = response_logits(model, rollout, share_prompts=share_prompts).float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    log_probs = verl_F.logprobs_from_logits(logits, rollout.responses)
    entropy = verl_F.entropy_from_logits(logits) if with_entropy else None
    return log_probs, entropy


@torch.no_grad()
def batched_log_probs(model: Any, rollout: Rollout, *, temperature: float,
                      batch_size: int | None) -> torch.Tensor:
    """Log-probs without gradients, in chunks (old policy and reference)."""
    was_training = model.training
    model.eval()
    try:
        chunk = batch_size or len(rollout)
        parts = [
            forward_log_probs(model, rollout.select(range(s, min(s + chunk, len(rollout)))),
                              temperature=temperature, with_entropy=False)[0]
            for s in range(0, len(rollout), chunk)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts, dim=0)
