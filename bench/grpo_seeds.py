"""How much does GRPO change dev accuracy on the tiny example, and how much of that is noise?

    python bench/grpo_seeds.py                          # data seed 0: ~8 min, then ~2.5 min a run
    python bench/grpo_seeds.py --quick                  # a smoke run in about a minute
    python bench/grpo_seeds.py --data-seed 0 1 2 3 --rollout-seeds 2
    python bench/grpo_seeds.py --data-seed 0 1 2 3 --set actor_rollout_ref.actor.optim.lr=5e-5

For each data seed: ``rewardsql demo`` (example data, tiny model and SFT for that seed; GRPO with
rollout seed = data seed), then GRPO again from the same SFT model with other rollout seeds
(sampling and prompt order differ, nothing else). With ``--set KEY=VALUE`` (grpo.yaml's keys,
repeatable) every run is made twice, with the demo's settings and with the variant, on the same
SFT models and rollout seeds, so the two columns differ by the variant alone. Prints dev accuracy
after SFT and after each GRPO run, and the mean change over all runs.

With reproducible CPU math (the default) a demo run and each GRPO run compute the same numbers
every time, so they are cached under ``--output-dir``: a second call reuses the SFT models and
every run it has already made, and a variant costs its GRPO runs alone (~2 minutes each on two
cores). Nothing is reused from runs with native CPU math.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rewardsql.io import atomic_write_json
from rewardsql.training.cpu_math import MODES, apply_cpu_math

#: Per data seed, the dev accuracy of each GRPO run made, by the digest of its config.
RUNS_FILE = "grpo_runs.json"


def digest(config: Any) -> str:
    from rewardsql.config import to_plain

    plain = to_plain(config)
    plain["trainer"].pop("default_local_dir", None)  # where a run goes is not what it computes
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


def sft_of(out: Path, seed: int, quick: bool, threads: int | None, reuse: bool) -> dict[str, Any]:
    """The demo's report for ``seed``: read back when its reproducible run is there, else run."""
    from rewardsql.demo.pipeline import run_demo
    from rewardsql.training.cpu_math import describe_cpu_math

    path = out / "report.json"
    if reuse and path.is_file():
        report = json.loads(path.read_text())
        if (report["environment"]["cpu_math"] == describe_cpu_math()
                and report["settings"]["quick"] == quick
                and Path(report["sft"]["model_dir"]).is_dir()):
            print(f"data seed {seed}: reusing the reproducible SFT model in {out}", flush=True)
            return report
    return run_demo(out, quick=quick, seed=seed, threads=threads)


def grpo_runs(out: Path, seed: int, report: dict[str, Any], rollout_seeds: list[int],
              variant: list[str], *, quick: bool, reuse: bool) -> list[float]:
    """Dev accuracy after GRPO from the seed's SFT model, one per rollout seed."""
    from rewardsql.demo.pipeline import grpo_plan
    from rewardsql.demo.tiny import build_example
    from rewardsql.training.launcher import launch

    scale = "quick" if quick else "full"
    example = build_example(out / "cache" / f"example-{scale}-seed{seed}", seed=seed, scale=scale)
    sft_model = Path(report["sft"]["model_dir"])
    cache_file = out / RUNS_FILE
    cache = json.loads(cache_file.read_text()) if reuse and cache_file.is_file() else {}
    accuracies = []
    for rollout_seed in rollout_seeds:
        def plan_in(directory: Path, rollout_seed: int = rollout_seed) -> Any:
            return grpo_plan(example, sft_model, directory, quick=quick, seed=rollout_seed,
                             overrides=variant)

        key = digest(plan_in(out / "grpo").config)
        if key not in cache:
            if not variant and rollout_seed == seed:  # the demo's own GRPO run
                cache[key] = report["grpo"]["dev_accuracy"]
            else:
                run = launch.run_local(plan_in(out / f"grpo-{key}"))
                if run.final_dev_accuracy is None:
                    raise RuntimeError("a GRPO run made no dev evaluation")
                cache[key] = run.final_dev_accuracy
            if reuse:
                atomic_write_json(cache_file, cache)
        accuracies.append(cache[key])
    return accuracies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo's CI-sized run")
    parser.add_argument("--data-seed", type=int, nargs="+", default=[0],
                        help="data seeds (one demo each)")
    parser.add_argument("--rollout-seeds", type=int, default=3,
                        help="GRPO runs per data seed, the demo's own included")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="a GRPO variant to compare with the demo's")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/bench-grpo-seeds"))
    parser.add_argument("--cpu-math", choices=MODES, default="reproducible",
                        help="as `rewardsql demo --cpu-math`")
    args = parser.parse_args(argv)
    variant = list(args.settings)
    threads = apply_cpu_math(args.cpu_math) or None  # before torch is imported
    reuse = args.cpu_math == "reproducible"

    started = time.perf_counter()
    columns: dict[str, dict[int, list[float]]] = (
        {"demo's GRPO": {}} if not variant else {"demo's GRPO": {}, "variant": {}})
    rows = []
    for seed in args.data_seed:
        out = args.output_dir / f"data-seed{seed}{'-quick' if args.quick else ''}"
        report = sft_of(out, seed, args.quick, threads, reuse)
        rollout_seeds = [seed] + [seed + 1000 + i for i in range(args.rollout_seeds - 1)]
        before = report["sft"]["dev_accuracy"]
        for name, runs in columns.items():
            runs[seed] = grpo_runs(out, seed, report, rollout_seeds,
                                   variant if name == "variant" else [],
                                   quick=args.quick, reuse=reuse)
        rows.append((seed, before, report["sft"]["dev_count"]))

    print(f"\n{'scale: quick' if args.quick else 'scale: full'}; rollout seeds: the data seed, "
          f"then data seed + 1000, + 1001, ...; variant: {' '.join(variant) or '-'}")
    print(f"{'data seed':>9}  {'dev':>4}  {'SFT':>5}  " + "  ".join(f"{n:<24}" for n in columns))
    for seed, before, count in rows:
        cells = ["  ".join(f"{a:.3f}" for a in runs[seed]) for runs in columns.values()]
        print(f"{seed:>9}  {count:>4}  {before:.3f}  " + "  ".join(f"{c:<24}" for c in cells))
    for name, runs in columns.items():
        changes = [a - before for (seed, before, _) in rows for a in runs[seed]]
        spread = statistics.stdev(changes) if len(changes) > 1 else float("nan")
        print(f"{name}: mean change {statistics.fmean(changes):+.4f}, standard deviation "
              f"{spread:.3f}, {sum(c > 0 for c in changes)}/{len(changes)} runs above SFT")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
