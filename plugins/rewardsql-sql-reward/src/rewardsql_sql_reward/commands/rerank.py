"""``rewardsql rerank``: best-of-N with a process reward model."""

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


def rerank(
    prm: Annotated[Path, typer.Option("--prm", help="The PRM (a `rewardsql rm train` output).")],
    questions: Annotated[Path, typer.Option(
        "--questions", help="Spider/BIRD questions (.json) or verl RL rows (.parquet).")],
    db_root: Annotated[Path, typer.Option("--db-root",
                                          help="Databases as DIR/<db_id>/<db_id>.sqlite.")],
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o",
                                             help="Where the reports and predictions go.")],
    policy: Annotated[Path | None, typer.Option(
        "--policy", help="Generate candidates with this model (Hugging Face directory).")
    ] = None,
    candidates: Annotated[Path | None, typer.Option(
        "--candidates", help='Or read them: JSON lines {"question_id", "candidates": [...], '
                             '"greedy"?, "prompt"?}.')] = None,
    n: Annotated[int, typer.Option("--n", help="Candidates per question (1: greedy).")] = 8,
    temperature: Annotated[float, typer.Option("--temperature")] = 1.0,
    top_p: TopPOption = 1.0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 256,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    drop_failing: Annotated[bool, typer.Option(
        "--drop-failing/--keep-failing",
        help="Drop candidates whose SQL fails to execute before picking.")] = True,
    mode: Annotated[str, typer.Option("--mode", help="Result comparison: bird, multiset, "
                                                     "ordered.")] = "bird",
    sample_values: Annotated[int, typer.Option(
        "--sample-values", help="Sample values per column in prompts built from JSON "
                                "questions.")] = 3,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N questions.")
                     ] = None,
    prm_url: Annotated[str | None, typer.Option(
        "--prm-url", help="Score on this vLLM server of the PRM (`rewardsql rm serve`); --prm "
                          "still gives its tokenizer, tag and candidates.")] = None,
    device: Annotated[str, typer.Option(
        "--device", help="auto, cpu or cuda: the PRM's in process, and the transformers "
                         "sampler's.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Candidates per PRM "
                                                                 "forward pass.")] = 16,
    sampler: SamplerOption = "auto",
    questions_in_flight: InFlightOption = 32,
    tensor_parallel_size: TensorParallelOption = None,
    gpu_memory_utilization: GPUMemoryOption = None,
    max_model_len: MaxModelLenOption = None,
    dtype: DtypeOption = None,
    vllm_option: VLLMOption = None,
    workers: WorkersOption = None,
    ray_address: RayAddressOption = None,
) -> None:
    """Best-of-N: score candidates' steps with the PRM and pick one SQL per question."""
    from rewardsql_sql_reward.prm.policy import load_questions
    from rewardsql_sql_reward.prm.rerank import (
        RerankSettings,
        read_candidates,
        run_rerank,
        summary_table,
    )

    if not db_root.is_dir():
        raise ConfigError("not a directory", source=db_root)
    if (policy is None) == (candidates is None):
        raise ConfigError("give either --policy (generate candidates) or --candidates")
    if n < 1 or batch_size < 1 or temperature <= 0 or questions_in_flight < 1:
        raise ConfigError("--n, --batch-size, --temperature and --questions-in-flight must be "
                          "positive")
    options = engine_options(tensor_parallel_size, gpu_memory_utilization, max_model_len, dtype,
                             vllm_option)
    items = load_questions(questions, db_root, sample_values=sample_values)[:limit]
    settings = RerankSettings(n=n, temperature=temperature, max_new_tokens=max_new_tokens,
                              seed=seed, drop_failing=drop_failing, mode=mode, top_p=top_p)
    model = (open_policy(sampler, policy, device=device, temperature=temperature, top_p=top_p,
                         max_new_tokens=max_new_tokens, options=options, workers=workers,
                         ray_address=ray_address)
             if policy is not None else None)
    try:
        summary = run_rerank(items, db_root, prm, output_dir, settings, policy=model,
                             candidates=read_candidates(candidates) if candidates else None,
                             device=device, batch_size=batch_size, prm_url=prm_url,
                             in_flight=questions_in_flight)
    finally:
        close_policy(model)
    for line in summary_table(summary):
        typer.echo(line)
    typer.echo(f"wrote {output_dir}/questions.jsonl, summary.json and pred_*.sql / "
               "predict_*.json (rewardsql sql score --pred ...)")
