"""The bridge that puts every rewardsql component into verl's registries, in every process.

verl imports every entry point of the group ``verl.plugins`` whenever a process imports verl
(driver, TaskRunner actor, reward workers); the core declares one (``rewardsql._verl_plugin``)
that calls :func:`install_into_verl`. Advantage estimators go into ``core_algos`` under their name
and aliases; reward managers are wrapped into verl reward-loop managers and registered under
theirs. Registration waits until verl imports each registry itself, so a process that only needs
``DataProto`` pays nothing for it. Idempotent, and it reports failures itself because verl
swallows plugin errors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

from rewardsql import reward_placeholder as placeholder
from rewardsql.components import Component, ComponentKind
from rewardsql.registry import LOCAL_PLUGIN, get_registry, on_change
from rewardsql.rewards import RewardRequest, RewardResult, validate_results
from rewardsql.section import PROCESS_WEIGHT_KEY, read_section

logger = logging.getLogger(__name__)

ESTIMATOR_REGISTRY_MODULE = "verl.trainer.ppo.core_algos"
#: ``module:function,...``: plain functions to register as verl estimators in every process.
CORE_FUNCTIONS_ENV = "REWARDSQL_CORE_FUNCTIONS"
MANAGER_REGISTRY_MODULE = "verl.experimental.reward_loop.reward_manager.registry"


@dataclass
class InstallReport:
    """What one :func:`install_into_verl` call did."""

    registered: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (who, error)
    waiting: list[str] = field(default_factory=list)  # verl modules not imported yet


_lock = threading.RLock()
_adapters: dict[type, type] = {}
_installed: dict[tuple[str, str], Any] = {}  # (registry module, name) -> what we put there
_reported: set[tuple[str, str]] = set()


def install_into_verl() -> InstallReport:
    """Register every loaded rewardsql component into verl's registries (safe to call again).

    A registry module verl has not imported yet is handled when it is imported.
    """
    report = InstallReport()
    on_change(install_into_verl)  # from now on, components registered later reach verl too
    with _lock:
        for module_name, install in _INSTALLERS.items():
            module = sys.modules.get(module_name)
            if module is not None:
                install(module, report)
            else:
                report.waiting.append(module_name)
                _RegistryImportHook.watch(module_name)
    for who, error in report.failed:
        if (who, error) not in _reported:  # once per process, however often this runs
            _reported.add((who, error))
            logger.warning("rewardsql plugin %r is not available in verl: %s", who, error)
    return report


def _install_estimators(core_algos: ModuleType, report: InstallReport) -> None:
    for component in get_registry().components(ComponentKind.ADVANTAGE_ESTIMATOR):
        _register_names(
            report,
            component,
            component.obj,
            core_algos.ADV_ESTIMATOR_REGISTRY,
            core_algos.register_adv_est,
            ESTIMATOR_REGISTRY_MODULE,
        )


    for spec in filter(None, os.environ.get(CORE_FUNCTIONS_ENV, "").split(",")):
        module, _, name = spec.partition(":")
        try:
            register_core_function(module, name)
        except Exception as exc:  # the module moved, the name is taken
            report.failed.append((f"--core-function {spec}", f"{type(exc).__name__}: {exc}"))
        else:
            report.registered.append((ComponentKind.ADVANTAGE_ESTIMATOR.value, name))


def register_core_function(module: str, name: str) -> Callable[..., Any]:
    """Register the plain function ``name`` of ``module`` (``--core_function`` with
    ``--core_algos``) as verl's advantage estimator ``name``, in this process.

    verl's processes do the same at ``import verl`` when :data:`CORE_FUNCTIONS_ENV` lists
    ``module:name`` (the launcher puts it in Ray's runtime environment).
    """
    from verl.trainer.ppo import core_algos

    fn = getattr(importlib.import_module(module), name)
    if not callable(fn):
        raise TypeError(f"{module}.{name} is a {type(fn).__name__}, not a function")
    core_algos.register_adv_est(name)(fn)  # refuses a name verl already has for another
    return fn  # type: ignore[no-any-return]


def _install_managers(registry: ModuleType, report: InstallReport) -> None:
    for component in get_registry().components(ComponentKind.REWARD_MANAGER):
        adapter = verl_reward_manager_class(
            component.obj, label=f"{component.name!r} of plugin {component.plugin!r}")
        _register_names(
            report,
            component,
            adapter,
            registry.REWARD_MANAGER,
            registry.register,
            MANAGER_REGISTRY_MODULE,
        )


_INSTALLERS: dict[str, Callable[[ModuleType, InstallReport], None]] = {
    ESTIMATOR_REGISTRY_MODULE: _install_estimators,
    MANAGER_REGISTRY_MODULE: _install_managers,
}


def _register_names(
    report: InstallReport,
    component: Component,
    obj: Any,
    table: dict[str, Any],
    register: Callable[[str], Callable[[Any], Any]],
    module_name: str,
) -> None:
    registry = get_registry()
    for name in component.names:
        try:
            if registry.get(component.kind, name) is not component:
                continue  # the alias belongs to another component
            key = (module_name, name)
            if component.plugin == LOCAL_PLUGIN and table.get(name) is _installed.get(key):
                table.pop(name, None)  # a re-run notebook cell replaces what we put there
            register(name)(obj)
            _installed[key] = obj
        except Exception as exc:  # verl refuses a taken name; a name in conflict
            report.failed.append((f"{component.plugin}:{name}", f"{type(exc).__name__}: {exc}"))
        else:
            report.registered.append((component.kind.value, name))


class _RegistryImportHook(importlib.abc.MetaPathFinder):
    """Runs the installer for a verl registry module right after verl imports it."""

    _watched: ClassVar[set[str]] = set()
    _instance: ClassVar[_RegistryImportHook | None] = None

    @classmethod
    def watch(cls, module_name: str) -> None:
        cls._watched.add(module_name)
        if cls._instance is None:
            cls._instance = cls()
            sys.meta_path.insert(0, cls._instance)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self._watched:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _InstallAfterExec(spec.loader, fullname)
        return spec


class _InstallAfterExec(importlib.abc.Loader):
    def __init__(self, loader: Any, module_name: str) -> None:
        self.loader, self.module_name = loader, module_name

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        _RegistryImportHook._watched.discard(self.module_name)
        try:
            install_into_verl()
        except Exception as exc:  # never break verl's own import
            logger.warning("rewardsql could not register into %s: %s", self.module_name, exc)


# -- reward managers ---------------------------------------------------------------------------


def user_reward_function(config: Any, compute_score: Any) -> Any:
    """The reward function the user chose, or None.

    verl hands every manager its default dispatcher when the user chose none; a rewardsql manager
    must see None then, not a function that fails on unknown data sources (nor the launcher's
    placeholder).
    """
    try:
        chosen = config["reward"]["custom_reward_function"]
        path, name = chosen["path"], chosen.get("name")
    except (KeyError, TypeError, AttributeError):
        path, name = None, None
    return compute_score if path and name != placeholder.NAME else None


def dense_rewards_on(config: Any) -> bool:
    """Whether verl takes per-token rewards from the managers under ``config``: only on its
    colocated reward-model path, where it calls ``assemble_rm_scores`` (spec/verl-cpu.md)."""
    try:
        model = config["reward"]["reward_model"]
        return bool(model["enable"]) and not bool(model["enable_resource_pool"])
    except (KeyError, TypeError):
        return False


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


def verl_reward_manager_class(manager_cls: type, label: str = "") -> type:
    """A verl reward-loop manager class wrapping a :class:`rewardsql.RewardManager` subclass.

    verl calls ``run_single`` once per sample: for a whole chunk at once (reward-model path) or
    as each rollout finishes (agent-loop path). The wrapper batches continuously: requests that
    arrive while a ``score_batch`` call runs form the next batch; one call runs at a time.
    verl 0.9.1 takes one score per sample except on its colocated reward-model path: dense
    ``token_rewards`` pass (as a list, laid out by ``assemble_rm_scores``) only from a manager
    that composes the weights, with a process weight, on that path; else they are refused with a
    clear error (the local engine supports them). Scores are multiplied by the config's outcome
    weight (not those of a manager that composes the weights itself); ``extra`` (e.g. ``acc``)
    is passed on as the manager gave it. An exception of the manager reaches every sample as a
    RuntimeError naming ``label`` (the component and its plugin).
    """
    with _lock:
        if manager_cls in _adapters:
            return _adapters[manager_cls]
        from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

        name = label or repr(manager_cls.__name__)

        class VerlRewardManager(RewardManagerBase):
            wrapped = manager_cls

            def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, *,
                         reward_router_address: str | None = None,
                         reward_model_tokenizer: Any = None, **_: Any):
                # verl hands managers its reward-model server's address; a rewardsql manager
                # that scores with a reward model (reward_model_setting) gets it as a URL
                super().__init__(config, tokenizer, compute_score)
                section = read_section(config)
                weights = section.reward_weights
                wrapped: Any = manager_cls
                served: dict[str, Any] = {}
                if getattr(manager_cls, "reward_model_setting", None) and reward_router_address:
                    served["reward_model_url"] = f"http://{reward_router_address}"
                self.manager = manager_cls(
                    wrapped.settings_for_weights(section.reward_manager, weights),
                    tokenizer=tokenizer,
                    compute_score=user_reward_function(config, compute_score),
                    **served,
                )
                composes = getattr(manager_cls, "composes_weights", False)
                # every score is multiplied by the outcome weight, as on the local engine,
                # unless the manager composes the weights itself
                self.outcome_weight = 1.0 if composes else weights.outcome
                self.dense = bool(composes and weights.process > 0 and dense_rewards_on(config))
                self._pending: list[tuple[RewardRequest, asyncio.Future]] = []
                self._drainer: asyncio.Task | None = None
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"rewardsql-{manager_cls.__name__}"
                )

            async def run_single(self, data: Any) -> dict[str, Any]:
                request = request_from_dataproto(data, self.tokenizer)
                future = asyncio.get_running_loop().create_future()
                self._pending.append((request, future))
                if self._drainer is None or self._drainer.done():
                    self._drainer = asyncio.get_running_loop().create_task(self._drain())
                result: RewardResult = await future
                score: Any = result.score * self.outcome_weight
                if self.dense and result.token_rewards is not None:
                    score = [float(v) for v in result.token_rewards]  # see assemble_rm_scores
                return {"reward_score": score, "reward_extra_info": dict(result.extra)}

            @classmethod
            def assemble_rm_scores(cls, data: Any, scores: list[Any]) -> Any:
                """verl's (B, T) ``rm_scores``: a list of token rewards over the valid response
                tokens, a number on the last valid one."""
                import torch

                prompt_length = data.batch["prompts"].size(1)
                lengths = data.batch["attention_mask"][:, prompt_length:].sum(dim=1).tolist()
                out = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
                for i, (score, length) in enumerate(zip(scores, lengths, strict=True)):
                    length = int(length)
                    if isinstance(score, (list, tuple)):
                        if len(score) != length:
                            raise ValueError(f"sample {i}: {len(score)} token rewards for "
                                             f"{length} valid response tokens")
                        out[i, :length] = torch.tensor(score, dtype=torch.float32)
                    elif length > 0:
                        out[i, length - 1] = float(score)
                return out

            async def _drain(self) -> None:
                await asyncio.sleep(0)  # let every sample of this tick queue up first
                loop = asyncio.get_running_loop()
                while self._pending:
                    batch, self._pending = self._pending, []
                    requests = [request for request, _ in batch]
                    try:
                        results = await loop.run_in_executor(self._executor, self._score, requests)
                    except Exception as exc:
                        for _, future in batch:
                            if not future.done():
                                future.set_exception(exc)
                        continue
                    for (_, future), result in zip(batch, results, strict=True):
                        if not future.done():
                            future.set_result(result)

            def _score(self, requests: list[RewardRequest]) -> list[RewardResult]:
                source = f"reward manager {name}"
                try:
                    answer = self.manager.score_batch(requests)
                except Exception as exc:  # a Ray worker's traceback would not say whose
                    raise RuntimeError(
                        f"{source} raised {type(exc).__name__}: {exc}") from exc
                results = validate_results(answer, requests, source=source)
                if not self.dense and any(r.token_rewards is not None for r in results):
                    raise ValueError(
                        f"{source} returned token_rewards, but verl 0.9.1's reward loop takes one "
                        "score per sample except on its colocated reward-model path (a manager "
                        f"that composes the weights, e.g. sql_prm, with {PROCESS_WEIGHT_KEY} > 0, "
                        "launched by `rewardsql train`); "
                        "configure it for sequence-level scores (for sql_verifier: placement "
                        "last_token) or use `--engine local`"
                    )
                return results

        VerlRewardManager.__name__ = VerlRewardManager.__qualname__ = f"Verl{manager_cls.__name__}"
        VerlRewardManager.__module__ = __name__
        _adapters[manager_cls] = VerlRewardManager
        return VerlRewardManager
