"""The sampling options ``rm label`` and ``rerank`` share: which sampler (``--sampler``), the
sampling settings both samplers read alike, and vLLM's engine options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rewardsql.errors import ConfigError, MissingDependencyError

from rewardsql_sql_reward.prm.policy import SAMPLERS, Sampler

SamplerOption = Annotated[str, typer.Option(
    "--sampler", help=f"{', '.join(SAMPLERS)}: what samples from --policy. auto: vLLM where it "
                      "is installed and a GPU is present, else transformers.")]
TopPOption = Annotated[float, typer.Option("--top-p", help="Nucleus sampling (1: off).")]
InFlightOption = Annotated[int, typer.Option(
    "--questions-in-flight", help="Questions whose generations go to the sampler in one call "
                                  "(vLLM batches them and shares cached prefixes).")]
TensorParallelOption = Annotated[int | None, typer.Option(
    "--tensor-parallel-size", help="vLLM: GPUs one engine spans.")]
GPUMemoryOption = Annotated[float | None, typer.Option(
    "--gpu-memory-utilization", help="vLLM: share of GPU memory its engine takes (0 to 1).")]
MaxModelLenOption = Annotated[int | None, typer.Option(
    "--max-model-len", help="vLLM: longest prompt plus answer, in tokens.")]
DtypeOption = Annotated[str | None, typer.Option(
    "--dtype", help="vLLM: auto, bfloat16, float16 or float32.")]
WorkersOption = Annotated[int | None, typer.Option(
    "--workers", help="Sample on N workers (Ray actors, one engine each), questions split "
                      "among them; default: in this process.")]
RayAddressOption = Annotated[str | None, typer.Option(
    "--ray-address", help="With --workers: the Ray cluster to run them on (auto, host:port); "
                          "default: a Ray instance of this run's own, on this machine.")]
VLLMOption = Annotated[list[str] | None, typer.Option(
    "--vllm-option", help="vLLM: any other engine option as KEY=VALUE (repeatable; VALUE as "
                          "JSON where it parses, e.g. enforce_eager=true).")]


def engine_options(tensor_parallel_size: int | None, gpu_memory_utilization: float | None,
                   max_model_len: int | None, dtype: str | None,
                   vllm_option: list[str] | None) -> dict[str, Any]:
    """vLLM's engine options from the explicit flags and ``--vllm-option KEY=VALUE``; a key
    given twice, or an item without ``=``, is a one-line error."""
    options: dict[str, Any] = {}
    for item in vllm_option or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"{item!r}: expected KEY=VALUE", source="--vllm-option")
        if key in options:
            raise ConfigError(f"{key} is given twice", source="--vllm-option")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw  # a plain string: --vllm-option quantization=fp8
    explicit = {"tensor_parallel_size": tensor_parallel_size,
                "gpu_memory_utilization": gpu_memory_utilization,
                "max_model_len": max_model_len, "dtype": dtype}
    for key, value in explicit.items():
        if value is None:
            continue
        if key in options:
            raise ConfigError(f"{key} is given twice (--{key.replace('_', '-')} too)",
                              source="--vllm-option")
        options[key] = value
    if tensor_parallel_size is not None and tensor_parallel_size < 1:
        raise ConfigError(f"{tensor_parallel_size}: must be positive",
                          source="--tensor-parallel-size")
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise ConfigError(f"{gpu_memory_utilization}: must be in (0, 1]",
                          source="--gpu-memory-utilization")
    return options


def open_policy(sampler: str, policy: Path, *, device: str, temperature: float, top_p: float,
                max_new_tokens: int, options: dict[str, Any], workers: int | None = None,
                ray_address: str | None = None) -> Sampler:
    """The policy on the sampler ``--sampler`` picks, after one line that says which and why;
    on ``workers`` Ray actors (:class:`~rewardsql_sql_reward.prm.workers.ShardedSampler`, a
    line per worker) when given. Engine options are an error with ``--sampler transformers``
    and set aside (with a note) where ``auto`` picks transformers: the same command then runs on
    a machine without a GPU. Close what it returns (:func:`close_policy`)."""
    from rewardsql_sql_reward.prm.policy import (
        VLLM_INSTALL,
        open_sampler,
        resolve_sampler,
        vllm_installed,
    )

    if not 0 < top_p <= 1:
        raise ConfigError(f"{top_p}: must be in (0, 1]", source="--top-p")
    if workers is not None and workers < 1:
        raise ConfigError(f"{workers}: must be positive", source="--workers")
    if ray_address is not None and workers is None:
        raise ConfigError("needs --workers (how many workers to start there)",
                          source="--ray-address")
    kind, why = resolve_sampler(sampler)
    if kind == "vllm" and not vllm_installed():  # before a word on stdout: one line in all
        raise MissingDependencyError(f"vLLM is not installed here: {VLLM_INSTALL}",
                                     source="--sampler vllm")
    if kind == "transformers" and options and sampler != "auto":
        raise ConfigError(f"vLLM engine options ({', '.join(sorted(options))}) need "
                          "--sampler vllm", source="--sampler transformers")
    if kind == "vllm" and workers is not None:  # here, not as workers that fail to start
        from rewardsql_sql_reward.prm.vllm_policy import check_engine_options

        check_engine_options(options)
    typer.echo(f"sampler: {kind} ({why})")
    if kind == "transformers" and options:
        typer.echo(f"  vLLM engine options not used: {', '.join(sorted(options))}")
        options = {}
    if workers is None:
        return open_sampler(kind, policy, device=device, temperature=temperature, top_p=top_p,
                            max_new_tokens=max_new_tokens, engine_options=options)
    from rewardsql_sql_reward.prm.workers import ShardedSampler

    sharded = ShardedSampler(workers, kind, policy, address=ray_address, settings={
        "device": device, "temperature": temperature, "top_p": top_p,
        "max_new_tokens": max_new_tokens, "engine_options": options})
    for line in sharded.describe():
        typer.echo(f"  {line}")
    return sharded


def close_policy(policy: Sampler | None) -> None:
    """Stop the workers of a policy on workers (a policy in this process stays loaded)."""
    close = getattr(policy, "close", None)
    if close is not None:
        close()


__all__ = ["DtypeOption", "GPUMemoryOption", "InFlightOption", "MaxModelLenOption",
           "RayAddressOption", "SamplerOption", "TensorParallelOption", "TopPOption",
           "VLLMOption", "WorkersOption", "close_policy", "engine_options", "open_policy"]
