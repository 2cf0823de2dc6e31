"""``rewardsql rm label``: step labels for PRM training, by sampling and executing SQL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rewardsql.errors import ConfigError

from rewardsql_sql_reward.commands.sampling import (
    DtypeOption,
    GPUMemoryOption,
    InFlightOption,
    MaxModelLenOption,
    RayAddressOption,
    SamplerOption,
    TensorParallelOption,
    TopPOption,
    VLLMOption,
    WorkersOption,
    close_policy,
    engine_options,
    open_policy,
)
from rewardsql_sql_reward.prm.label import SEARCHES, LabelSettings


def label(
    policy: Annotated[Path, typer.Option("--policy", help="The policy: a Hugging Face model "
                                                          "directory.")],
    questions: Annotated[Path, typer.Option(
        "--questions", help="Spider/BIRD questions (.json) or verl RL rows (.parquet).")],
    db_root: Annotated[Path, typer.Option("--db-root",
                                          help="Databases as DIR/<db_id>/<db_id>.sqlite.")],
    output: Annotated[Path, typer.Option(
        "--output", help="JSON lines, appended; an existing file is resumed.")],
    n: Annotated[int, typer.Option("--n", help="Responses sampled per question.")] = 4,
    m: Annotated[int, typer.Option("--m", help="Completions per labelled prefix.")] = 4,
    search: Annotated[str, typer.Option(
        "--search", help=f"{' or '.join(SEARCHES)}: OmegaPRM's binary search for the first "
                         "error (reusing rollouts), or Math-Shepherd's every prefix.")
    ] = "binary",
    temperature: Annotated[float, typer.Option("--temperature")] = 1.0,
    top_p: TopPOption = 1.0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 256,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    mode: Annotated[str, typer.Option("--mode", help="Result comparison: bird, multiset, "
                                                     "ordered.")] = "bird",
    execution_results: Annotated[bool, typer.Option(
        "--execution-results/--no-execution-results",
        help="Annotate each step with its execution result (spec/cocte.md).")] = True,
    result_rows: Annotated[int, typer.Option("--result-rows")] = 50,
    result_chars: Annotated[int, typer.Option("--result-chars")] = 500,
    sample_values: Annotated[int, typer.Option(
        "--sample-values", help="Sample values per column in prompts built from JSON "
                                "questions (as `data prepare`).")] = 3,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N questions.")
                     ] = None,
    sampler: SamplerOption = "auto",
    questions_in_flight: InFlightOption = 32,
    device: Annotated[str, typer.Option("--device", help="transformers: auto, cpu or cuda.")
                      ] = "auto",
    tensor_parallel_size: TensorParallelOption = None,
    gpu_memory_utilization: GPUMemoryOption = None,
    max_model_len: MaxModelLenOption = None,
    dtype: DtypeOption = None,
    vllm_option: VLLMOption = None,
    workers: WorkersOption = None,
    ray_address: RayAddressOption = None,
) -> None:
    """Label CoCTE steps "+"/"-" by execution: failing steps, verifier outcome, rollouts."""
    from dataclasses import replace

    from rewardsql_sql_reward.prm.label import run_label
    from rewardsql_sql_reward.prm.policy import load_questions

    if not db_root.is_dir():
        raise ConfigError("not a directory", source=db_root)
    if questions_in_flight < 1:
        raise ConfigError(f"{questions_in_flight}: must be positive",
                          source="--questions-in-flight")
    settings = LabelSettings(n=n, m=m, search=search, temperature=temperature,
                             max_new_tokens=max_new_tokens, seed=seed, mode=mode,
                             execution_results=execution_results, result_rows=result_rows,
                             result_chars=result_chars, top_p=top_p)
    settings.check()
    options = engine_options(tensor_parallel_size, gpu_memory_utilization, max_model_len, dtype,
                             vllm_option)
    items = load_questions(questions, db_root, sample_values=sample_values)[:limit]
    model = open_policy(sampler, policy, device=device, temperature=temperature, top_p=top_p,
                        max_new_tokens=max_new_tokens, options=options, workers=workers,
                        ray_address=ray_address)
    try:
        report = run_label(model, items, db_root, output, replace(settings, sampler=model.kind),
                           in_flight=questions_in_flight)
    finally:
        close_policy(model)
    for line in report.lines():
        typer.echo(line)
    typer.echo(f"wrote {output}")
