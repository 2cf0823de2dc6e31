"""What reproducible CPU math (rewardsql.training.cpu_math) costs; whether it holds across threads.

    python bench/cpu_math.py              # 150 SFT steps per run, about 5 minutes on 2 cores
    python bench/cpu_math.py --steps 20   # a smoke run

Workload: the demo's SFT (`sft_config.json`, the `tiny` model, batch 8) on the bundled example,
for --steps steps, each run in its own process (the settings are read when torch starts):
native math with 2 threads; reproducible math (this CPU's class) with 2 threads, the demo's
setting, then 1 and 4; and, on an AVX-512 CPU, the AVX2 class, which would make one class of all
CPUs. Prints the training time of each (SFT's own clock: loading excluded), its ratio to native,
and a digest of the trained weights: the reproducible runs should share one digest whatever their
thread count; native runs with other thread counts or on other CPUs give other weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path


def worker(mode: str, threads: int, steps: int, work: Path) -> None:
    """One SFT run in this process; prints a JSON line with its time and weight digest."""
    from rewardsql.training.cpu_math import CLASS_ENV, use_reproducible_cpu_math

    if mode == "reproducible":
        use_reproducible_cpu_math()
    elif mode in CLASS_ENV:
        os.environ.update(CLASS_ENV[mode])
    import torch

    torch.set_num_threads(threads)
    from rewardsql.demo.pipeline import SFT_CONFIG
    from rewardsql.training.cpu_math import describe_cpu_math
    from rewardsql.training.sft import SFTConfig, run_sft
    from safetensors.torch import load_file

    out = work / f"sft-{mode}-{threads}"
    result = run_sft(SFTConfig.from_file(SFT_CONFIG, {
        "model_name_or_path": str(work / "model"), "train_file": str(work / "sft_train.jsonl"),
        "output_dir": str(out), "eval_file": None, "device": "cpu", "max_steps": steps,
        "save_steps": steps + 1, "logging_steps": steps, "resume_from_checkpoint": None}))
    weights = load_file(out / "model.safetensors")
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(weights[name].contiguous().numpy().tobytes())
    math = describe_cpu_math()
    print("RESULT " + json.dumps({"mode": mode, "threads": threads, "seconds": result.seconds,
                                  "sha": digest.hexdigest()[:16], "class": math["class"],
                                  "capability": math["aten_cpu_capability"]}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/bench-cpu-math"))
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = args.output_dir
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.steps, work)
        return 0

    from rewardsql.demo.tiny import build_example, build_tiny_model
    from rewardsql.training.cpu_math import VARIABLES, cpu_class, cpu_flags

    example = build_example(work / "example", seed=0, scale="full")
    model = build_tiny_model(work / "model-build", example.corpus(), seed=0, size="tiny")
    for link, target in ((work / "model", model), (work / "sft_train.jsonl", example.sft_train)):
        link.unlink(missing_ok=True)
        link.symlink_to(Path(target).resolve())

    runs = [("native", 2), ("reproducible", 2), ("reproducible", 1), ("reproducible", 4)]
    if cpu_class(cpu_flags()) == "avx512":
        runs.append(("avx2", 2))
    env = {name: value for name, value in os.environ.items() if name not in VARIABLES}
    results = []
    for mode, threads in runs:
        proc = subprocess.run([sys.executable, __file__, "--worker", mode, str(threads),
                               "--steps", str(args.steps), "--output-dir", str(work)],
                              capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        results.append(json.loads(line.removeprefix("RESULT ")))

    native = results[0]["seconds"]
    print(f"\nSFT, {args.steps} steps of the demo's settings (tiny model, batch 8)")
    print(f"{'math':>12}  {'class':>6}  {'threads':>7}  {'ATen':>6}  {'seconds':>7}  "
          f"{'/native':>7}  weights")
    for r in results:
        print(f"{r['mode']:>12}  {r['class'] or '-':>6}  {r['threads']:>7}  "
              f"{r['capability']:>6}  {r['seconds']:>7.1f}  {r['seconds'] / native:>7.2f}  "
              f"{r['sha']}")
    same = len({r["sha"] for r in results if r["mode"] == "reproducible"}) == 1
    print("reproducible weights identical with 1, 2 and 4 threads: " + ("yes" if same else "NO"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
