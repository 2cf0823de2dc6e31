"""How much does GRPO change dev accuracy on the tiny example, and how much of that is noise?

    python bench/grpo_seeds.py                  # full demo scale: ~7 min, then ~4 min a seed
    python bench/grpo_seeds.py --quick          # a smoke run in about a minute
    python bench/grpo_seeds.py --data-seed 1 --rollout-seeds 5

Runs ``rewardsql demo`` once (example data, tiny model and SFT for ``--data-seed``; GRPO with
rollout seed = data seed), then GRPO again from the same SFT model with other rollout seeds
(sampling and prompt order differ, nothing else). Prints dev accuracy after SFT, after each
GRPO run, the change of each, and the mean and standard deviation of the change: a claim that
GRPO raises dev accuracy needs a mean change well outside that spread, over several data seeds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from rewardsql.cpu_math import MODES, apply_cpu_math


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the demo's CI-sized run")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--rollout-seeds", type=int, default=3,
                        help="GRPO runs in all, the demo's own included")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/bench-grpo-seeds"))
    parser.add_argument("--cpu-math", choices=MODES, default="reproducible",
                        help="as `rewardsql demo --cpu-math`")
    args = parser.parse_args(argv)
    threads = apply_cpu_math(args.cpu_math) or None  # before torch is imported

    from rewardsql.demo import grpo_config, run_demo
    from rewardsql.engine.local import run_local
    from rewardsql.tiny import build_example

    out = args.output_dir / f"data-seed{args.data_seed}{'-quick' if args.quick else ''}"
    started = time.perf_counter()
    report = run_demo(out, quick=args.quick, seed=args.data_seed, threads=threads)
    before = report["sft"]["dev_accuracy"]
    after = {args.data_seed: report["grpo"]["dev_accuracy"]}
    scale = "quick" if args.quick else "full"
    # cached: the demo has just built it
    example = build_example(out / "cache" / f"example-{scale}-seed{args.data_seed}",
                            seed=args.data_seed, scale=scale)
    sft_model = Path(report["sft"]["model_dir"])
    others = [args.data_seed + 1000 + i for i in range(args.rollout_seeds - 1)]
    for rollout_seed in others:
        config = grpo_config(example, sft_model, quick=args.quick, seed=rollout_seed)
        run = run_local(config, out / f"grpo-rollout-seed{rollout_seed}")
        if run.final_dev_accuracy is None:
            raise RuntimeError("a GRPO run made no dev evaluation")
        after[rollout_seed] = run.final_dev_accuracy

    changes = [a - before for a in after.values()]
    print(f"\ndata seed {args.data_seed} ({scale}), {report['sft']['dev_count']} dev questions, "
          f"dev accuracy after SFT {before:.3f}")
    print(f"{'rollout seed':>12}  {'after GRPO':>10}  {'change':>7}")
    for seed, accuracy in after.items():
        print(f"{seed:>12}  {accuracy:>10.3f}  {accuracy - before:>+7.3f}")
    spread = statistics.stdev(changes) if len(changes) > 1 else float("nan")
    print(f"mean change {statistics.fmean(changes):+.3f}, standard deviation {spread:.3f}, "
          f"{sum(c > 0 for c in changes)}/{len(changes)} runs above SFT "
          f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
