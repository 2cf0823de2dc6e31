"""The bridge that puts every rewardsql component into verl's registries, in every process.

verl imports every entry point of the group ``verl.plugins`` whenever a process imports verl
(driver, TaskRunner actor, reward workers); the core declares one (``rewardsql._verl_plugin``)
that calls :func:`install_into_verl`. Advantage estimators go into ``core_algos`` under their name
and aliases; reward managers are wrapped into verl reward-loop managers and registered under
theirs. Idempotent, and it reports failures itself because verl swallows plugin errors.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rewardsql.components import Component, ComponentKind
from rewardsql.manager import get_plugin_manager
from rewardsql.rewards import RewardRequest, RewardResult

logger = logging.getLogger(__name__)

#: Where a verl config keeps the rewardsql reward manager's own settings.
MANAGER_SETTINGS_KEY = ("rewardsql", "reward_manager")


@dataclass
class InstallReport:
    """What one :func:`install_into_verl` call did."""

    registered: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (who, error)


_lock = threading.RLock()
_adapters: dict[type, type] = {}
_reported: set[tuple[str, str]] = set()


def install_into_verl() -> InstallReport:
    """Register every loaded rewardsql component into verl's registries (safe to call again)."""
    report = InstallReport()
    manager = get_plugin_manager()  # logs plugins that fail to load, once
    with _lock:
        estimators = manager.components(ComponentKind.ADVANTAGE_ESTIMATOR)
        if estimators:
            from verl.trainer.ppo import core_algos

            for component in estimators:
                for name in component.names:
                    _register(report, component, name, core_algos.register_adv_est, component.obj)
        reward_managers = manager.components(ComponentKind.REWARD_MANAGER)
        if reward_managers:
            from verl.experimental.reward_loop.reward_manager import registry

            for component in reward_managers:
                adapter = verl_reward_manager_class(component.obj)
                for name in component.names:
                    _register(report, component, name, registry.register, adapter)
    for who, error in report.failed:
        if (who, error) not in _reported:  # once per process, however often this runs
            _reported.add((who, error))
            logger.warning("rewardsql plugin %r is not available in verl: %s", who, error)
    return report


def _register(
    report: InstallReport, component: Component, name: str, register: Any, obj: Any
) -> None:
    manager = get_plugin_manager()
    try:
        if manager.get(component.kind, name) is not component:
            return  # the name is an alias owned by another component, or in conflict
        register(name)(obj)
    except Exception as exc:  # verl refuses a taken name; a conflict; a broken object
        report.failed.append((f"{component.plugin}:{name}", f"{type(exc).__name__}: {exc}"))
        return
    report.registered.append((component.kind.value, name))


# -- reward managers ---------------------------------------------------------------------------


def manager_settings(config: Any) -> dict[str, Any]:
    """The rewardsql manager's own settings from a verl config (``rewardsql.reward_manager``)."""
    node: Any = config
    for key in MANAGER_SETTINGS_KEY:
        node = node.get(key) if isinstance(node, Mapping) or hasattr(node, "get") else None
        if node is None:
            return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(node, DictConfig):
            return dict(OmegaConf.to_container(node, resolve=True))
    except ImportError:  # omegaconf comes with verl; without it the settings are a plain dict
        pass
    return dict(node)


def request_from_dataproto(data: Any, tokenizer: Any) -> RewardRequest:
    """Turn verl's one-sample ``DataProto`` (what ``run_single`` gets) into a RewardRequest."""
    item = data[len(data) - 1]  # multi-sequence samples are scored on their last sequence
    responses = item.batch["responses"]
    length = responses.shape[-1]
    mask = item.batch["attention_mask"]
    valid = int(mask[-length:].sum())
    response_ids = responses[:valid].tolist()
    prompt_ids = (
        item.batch["prompts"][mask[:-length].bool()].tolist() if "prompts" in item.batch else []
    )
    extras = item.non_tensor_batch
    reward_model = extras.get("reward_model") or {}
    return RewardRequest(
        response=tokenizer.decode(response_ids, skip_special_tokens=True),
        ground_truth=reward_model.get("ground_truth"),
        data_source=str(extras.get("data_source", "")),
        extra_info=dict(extras.get("extra_info") or {}),
        prompt=tokenizer.decode(prompt_ids, skip_special_tokens=True) if prompt_ids else "",
        response_token_ids=tuple(response_ids),
    )


def token_reward_tensor(scores: Sequence[Any], response_lengths: Sequence[int], width: int) -> Any:
    """The (B, width) float32 reward tensor: a float goes on the last valid token; a sequence of
    per-token rewards is laid over the valid tokens."""
    import torch

    out = torch.zeros(len(scores), width, dtype=torch.float32)
    for row, (score, length) in enumerate(zip(scores, response_lengths, strict=True)):
        length = int(length)
        if length <= 0:
            continue
        if isinstance(score, (list, tuple)):
            values = torch.as_tensor(score[:length], dtype=torch.float32)
            out[row, : values.numel()] = values
        else:
            out[row, length - 1] = float(score)
    return out


def verl_reward_manager_class(manager_cls: type) -> type:
    """A verl reward-loop manager class wrapping a :class:`rewardsql.RewardManager` subclass.

    verl calls ``run_single`` once per sample, concurrently, for a whole chunk of the batch; the
    wrapper gathers the requests of one event-loop tick and scores them with one ``score_batch``.
    """
    with _lock:
        if manager_cls in _adapters:
            return _adapters[manager_cls]
        from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

        class VerlRewardManager(RewardManagerBase):
            wrapped = manager_cls

            def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, **_: Any):
                super().__init__(config, tokenizer, compute_score)
                self.manager = manager_cls(
                    manager_settings(config), tokenizer=tokenizer, compute_score=compute_score
                )
                self._pending: list[tuple[RewardRequest, asyncio.Future]] = []

            async def run_single(self, data: Any) -> dict[str, Any]:
                request = request_from_dataproto(data, self.tokenizer)
                loop = asyncio.get_running_loop()
                future = loop.create_future()
                self._pending.append((request, future))
                if len(self._pending) == 1:  # runs after every sample queued in this tick
                    loop.call_soon(lambda: asyncio.ensure_future(self._flush()))
                result: RewardResult = await future
                score = result.score if result.token_rewards is None else list(result.token_rewards)
                return {"reward_score": score, "reward_extra_info": dict(result.extra)}

            async def _flush(self) -> None:
                batch, self._pending = self._pending, []
                requests = [request for request, _ in batch]
                try:
                    results = await asyncio.get_running_loop().run_in_executor(
                        None, self.manager.score_batch, requests
                    )
                    if len(results) != len(batch):
                        raise RuntimeError(
                            f"{manager_cls.__name__}.score_batch returned {len(results)} results "
                            f"for {len(batch)} requests"
                        )
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    return
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)

            @classmethod
            def assemble_rm_scores(cls, data: Any, scores: list[Any]) -> Any:
                prompt_length = data.batch["prompts"].size(1)
                lengths = data.batch["attention_mask"][:, prompt_length:].sum(dim=1).tolist()
                width = data.batch["responses"].size(1)
                return token_reward_tensor(scores, lengths, width).to(
                    data.batch["responses"].device
                )

        VerlRewardManager.__name__ = VerlRewardManager.__qualname__ = f"Verl{manager_cls.__name__}"
        VerlRewardManager.__module__ = __name__
        _adapters[manager_cls] = VerlRewardManager
        return VerlRewardManager
