"""The demo's three gains on each data seed, in one table: what GRPO and the PRM add to SFT.

    python bench/grpo_seeds.py --data-seed 0 1 2 3      # one full demo per seed (~10 min each)
    python bench/grpo_seeds.py --data-seed 0 1 2 3 --rollout-seed 0 1   # 8 pairs (~1.5 hours)
    python bench/grpo_seeds.py --quick                  # the CI-sized demo, one seed

For each data seed, ``rewardsql demo --seed S`` (its own example data, tiny model, SFT, labels,
PRM, best-of-8 and both GRPO runs), run one after another in this process, then one row per seed:
greedy dev accuracy after SFT; after GRPO with outcome rewards (gain over SFT); PRM@8 over 8
samples of the SFT policy, the demo's pick (``BEST_OF_N_PICK``: the PRM-weighted vote; gain over
greedy); majority vote and pass@8;
after GRPO with outcome and process rewards (difference to outcome alone); the demo's time. The
last lines check issue 33's targets: GRPO (outcome) and PRM@8 each at least +0.05 over SFT on
every data seed; over the (data seed, rollout seed) pairs, process minus outcome at least +0.02
on the mean with the mean minus its standard error above 0, and at most one pair below -0.03;
each full demo within 15 minutes.

``--rollout-seed R ...`` reruns both GRPO runs of each data seed with each rollout seed
(``rewardsql demo --rollout-seed``), reusing that seed's SFT model, labels and PRM: the
rollout-seed noise of the process-minus-outcome difference is as large as the effects measured.

A seed whose ``report.json`` is already in ``--output-dir`` with the same scale, CPU math and PRM
settings is read back, not run again (reproducible CPU math, the default, computes the same
numbers every time); ``--fresh`` runs it anyway. Run it alone: two jobs on two cores spoil each
other's time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rewardsql.training.cpu_math import MODES, apply_cpu_math

#: Issue 33's bars.
MIN_GAIN = 0.05
MIN_PAIRED_MEAN = 0.02
WORST_PAIR = -0.03
MAX_DEMO_S = 15 * 60


def reusable(report: dict[str, Any], quick: bool, any_prm: bool = False) -> bool:
    """Whether a demo report can stand for a run now: the same CPU math and scale, and the same
    PRM settings unless ``any_prm``."""
    from rewardsql.demo.pipeline import prm_train_settings
    from rewardsql.training.cpu_math import describe_cpu_math

    return (report["environment"]["cpu_math"] == describe_cpu_math()
            and report["settings"]["quick"] == quick
            and (any_prm or report["settings"]["prm_train"] == prm_train_settings(quick)))


def report_of(out: Path, seed: int, rollout: int, quick: bool, threads: int | None,
              fresh: bool, *, any_prm: bool = False) -> dict[str, Any]:
    """The demo's report for (``seed``, ``rollout``): read back when a matching run is there,
    else run it. ``any_prm``: a report made with other PRM settings matches too (for a bench
    that brings its own PRM and reads only the SFT model and the outcome run)."""
    from rewardsql.demo.pipeline import REPORT_JSON, rollout_suffix, run_demo

    suffix = rollout_suffix(seed, rollout)
    path = out / f"{Path(REPORT_JSON).stem}{suffix}.json"
    if not fresh and path.is_file():
        report = json.loads(path.read_text())
        if reusable(report, quick, any_prm):
            print(f"data seed {seed}, rollout seed {rollout}: reusing {path}", flush=True)
            return report
    print(f"data seed {seed}: rewardsql demo --seed {seed} --rollout-seed {rollout} "
          f"--output-dir {out}", flush=True)
    return run_demo(out, quick=quick, seed=seed, rollout_seed=rollout, threads=threads)


#: PRMs the benches can train beside the demo's, on the same labels from the same SFT model:
#: name -> changes to the demo's PRM_TRAIN. A step's execution results (up to 50 rows, 500
#: characters) take 100-300 of the tiny tokenizer's tokens, so at the demo's 512-token PRM input
#: about 3 in 10 labelled answers lose their later steps: ``long`` reads 1024 tokens (the tiny
#: model's positions), ``plain`` the SQL of each step without its execution results;
#: ``epochs6`` trains three times as long (does it then learn the near-miss steps the labels
#: mark, not only each template's prior? ``bench/near_miss_prm.py``).
PRM_VARIANTS: dict[str, dict[str, Any]] = {"demo": {}, "long": {"max_length": 1024},
                                           "plain": {"execution_results": False},
                                           "epochs6": {"num_train_epochs": 6}}


def prm_of(out: Path, report: dict[str, Any], variant: str) -> str:
    """The model directory of PRM ``variant`` for a demo's data seed (trained on first use into
    ``prm_<variant>/``, reused after)."""
    if variant == "demo":
        return report["prm"]["model_dir"]
    from rewardsql.demo.pipeline import train_prm
    from rewardsql.training.prm.trainer import RESULT_FILE

    model = out / f"prm_{variant}" / "model"
    if (model / RESULT_FILE).is_file():  # trained before (under the demo's PRM_TRAIN of then)
        return str(model)

    print(f"  PRM {variant} ({PRM_VARIANTS[variant]}) in {out / f'prm_{variant}'}", flush=True)
    return train_prm(Path(report["sft"]["model_dir"]), report["prm"], out / f"prm_{variant}",
                     device=report["environment"]["device"],
                     overrides=PRM_VARIANTS[variant])["model_dir"]


def gains(report: dict[str, Any]) -> dict[str, float]:
    """The row of one seed."""
    from rewardsql.demo.pipeline import BEST_OF_N_PICK

    best = report["best_of_n"]["accuracy"]
    return {
        "sft": report["sft"]["dev_accuracy"],
        "grpo": report["grpo"]["dev_accuracy"],
        "grpo_gain": report["grpo"]["dev_accuracy"] - report["sft"]["dev_accuracy"],
        "greedy": best["greedy"],
        "prm": best[BEST_OF_N_PICK],
        "prm_gain": best[BEST_OF_N_PICK] - best["greedy"],
        "majority": best["majority_vote"],
        "pass": best["pass@8"],
        "process": report["grpo_process"]["dev_accuracy"],
        "process_vs_outcome": (report["grpo_process"]["dev_accuracy"]
                               - report["grpo"]["dev_accuracy"]),
        "seconds": report["timings"]["total_s"],
    }


def paired_checks(diffs: list[float]) -> tuple[float, float, list[tuple[str, bool]]]:
    """Mean and standard error of paired differences (process run minus outcome run), and
    issue 33's two bars on them."""
    mean = statistics.fmean(diffs)
    stderr = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("inf")
    return mean, stderr, [
        (f"paired mean >= +{MIN_PAIRED_MEAN} and mean - standard error > 0",
         mean >= MIN_PAIRED_MEAN and mean - stderr > 0),
        (f"at most one pair below {WORST_PAIR}", sum(d < WORST_PAIR for d in diffs) <= 1),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo's CI-sized run")
    parser.add_argument("--data-seed", type=int, nargs="+", default=[0],
                        help="data seeds (one demo each)")
    parser.add_argument("--rollout-seed", type=int, nargs="+", default=None,
                        help="rollout seeds of the GRPO runs, each with every data seed "
                        "(default: the data seed's own)")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/bench-grpo-seeds"))
    parser.add_argument("--fresh", action="store_true", help="run every seed's demo again")
    parser.add_argument("--cpu-math", choices=MODES, default="reproducible",
                        help="as `rewardsql demo --cpu-math`")
    args = parser.parse_args(argv)
    threads = apply_cpu_math(args.cpu_math) or None  # before torch is imported
    fresh = args.fresh or args.cpu_math != "reproducible"

    started = time.perf_counter()
    rows: dict[int, dict[str, float]] = {}
    pairs: dict[tuple[int, int], float] = {}  # (data seed, rollout seed) -> process - outcome
    for seed in args.data_seed:
        out = args.output_dir / f"data-seed{seed}{'-quick' if args.quick else ''}"
        for i, rollout in enumerate(args.rollout_seed or [seed]):
            row = gains(report_of(out, seed, rollout, args.quick, threads, fresh))
            pairs[seed, rollout] = row["process_vs_outcome"]
            if i == 0:  # the stages before GRPO are the data seed's, whatever the rollout seed
                rows[seed] = row

    header = ("seed", "SFT", "GRPO (gain)", "PRM@8 (gain)", "greedy@8", "vote@8", "pass@8",
              "GRPO+PRM (vs GRPO)", "demo s")
    print(f"\nscale: {'quick' if args.quick else 'full'}; dev execution accuracy, greedy unless "
          "named; PRM@8 and vote@8 rerank 8 samples of the SFT policy")
    print("  ".join(f"{h:>18}" if i in (2, 3, 7) else f"{h:>8}" for i, h in enumerate(header)))
    for seed, r in rows.items():
        cells = [f"{seed:>8}", f"{r['sft']:>8.3f}",
                 f"{r['grpo']:.3f} ({r['grpo_gain']:+.3f})".rjust(18),
                 f"{r['prm']:.3f} ({r['prm_gain']:+.3f})".rjust(18),
                 f"{r['greedy']:>8.3f}", f"{r['majority']:>8.3f}", f"{r['pass']:>8.3f}",
                 f"{r['process']:.3f} ({r['process_vs_outcome']:+.3f})".rjust(18),
                 f"{r['seconds']:>8.0f}"]
        print("  ".join(cells))
    mean = {key: statistics.fmean(r[key] for r in rows.values()) for key in next(
        iter(rows.values()))}
    print(f"{'mean':>8}  {mean['sft']:>8.3f}  "
          f"{mean['grpo']:.3f} ({mean['grpo_gain']:+.3f})".ljust(10) + "  "
          f"PRM@8 {mean['prm']:.3f} ({mean['prm_gain']:+.3f}); "
          f"GRPO+PRM {mean['process']:.3f} ({mean['process_vs_outcome']:+.3f})")

    diffs = list(pairs.values())
    paired_mean, stderr, paired = paired_checks(diffs)
    print("\nGRPO (outcome + process) - GRPO (outcome), per (data seed, rollout seed): "
          + ", ".join(f"({s}, {r}) {d:+.3f}" for (s, r), d in pairs.items()))
    print(f"paired mean {paired_mean:+.3f}, standard error {stderr:.3f}, {len(diffs)} pairs")
    checks = [
        (f"GRPO (outcome) - SFT >= +{MIN_GAIN} on every seed",
         all(r["grpo_gain"] >= MIN_GAIN for r in rows.values())),
        (f"PRM@8 - greedy >= +{MIN_GAIN} on every seed",
         all(r["prm_gain"] >= MIN_GAIN for r in rows.values())),
        *[(f"process - outcome: {check}", ok) for check, ok in paired],
    ]
    if not args.quick:
        checks.append((f"each demo within {MAX_DEMO_S // 60} minutes",
                       all(r["seconds"] <= MAX_DEMO_S for r in rows.values())))
    for name, ok in checks:
        print(f"{'met' if ok else 'NOT met':>8}: {name}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
