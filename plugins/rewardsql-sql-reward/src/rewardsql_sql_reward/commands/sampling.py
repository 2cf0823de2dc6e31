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
                max_new_tokens: int, options: dict[str, Any]) -> Sampler:
    """The policy on the sampler ``--sampler`` picks, after one line that says which and why.
    Engine options are an error with ``--sampler transformers`` and set aside (with a note)
    where ``auto`` picks transformers: the same command then runs on a machine without a GPU."""
    from rewardsql_sql_reward.prm.policy import (
        VLLM_INSTALL,
        open_sampler,
        resolve_sampler,
        vllm_installed,
    )

    if not 0 < top_p <= 1:
        raise ConfigError(f"{top_p}: must be in (0, 1]", source="--top-p")
    kind, why = resolve_sampler(sampler)
    if kind == "vllm" and not vllm_installed():  # before a word on stdout: one line in all
        raise MissingDependencyError(f"vLLM is not installed here: {VLLM_INSTALL}",
                                     source="--sampler vllm")
    if kind == "transformers" and options and sampler != "auto":
        raise ConfigError(f"vLLM engine options ({', '.join(sorted(options))}) need "
                          "--sampler vllm", source="--sampler transformers")
    typer.echo(f"sampler: {kind} ({why})")
    if kind == "transformers" and options:
        typer.echo(f"  vLLM engine options not used: {', '.join(sorted(options))}")
        options = {}
    return open_sampler(kind, policy, device=device, temperature=temperature, top_p=top_p,
                        max_new_tokens=max_new_tokens, engine_options=options)


__all__ = ["DtypeOption", "GPUMemoryOption", "InFlightOption", "MaxModelLenOption",
           "SamplerOption", "TensorParallelOption", "TopPOption", "VLLMOption",
           "engine_options", "open_policy"]
