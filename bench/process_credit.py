"""Process rewards with PURE's min-form credit against the published sum-form pairing, on the demo.

    python bench/process_credit.py --data-seed 0 --rollout-seed 0 1     # ~3 min per extra run

For each data seed, the demo's report (``rewardsql demo --seed S``, run when it is not in
``--output-dir`` yet; the same folders as ``bench/grpo_seeds.py``) gives the SFT model, the PRM
and, per rollout seed, GRPO with outcome rewards and GRPO with outcome + process rewards as the
demo pairs them (``grpo_process_avg_unique``, each step's score on every token of the step,
``fill``). This adds a third GRPO run on the same SFT model, PRM and rollout seed:
``grpo_min_form`` (PURE, arXiv 2504.15275: a token's return is the worst step score from its
step on) with the layout it reads (``process_placement: step_end``, the outcome on every token),
the same process weight. One row per (data seed, rollout seed): dev accuracy of the three runs
and each process run's difference to the outcome run, then their means. Run it alone: two jobs
on two cores spoil each other's time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rewardsql.io import atomic_write_json
from rewardsql.training.cpu_math import MODES, apply_cpu_math

#: The min-form run's changes to the demo's process run.
MIN_FORM = ("algorithm.adv_estimator=grpo_min_form",
            "rewardsql.reward_manager.process_placement=step_end")


def min_form_run(out: Path, report: dict[str, Any], rollout: int) -> dict[str, Any]:
    """The min-form GRPO run of one rollout seed (read back when its dev.jsonl is complete)."""
    from rewardsql.demo.pipeline import grpo_plan
    from rewardsql.demo.tiny import build_example
    from rewardsql.training.launcher import launch

    settings = report["settings"]
    run_dir = out / f"grpo_min_form_rollout{rollout}"
    done = run_dir / "min_form.json"
    if done.is_file():
        print(f"  rollout seed {rollout}: reusing {done}", flush=True)
        return json.loads(done.read_text())
    example = build_example(out / "cache" / f"example-{settings['scale']}-seed{settings['seed']}",
                            seed=settings["seed"], scale=settings["scale"])
    plan = grpo_plan(example, Path(report["sft"]["model_dir"]), run_dir,
                     quick=settings["quick"], seed=rollout,
                     device=report["environment"]["device"],
                     prm=Path(report["prm"]["model_dir"]), overrides=MIN_FORM)
    print(f"  rollout seed {rollout}: GRPO with {plan.estimator.name} ({run_dir})", flush=True)
    started = time.perf_counter()
    run = launch.run_local(plan)
    result = {"dev_accuracy": run.final_dev_accuracy,
              "seconds": round(time.perf_counter() - started, 1)}
    atomic_write_json(done, result)
    return result


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from grpo_seeds import report_of

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-seed", type=int, nargs="+", default=[0])
    parser.add_argument("--rollout-seed", type=int, nargs="+", default=None,
                        help="rollout seeds (default: the data seed's own)")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/bench-grpo-seeds"))
    parser.add_argument("--cpu-math", choices=MODES, default="reproducible")
    args = parser.parse_args(argv)
    threads = apply_cpu_math(args.cpu_math) or None  # before torch is imported

    rows = []
    for seed in args.data_seed:
        out = args.output_dir / f"data-seed{seed}"
        for rollout in args.rollout_seed or [seed]:
            report = report_of(out, seed, rollout, False, threads, False)
            outcome = report["grpo"]["dev_accuracy"]
            published = report["grpo_process"]["dev_accuracy"]
            min_form = min_form_run(out, report, rollout)["dev_accuracy"]
            rows.append((seed, rollout, outcome, published, min_form))

    print("\ndev execution accuracy (greedy) after 40 GRPO steps, per (data seed, rollout seed)")
    print(f"{'data':>5} {'rollout':>7} {'outcome':>8} {'sum-form (vs)':>16} "
          f"{'min-form (vs)':>16}")
    for seed, rollout, outcome, published, min_form in rows:
        print(f"{seed:>5} {rollout:>7} {outcome:>8.3f} "
              f"{published:>8.3f} ({published - outcome:+.3f}) "
              f"{min_form:>8.3f} ({min_form - outcome:+.3f})")
    for name, column in (("sum-form", 3), ("min-form", 4)):
        diffs = [r[column] - r[2] for r in rows]
        print(f"{name} - outcome: mean {statistics.fmean(diffs):+.3f} over {len(diffs)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
