"""``rewardsql demo``: SFT, then GRPO with execution rewards, then a dev report, on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rewardsql.training.options import CpuMath, cpu_math_or_exit


def demo(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Where everything goes.",
                                             file_okay=False)],
    quick: Annotated[bool, typer.Option("--quick", help="CI-sized run (about 3 minutes).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the data, the model and training.")] = 0,
    rollout_seed: Annotated[int | None, typer.Option(
        help="Seed of both GRPO runs' sampling and prompt order (default: --seed). Another "
        "value reuses the SFT model, labels and PRM in OUTPUT_DIR and writes grpo_rolloutR/, "
        "grpo_process_rolloutR/ and report_rolloutR.json.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Cache of the example data and tiny model (default OUTPUT_DIR/cache).",
        file_okay=False)] = None,
    threads: Annotated[int, typer.Option(
        min=0, help="torch CPU threads of SFT, evaluation and GRPO (0: 2 with reproducible CPU "
        "math, the count its figures are for; else torch's default, every core).")
    ] = 0,
    device: Annotated[str, typer.Option(
        help="Where SFT, evaluation and GRPO run: auto (the GPU when there is one), cpu or cuda. "
        "The README's timings are for cpu.")] = "auto",
    cpu_math: CpuMath = "reproducible",
) -> None:
    """Build the bundled example and tiny model, fine-tune, train with GRPO, report dev accuracy.

    Writes OUTPUT_DIR/report.json (sft.dev_accuracy, grpo.dev_accuracy, timings, settings) and
    OUTPUT_DIR/report.png (reward and dev accuracy over GRPO steps).
    """
    threads = cpu_math_or_exit(cpu_math, threads)  # before anything imports torch
    from rewardsql.demo.pipeline import run_demo

    run_demo(output_dir, quick=quick, seed=seed, rollout_seed=rollout_seed, cache_dir=cache_dir,
             threads=threads or None, device=device, echo=typer.echo)
