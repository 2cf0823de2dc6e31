"""Does a PRM tell the teacher's near-miss step from the right form? Per data seed and PRM.

    python bench/near_miss_prm.py --data-seed 0 --prm demo epochs6   # ~2 min + each new PRM

For each data seed, the demo's report in ``--output-dir`` (``bench/grpo_seeds.py``'s folders; the
demo is run when it is not there) gives the SFT policy and the PRM's training labels. Each
``--prm`` variant (``grpo_seeds.PRM_VARIANTS``) is trained on those labels when it is not there
yet, best-of-8 on dev is run with it (``bench/best_of_n.py``'s folders, reused), and
``rewardsql.demo.near_miss`` reports, per planted template, the share of near-miss steps flagged
and of right steps passed: by the training labels, by the PRM on the teacher's demonstrations and
on the best-of-8 samples. One line per (seed, PRM, template), then PRM@8 (the demo's pick) over
greedy. A PRM that adds what the verifier lacks flags the near-miss and passes the right step,
both well above one half, where the labels do. Run it alone.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rewardsql.training.cpu_math import apply_cpu_math

SOURCES = (("labels", "labels", "right_step"), ("PRM teacher", "teacher", "clean"),
           ("PRM samples", "policy", "right_step"))


def near_misses(out: Path, report: dict[str, Any], prm: str) -> dict[str, Any]:
    """``near_miss_report`` for PRM variant ``prm`` of one data seed, with its best-of-8 samples
    and the demo's training labels."""
    from best_of_n import DEMO_TEMPERATURE
    from grpo_seeds import prm_of
    from rewardsql.demo.near_miss import near_miss_report
    from rewardsql.demo.tiny import build_example

    settings = report["settings"]
    example = build_example(out / "cache" / f"example-{settings['scale']}-seed{settings['seed']}",
                            seed=settings["seed"], scale=settings["scale"])
    samples = ("best_of_n" if prm == "demo" else f"best_of_n_{prm}_T{DEMO_TEMPERATURE:g}")
    return near_miss_report(example, Path(prm_of(out, report, prm)),
                            out / samples / "questions.jsonl",
                            device=report["environment"]["device"],
                            labels_jsonl=Path(report["prm"]["labels_train"]))


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from best_of_n import DEMO_TEMPERATURE, accuracy_at, any_report, seeds_and_prms
    from rewardsql.demo.pipeline import BEST_OF_N_PICK

    args = seeds_and_prms(__doc__).parse_args(argv)
    threads = apply_cpu_math(args.cpu_math) or None  # before torch is imported

    rows = []
    for seed in args.data_seed:
        out = args.output_dir / f"data-seed{seed}"
        report = any_report(out, seed, threads, any_prm=False)
        for prm in args.prm:
            accuracy = accuracy_at(out, report, DEMO_TEMPERATURE, prm)  # best-of-8 first
            rows.append((seed, prm, accuracy, near_misses(out, report, prm)))

    print("\nshare of near-miss steps flagged / of right steps passed (of n): by the PRM's "
          "training labels, by the PRM on the teacher's demonstrations, on best-of-8 samples")
    for seed, prm, accuracy, found in rows:
        for template, value in found.items():
            cells = []
            for name, key, right in SOURCES:
                part = value[key]
                wrong, good = part["near_miss"], part[right]
                cells.append(f"{name} {_share(wrong['flagged'])}/{_share(good['passed'])} "
                             f"({wrong['n']}/{good['n']})")
            print(f"  seed {seed} PRM {prm:>8} {template:>16}: " + ", ".join(cells))
        gain = accuracy[BEST_OF_N_PICK] - accuracy["greedy"]
        print(f"  seed {seed} PRM {prm:>8} PRM@8 ({BEST_OF_N_PICK}) {accuracy[BEST_OF_N_PICK]:.3f}"
              f" ({gain:+.3f} over greedy)")
    return 0


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
