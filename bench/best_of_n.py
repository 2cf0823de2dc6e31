"""PRM@8 against greedy on the demo, per data seed, PRM, sampling temperature and aggregation.

    python bench/best_of_n.py --data-seed 0 1 2 3 --temperature 0.5 0.7 1.0   # ~2 min per cell
    python bench/best_of_n.py --data-seed 0 1 2 3 --prm demo plain

For each data seed, the demo's report (``rewardsql demo --seed S``, run when it is not in
``--output-dir`` yet; the same folders as ``bench/grpo_seeds.py``) gives the SFT policy and the
PRM. Best-of-8 on dev is then run again (``rewardsql rerank``'s work, the demo's settings) at
each ``--temperature`` and with each ``--prm`` (``demo``: the demo's PRM; ``plain``: one trained
on the same labels without execution results in its input, into ``prm_plain/``), into
``best_of_n_<prm>_T<T>/`` (the demo's own PRM at 1.0 is read back from its report). One row per
(seed, PRM, temperature): greedy, majority vote, pass@8 and the PRM's pick under each
aggregation (``min``, ``product``, ``average``, ``last_step``, and ``vote``: the group of equal
results whose ``min`` scores sum highest); then, per (PRM, temperature, aggregation), the
smallest and the mean gain over greedy across the seeds, and whether it clears issue 33's bar
(+0.05 on every seed). Samples at temperature 1 are noisy (majority@8 below greedy): a lower
temperature trades pass@8 for candidates that agree more often. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from rewardsql.training.cpu_math import MODES, apply_cpu_math

#: The picks compared with greedy (summary.json's ``accuracy`` keys).
PICKS = ("prm_min", "prm_product", "prm_average", "prm_last_step", "prm_vote", "majority_vote")
DEMO_TEMPERATURE = 1.0


def accuracy_at(out: Path, report: dict[str, Any], temperature: float, prm: str
                ) -> dict[str, float]:
    """summary.json's accuracies of best-of-8 at ``temperature`` with PRM variant ``prm`` (read
    back when present)."""
    from grpo_seeds import prm_of
    from rewardsql.demo.pipeline import best_of_n
    from rewardsql.demo.tiny import build_example

    if temperature == DEMO_TEMPERATURE and prm == "demo":
        return report["best_of_n"]["accuracy"]
    run_dir = out / f"best_of_n_{prm}_T{temperature:g}"
    summary = run_dir / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text())["accuracy"]
    settings = report["settings"]
    example = build_example(out / "cache" / f"example-{settings['scale']}-seed{settings['seed']}",
                            seed=settings["seed"], scale=settings["scale"])
    print(f"  temperature {temperature:g}: best-of-8 into {run_dir}", flush=True)
    return best_of_n(example, Path(report["sft"]["model_dir"]), prm_of(out, report, prm),
                     run_dir, report["best_of_n"]["questions"], seed=settings["seed"],
                     device=report["environment"]["device"],
                     temperature=temperature)["accuracy"]


def any_report(out: Path, seed: int, threads: int | None, any_prm: bool) -> dict[str, Any]:
    """A full-scale report of data seed ``seed`` in ``out``, whatever its rollout seed (the
    stages before GRPO are the data seed's), with the demo's PRM settings unless ``any_prm``;
    the demo is run when there is none."""
    from grpo_seeds import report_of, reusable

    for path in sorted(out.glob("report*.json")):
        report = json.loads(path.read_text())
        if reusable(report, False, any_prm):
            return report
    return report_of(out, seed, seed, False, threads, False)


def seeds_and_prms(doc: str) -> argparse.ArgumentParser:
    """The options of a bench over data seeds and PRM variants, in grpo_seeds' folders."""
    from grpo_seeds import PRM_VARIANTS

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data-seed", type=int, nargs="+", default=[0])
    parser.add_argument("--prm", nargs="+", choices=sorted(PRM_VARIANTS), default=["demo"],
                        help="PRM variants (bench/grpo_seeds.py's PRM_VARIANTS)")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/bench-grpo-seeds"))
    parser.add_argument("--cpu-math", choices=MODES, default="reproducible")
    return parser


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from grpo_seeds import MIN_GAIN

    parser = seeds_and_prms(__doc__)
    parser.add_argument("--temperature", type=float, nargs="+", default=[DEMO_TEMPERATURE])
    args = parser.parse_args(argv)
    threads = apply_cpu_math(args.cpu_math) or None  # before torch is imported

    settings = [(prm, t) for prm in args.prm for t in args.temperature]
    cells: dict[tuple[int, str, float], dict[str, float]] = {}
    for seed in args.data_seed:
        out = args.output_dir / f"data-seed{seed}"
        report = any_report(out, seed, threads, any_prm="demo" not in args.prm)
        for prm, temperature in settings:
            cells[seed, prm, temperature] = accuracy_at(out, report, temperature, prm)

    print("\ndev execution accuracy of best-of-8 (300 questions): greedy, pass@8, and each "
          "pick; in brackets its gain over greedy")
    print(f"{'seed':>5} {'PRM':>6} {'T':>5} {'greedy':>7} {'pass@8':>7} "
          + " ".join(f"{p:>17}" for p in PICKS))
    for (seed, prm, temperature), acc in cells.items():
        print(f"{seed:>5} {prm:>6} {temperature:>5g} {acc['greedy']:>7.3f} {acc['pass@8']:>7.3f} "
              + " ".join(f"{acc[p]:>8.3f} ({acc[p] - acc['greedy']:+.3f})" for p in PICKS))
    print(f"\nper PRM, temperature and pick, over {len(args.data_seed)} data seeds: smallest and "
          f"mean gain over greedy; 'met' when every seed gains at least +{MIN_GAIN}")
    for prm, temperature in settings:
        for pick in PICKS:
            gains = [cells[s, prm, temperature][pick] - cells[s, prm, temperature]["greedy"]
                     for s in args.data_seed]
            print(f"  PRM {prm}, T {temperature:g}, {pick:>14}: min {min(gains):+.3f}, mean "
                  f"{statistics.fmean(gains):+.3f}  "
                  f"{'met' if min(gains) >= MIN_GAIN else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
