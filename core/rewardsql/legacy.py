"""Reward managers of verl's legacy shape, adapted into the :class:`RewardManager` contract.

The original RewardSQL README (and verl before its reward loop) writes a manager as
``__init__(self, tokenizer, num_examine, config, compute_score=None)`` and
``__call__(self, data: DataProto)`` returning a (B, T) reward tensor, or a dict with
``reward_tensor`` and optionally ``reward_extra_info`` (one list per key). The registry wraps such
a class with :func:`legacy_manager_class`, so that every trainer (verl through the bridge, the
local engine, ``rewardsql plugins check``) sees one contract. verl is imported only when a batch
is scored (``DataProto``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rewardsql.rewards import RewardManager, RewardRequest, RewardResult
from rewardsql.signatures import bind_reward_function

#: The parameters of ``__init__`` that mark verl's legacy manager shape.
LEGACY_INIT_PARAMETERS = ("tokenizer", "num_examine")

_adapters: dict[type, type[RewardManager]] = {}


def is_legacy_manager(obj: Any) -> bool:
    """Whether ``obj`` is a class of verl's legacy manager shape (not a RewardManager)."""
    if not isinstance(obj, type) or issubclass(obj, RewardManager):
        return False
    if not any("__call__" in vars(k) for k in obj.__mro__ if k is not object):
        return False
    try:
        params = inspect.signature(obj.__init__).parameters
    except (TypeError, ValueError):
        return False
    return all(name in params for name in LEGACY_INIT_PARAMETERS)


def legacy_manager_class(cls: type) -> type[RewardManager]:
    """A :class:`RewardManager` subclass that builds ``cls`` and scores through its ``__call__``.

    ``config`` is the manager's settings (``rewardsql.reward_manager``) as an OmegaConf
    DictConfig, so ``config.key`` and ``config.get("key")`` both work; ``num_examine`` is 0;
    ``compute_score`` is the user's reward function bound by parameter name (or None). A row of
    the reward tensor that is zero but on its last valid token is a sequence score; any other row
    becomes dense ``token_rewards`` whose sum is the score.
    """
    if cls in _adapters:
        return _adapters[cls]

    class LegacyRewardManager(RewardManager):
        wrapped: type = cls
        #: checks give it a real tokenizer: a legacy manager decodes the tokens itself
        needs_tokenizer = True

        def __init__(self, config: Mapping[str, Any] | None = None, *, tokenizer: Any = None,
                     compute_score: Callable[..., Any] | None = None) -> None:
            super().__init__(config, tokenizer=tokenizer, compute_score=compute_score)
            from omegaconf import OmegaConf

            offered = {
                "tokenizer": tokenizer,
                "num_examine": 0,
                "config": OmegaConf.create(self.config),
                "compute_score": bind_reward_function(compute_score) if compute_score else None,
            }
            params = inspect.signature(cls).parameters
            self.legacy = cls(**{k: v for k, v in offered.items() if k in params})

        def score_batch(self, requests: Sequence[RewardRequest]) -> list[RewardResult]:
            data, lengths = _dataproto(requests, self.tokenizer)
            out = self.legacy(data)
            extra: Mapping[str, Any] = {}
            if isinstance(out, Mapping):
                if "reward_tensor" not in out:
                    raise TypeError(f"{cls.__name__}.__call__ returned a dict without "
                                    f"'reward_tensor': keys {sorted(out)}")
                extra = out.get("reward_extra_info") or {}
                out = out["reward_tensor"]
            return _results(cls.__name__, out, lengths, extra)

    LegacyRewardManager.__name__ = LegacyRewardManager.__qualname__ = cls.__name__
    LegacyRewardManager.__module__ = cls.__module__
    LegacyRewardManager.__doc__ = cls.__doc__
    _adapters[cls] = LegacyRewardManager
    return LegacyRewardManager


def _dataproto(requests: Sequence[RewardRequest], tokenizer: Any) -> tuple[Any, list[int]]:
    """verl's batch layout: left-padded prompts, right-padded responses, the masks, and the
    non-tensor columns a legacy manager reads (data_source, reward_model, extra_info)."""
    import numpy as np
    import torch
    from verl import DataProto

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False)) if tokenizer and text else []

    prompts = [encode(r.prompt) for r in requests]
    responses = [list(r.response_token_ids) or encode(r.response) for r in requests]
    pad = getattr(tokenizer, "pad_token_id", None) or 0
    width_p = max(1, *(len(p) for p in prompts))
    width_r = max(1, *(len(r) for r in responses))
    n = len(requests)
    prompt_ids = torch.full((n, width_p), pad, dtype=torch.long)
    response_ids = torch.full((n, width_r), pad, dtype=torch.long)
    mask = torch.zeros(n, width_p + width_r, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        if p:
            prompt_ids[i, width_p - len(p):] = torch.tensor(p)
            mask[i, width_p - len(p):width_p] = 1
        if r:
            response_ids[i, :len(r)] = torch.tensor(r)
            mask[i, width_p:width_p + len(r)] = 1
    data = DataProto.from_dict(
        tensors={"prompts": prompt_ids, "responses": response_ids,
                 "input_ids": torch.cat([prompt_ids, response_ids], 1), "attention_mask": mask,
                 "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)},
        non_tensors={
            "data_source": np.array([r.data_source for r in requests], dtype=object),
            "reward_model": np.array([{"ground_truth": r.ground_truth} for r in requests],
                                     dtype=object),
            "extra_info": np.array([dict(r.extra_info) for r in requests], dtype=object),
        },
    )
    return data, [len(r) for r in responses]


def _results(name: str, tensor: Any, lengths: list[int], extra: Mapping[str, Any]
             ) -> list[RewardResult]:
    shape = tuple(getattr(tensor, "shape", ()))
    if len(shape) != 2 or shape[0] != len(lengths):
        raise TypeError(f"{name}.__call__ must return a ({len(lengths)}, T) reward tensor, got "
                        f"{type(tensor).__name__} of shape {shape}")
    results = []
    for i, length in enumerate(lengths):
        row = [float(v) for v in tensor[i, :length].tolist()]
        dense = any(v != 0 for v in row[:-1])
        info = {k: _item(v, i) for k, v in extra.items()}
        results.append(RewardResult(sum(row), token_rewards=row if dense else None, extra=info))
    return results


def _item(values: Any, i: int) -> Any:
    value = values[i]
    return value.item() if hasattr(value, "item") else value
