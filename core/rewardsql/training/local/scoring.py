"""Scoring responses with the configured reward manager or reward function plugin.

A reward manager (default ``sql_verifier``) gets the whole batch in one ``score_batch`` call; a
reward function (verl's ``compute_score`` signature) is called once per response, as verl's naive
manager does. Scores become a (B, T) ``token_level_rewards`` tensor: the score on the last valid
response token, or a manager's ``token_rewards`` laid over the valid tokens.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from rewardsql.api import get_reward_function, get_reward_manager
from rewardsql.errors import ConfigError, UnknownComponentError
from rewardsql.rewards import RewardManager, RewardRequest, RewardResult, score_of
from rewardsql.section import MANAGER_SETTINGS_KEY, REWARD_FUNCTION_KEY
from rewardsql.signatures import bind_reward_function

#: verl's default manager name; with a custom reward function it means "call it per sample".
VERL_NAIVE = "naive"


def _call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    value = fn(**kwargs)
    if inspect.isawaitable(value):
        value = asyncio.run(_await(value))
    return value


async def _await(value: Any) -> Any:
    return await value


def load_reward_function(settings: Any) -> Callable[..., Any] | None:
    """The custom reward function: ``reward.custom_reward_function.path``/``name`` loaded with
    verl's loader, else the rewardsql reward function named by ``rewardsql.reward_function``
    (None when neither is set: verl ignores ``name`` without ``path``), bound by parameter name
    (:func:`rewardsql.signatures.bind_reward_function`) with ``reward_kwargs``."""
    if settings.reward_function_path:
        from verl.utils.import_utils import load_extern_object

        try:
            fn = load_extern_object(module_path=settings.reward_function_path,
                                    object_name=settings.reward_function_name or "compute_score")
        except (FileNotFoundError, AttributeError, RuntimeError, ImportError) as exc:
            raise ConfigError(str(exc), key="reward.custom_reward_function.path") from exc
    elif settings.registered_reward_function:
        try:
            fn = get_reward_function(settings.registered_reward_function)
        except UnknownComponentError as exc:
            raise exc.at(key=REWARD_FUNCTION_KEY) from None
    else:
        return None
    if not callable(fn):
        raise ConfigError(f"{fn!r} is not callable", key="reward.custom_reward_function.name")
    # any shape: parameters bound by name from the call, extra_info, then reward_kwargs
    return bind_reward_function(fn, dict(settings.reward_kwargs))


class RewardSource:
    """Scores batches of responses; ``close()`` releases the manager's workers."""

    def __init__(self, settings: Any, tokenizer: Any) -> None:
        self.function = load_reward_function(settings)
        self.manager: RewardManager | None = None
        name = settings.reward_manager
        if name == VERL_NAIVE:
            if self.function is None:
                raise ConfigError(
                    "verl's 'naive' manager needs reward.custom_reward_function; or name a "
                    "rewardsql reward manager (e.g. sql_verifier)",
                    key="reward.reward_manager.name")
            return
        try:
            cls = get_reward_manager(name)
        except UnknownComponentError as exc:
            raise exc.at(key="reward.reward_manager.name") from None
        try:
            self.manager = cls(settings.reward_manager_settings, tokenizer=tokenizer,
                               compute_score=self.function)
        except ConfigError as exc:
            raise ConfigError(f"reward manager {name!r}: {exc.message}",
                              key=f"{MANAGER_SETTINGS_KEY}.{exc.key}" if exc.key
                              else MANAGER_SETTINGS_KEY) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"reward manager {name!r}: {exc}",
                              key=MANAGER_SETTINGS_KEY) from exc

    def score(self, requests: Sequence[RewardRequest]) -> list[RewardResult]:
        """One result per request, in order."""
        if self.manager is not None:
            results = list(self.manager.score_batch(list(requests)))
            if len(results) != len(requests):
                raise RuntimeError(f"reward manager returned {len(results)} results for "
                                   f"{len(requests)} requests")
            return results
        assert self.function is not None
        results = []
        for req in requests:
            value = _call(self.function, data_source=req.data_source, solution_str=req.response,
                          ground_truth=req.ground_truth, extra_info=dict(req.extra_info))
            extra = {k: v for k, v in value.items() if k != "score"} if isinstance(
                value, dict) else {}
            results.append(RewardResult(score_of(value), extra=extra))
        return results

    def close(self) -> None:
        if self.manager is not None:
            self.manager.close()


def token_level_rewards(results: Sequence[RewardResult], response_mask: torch.Tensor
                        ) -> torch.Tensor:
    """(B, T) float32 rewards: ``token_rewards`` over the valid tokens, else the score on the
    last valid token."""
    rewards = torch.zeros(response_mask.shape, dtype=torch.float32)
    lengths = response_mask.sum(-1).tolist()
    for i, (result, length) in enumerate(zip(results, lengths, strict=True)):
        length = int(length)
        if result.token_rewards is not None:
            values = list(result.token_rewards)
            if len(values) != length:
                raise ValueError(f"response {i}: {len(values)} token rewards for {length} "
                                 "valid response tokens")
            rewards[i, :length] = torch.tensor(values, dtype=torch.float32)
        elif length > 0:
            rewards[i, length - 1] = float(result.score)
    return rewards.to(response_mask.device)
