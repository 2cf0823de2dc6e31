"""Process credit on the demo: PURE's min-form and the outcome-first fallback beside the published
sum-form pairing and outcome-only GRPO.

    python bench/process_credit.py --data-seed 0 --rollout-seed 0 1     # ~2 min per extra run
    python bench/process_credit.py --data-seed 0 1 2 3 --rollout-seed 0 1 --variant fallback
    python bench/process_credit.py --data-seed 0 1 2 3 --rollout-seed 0 1 --prm plain \
        --variant sum_form fallback

For each data seed, the demo's report (``rewardsql demo --seed S``, run when it is not in
``--output-dir`` yet; the same folders as ``bench/grpo_seeds.py``) gives the SFT model, the PRM
and, per rollout seed, GRPO with outcome rewards and GRPO with outcome + process rewards as the
demo pairs them (``grpo_process_avg_unique``, each step's score on every token of the step,
``fill``). This adds one GRPO run per ``--variant`` on the same SFT model, PRM, rollout seed and
process weight, each with the layout it reads (``process_placement: step_end``, the outcome on
every token):

- ``min_form``: ``grpo_min_form`` (PURE, arXiv 2504.15275: a token's return is the worst step
  score from its step on);
- ``fallback``: ``grpo_process_fallback`` (outcome GRPO where a group's outcomes differ, min-form
  credit only in groups whose outcomes tie, where outcome-only GRPO has no gradient).
- ``sum_form``: the demo's own pairing again, for ``--prm plain`` (the added runs' PRM: ``demo``,
  the demo's, or another of ``bench/grpo_seeds.py``'s PRM_VARIANTS, trained on first use).

One row per (data seed, rollout seed): dev accuracy of each run and each process run's
difference to the outcome run; then per process run the paired mean, its standard error and
issue 33's bars (mean >= +0.02, mean - SE > 0, at most one pair below -0.03). Run it alone: two
jobs on two cores spoil each other's time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rewardsql.io import atomic_write_json
from rewardsql.training.cpu_math import MODES, apply_cpu_math

#: Each variant's changes to the demo's process run (``sum_form``: none, for another PRM).
VARIANTS: dict[str, tuple[str, ...]] = {
    "sum_form": (),
    "min_form": ("algorithm.adv_estimator=grpo_min_form",
                 "rewardsql.reward_manager.process_placement=step_end"),
    "fallback": ("algorithm.adv_estimator=grpo_process_fallback",
                 "rewardsql.reward_manager.process_placement=step_end"),
}


def variant_run(out: Path, report: dict[str, Any], variant: str, rollout: int, prm: str
                ) -> dict[str, Any]:
    """One variant's GRPO run for one rollout seed with PRM ``prm`` (read back when it finished
    before)."""
    from grpo_seeds import prm_of
    from rewardsql.demo.pipeline import grpo_plan
    from rewardsql.demo.tiny import build_example
    from rewardsql.training.launcher import launch

    settings = report["settings"]
    run_dir = out / f"grpo_{variant}{'' if prm == 'demo' else f'_{prm}'}_rollout{rollout}"
    done = run_dir / f"{variant}.json"
    if done.is_file():
        print(f"  rollout seed {rollout}: reusing {done}", flush=True)
        return json.loads(done.read_text())
    example = build_example(out / "cache" / f"example-{settings['scale']}-seed{settings['seed']}",
                            seed=settings["seed"], scale=settings["scale"])
    plan = grpo_plan(example, Path(report["sft"]["model_dir"]), run_dir,
                     quick=settings["quick"], seed=rollout,
                     device=report["environment"]["device"],
                     prm=Path(prm_of(out, report, prm)), overrides=VARIANTS[variant])
    print(f"  rollout seed {rollout}: GRPO with {plan.estimator.name} ({run_dir})", flush=True)
    started = time.perf_counter()
    run = launch.run_local(plan)
    from rewardsql.training.local.metrics import read_metrics

    steps = read_metrics(run.output_dir)
    result = {"dev_accuracy": run.final_dev_accuracy,
              "seconds": round(time.perf_counter() - started, 1),
              "groups_with_variance": [r.get("reward/groups_with_variance") for r in steps]}
    atomic_write_json(done, result)
    return result


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from grpo_seeds import PRM_VARIANTS, paired_checks, report_of

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-seed", type=int, nargs="+", default=[0])
    parser.add_argument("--rollout-seed", type=int, nargs="+", default=None,
                        help="rollout seeds (default: the data seed's own)")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/bench-grpo-seeds"))
    parser.add_argument("--variant", nargs="+", choices=sorted(VARIANTS),
                        default=["fallback", "min_form"],
                        help="process runs to add beside the demo's two")
    parser.add_argument("--prm", choices=sorted(PRM_VARIANTS), default="demo",
                        help="the PRM of the added runs (bench/grpo_seeds.py's PRM_VARIANTS)")
    parser.add_argument("--cpu-math", choices=MODES, default="reproducible")
    args = parser.parse_args(argv)
    threads = apply_cpu_math(args.cpu_math) or None  # before torch is imported

    columns = {"sum-form": "grpo_process_avg_unique + fill (the demo's run)",
               **{v: (" ".join(VARIANTS[v]) or "the demo's pairing") + f", PRM {args.prm}"
                  for v in args.variant}}
    rows = []  # (data seed, rollout seed, outcome, {column: accuracy})
    for seed in args.data_seed:
        out = args.output_dir / f"data-seed{seed}"
        for rollout in args.rollout_seed or [seed]:
            report = report_of(out, seed, rollout, False, threads, False,
                               any_prm=args.prm != "demo")
            runs = {"sum-form": report["grpo_process"]["dev_accuracy"]}
            for variant in args.variant:
                runs[variant] = variant_run(out, report, variant, rollout,
                                            args.prm)["dev_accuracy"]
            rows.append((seed, rollout, report["grpo"]["dev_accuracy"], runs))

    print("\ndev execution accuracy (greedy) after 40 GRPO steps, per (data seed, rollout seed); "
          "in brackets the difference to outcome-only GRPO")
    for name, what in columns.items():
        print(f"  {name}: {what}")
    print(f"{'data':>5} {'rollout':>7} {'outcome':>8} "
          + " ".join(f"{name:>16}" for name in columns))
    for seed, rollout, outcome, runs in rows:
        print(f"{seed:>5} {rollout:>7} {outcome:>8.3f} " + " ".join(
            f"{runs[name]:>8.3f} ({runs[name] - outcome:+.3f})" for name in columns))
    for name in columns:
        diffs = [runs[name] - outcome for _, _, outcome, runs in rows]
        mean, stderr, checks = paired_checks(diffs)
        print(f"{name} - outcome: mean {mean:+.3f}, standard error {stderr:.3f}, "
              f"{len(diffs)} pairs; " + "; ".join(
                  f"{'met' if ok else 'NOT met'}: {check}" for check, ok in checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
