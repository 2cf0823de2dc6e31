"""Benchmark of the rewardsql-advantages estimators against verl's ``grpo_vectorized``.

Everything is measured side by side in one run on the same batch:

* time: median of repeated calls, the variants interleaved round by round so that load from
  other processes on a shared machine hits all of them alike; reported as a ratio to verl's
  ``grpo_vectorized`` (one read of the rewards, one write of the output: the practical floor);
* speed-up over the loop oracle (plugins/rewardsql-advantages/tests/_advantages_oracle.py, the
  same reference the parity tests use) on a small batch;
* peak extra memory: torch's CPU allocator has no statistics and tracemalloc does not see it, so
  each measurement runs in a fresh subprocess that builds the batch, warms the function up on a
  tiny batch, then reads the peak resident set size (``ru_maxrss``) before and after one call.
  The delta is the high-water mark of memory the call added, its output included.

Usage: ``python bench/advantages.py`` (full: 1024 x 4096 in groups of 8) or ``--quick``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# The loop oracle lives with the plugin's tests; one copy for tests and benchmark.
sys.path.insert(0, str(ROOT / "plugins" / "rewardsql-advantages" / "tests"))

import _advantages_oracle as oracle  # noqa: E402
from rewardsql_advantages import (  # noqa: E402
    compute_grpo_min_form_advantage,
    compute_grpo_process_advantage_avg_unique,
    compute_token_wise_advantage,
    compute_weighted_grpo_advantage,
)

STEPS = 8
MASK_DTYPES = {"int64": torch.int64, "float32": torch.float32, "bool": torch.bool}


@dataclass
class Batch:
    rewards: torch.Tensor
    mask: torch.Tensor
    uids: np.ndarray


def make_batch(
    batch: int,
    width: int,
    group: int,
    layout: str,
    *,
    seed: int = 0,
    mask_dtype: str = "int64",
    shuffled: bool = False,
) -> Batch:
    """Ragged responses in groups of ``group`` rows, each with ``STEPS`` steps.

    sparse: the step's PRM score on its last token; filled: on every token of the step (as the
    published reward manager writes it). Half the responses are correct and add the outcome
    reward +1 on their last token; step_end (sql_prm's step_end + all_tokens, what
    ``grpo_min_form`` reads): the scores as in sparse, the outcome +1 on every token of the
    response. Rows of a group are contiguous (verl repeats prompts with interleave=True) unless
    ``shuffled`` (what verl's batch balancing leaves behind).
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(STEPS, width // 8), width + 1, batch)
    # strictly increasing step ends, the last one on the response's last token
    cuts = np.sort(rng.random((batch, STEPS - 1)), axis=1) * (lengths[:, None] - STEPS)
    ends = np.concatenate(
        [cuts.astype(np.int64) + np.arange(STEPS - 1), lengths[:, None] - 1], axis=1
    )
    scores = rng.random((batch, STEPS)).astype(np.float32)
    positions = np.arange(width)[None, :]
    if layout == "filled":
        step_of_token = (positions[:, :, None] > ends[:, None, :]).sum(-1).clip(max=STEPS - 1)
        rewards = np.take_along_axis(scores, step_of_token, axis=1)
        rewards *= positions < lengths[:, None]
    elif layout in ("sparse", "step_end"):
        rewards = np.zeros((batch, width), dtype=np.float32)
        np.put_along_axis(rewards, ends, scores, axis=1)
    else:
        raise ValueError(f"layout must be sparse, filled or step_end, got {layout!r}")
    correct = rng.random(batch) < 0.5
    mask = positions < lengths[:, None]
    if layout == "step_end":
        rewards += correct[:, None] * mask
    else:
        rewards[np.arange(batch), lengths - 1] += correct
    prompts = [str(uuid.UUID(int=int(rng.integers(1 << 62)))) for _ in range(batch // group)]
    uids = np.array(prompts, dtype=object).repeat(group)
    if shuffled:
        order = rng.permutation(batch)
        rewards, mask, uids = rewards[order], mask[order], uids[order]
    return Batch(
        torch.from_numpy(np.ascontiguousarray(rewards, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(mask)).to(MASK_DTYPES[mask_dtype]),
        uids,
    )


def _verl_grpo_vectorized() -> Callable:
    from verl.trainer.ppo.core_algos import compute_grpo_vectorized_outcome_advantage

    return compute_grpo_vectorized_outcome_advantage


FLOOR = "grpo_vectorized (verl)"
OURS = {
    "weighted": compute_weighted_grpo_advantage,
    "process": compute_grpo_process_advantage_avg_unique,
    "token_wise": compute_token_wise_advantage,
    "min_form": compute_grpo_min_form_advantage,
}


def estimator(name: str) -> Callable:
    """One of ours, or verl's ``grpo_vectorized`` (importing verl only when asked for)."""
    return _verl_grpo_vectorized() if name == FLOOR else OURS[name]


def call(fn: Callable, b: Batch) -> torch.Tensor:
    return fn(token_level_rewards=b.rewards, response_mask=b.mask, index=b.uids, config=None)[0]


def median_times(
    cases: dict[str, tuple[Callable, Batch]], repeats: int
) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per case.

    Cases run round-robin, one call each per round, in a fresh random order every round: on a
    shared machine, other jobs' load and the allocator's state (glibc hands big freed blocks
    back to the OS, and faulting them in again costs as much as the arithmetic here) then
    fall on every case alike. CPU time (``time.process_time``) leaves out time spent preempted.
    """
    for fn, b in cases.values():
        call(fn, b)  # warm-up
    order = list(cases)
    rng = np.random.default_rng(0)
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            fn, b = cases[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            call(fn, b)
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in cases}


ORACLES = {
    "weighted": lambda b: oracle.weighted(b.rewards, b.mask, b.uids),
    "process": lambda b: oracle.process_avg_unique(b.rewards, b.uids),
    "token_wise": lambda b: oracle.token_wise(b.rewards, b.mask, b.uids),
    "min_form": lambda b: oracle.min_form(b.rewards, b.mask, b.uids),
}
#: The layout each variant's oracle comparison runs on (default filled).
ORACLE_LAYOUTS = {"min_form": "step_end"}


def peak_memory(name: str, args: argparse.Namespace, layout: str, shuffled: bool) -> float:
    """Peak extra resident memory of one call, in MiB, measured in a fresh subprocess."""
    spec = json.dumps(
        {
            "name": name,
            "batch": args.batch,
            "width": args.width,
            "group": args.group,
            "layout": layout,
            "mask_dtype": args.mask_dtype,
            "shuffled": shuffled,
        }
    )
    proc = subprocess.run(
        [sys.executable, __file__, "--threads", str(args.threads), "--memory-probe", spec],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe for {name} failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_probe(spec_json: str) -> None:
    """Child process: print the peak-RSS growth (MiB) caused by one call.

    After building the batch, free heap is handed back to the OS (``malloc_trim``) and the
    kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), so the call's allocations
    fault in fresh pages and the new peak minus the current RSS is what the call added.
    """
    spec = json.loads(spec_json)
    fn = estimator(spec["name"])
    small = make_batch(64, 128, spec["group"], spec["layout"], mask_dtype=spec["mask_dtype"])
    call(fn, small)  # load kernels, thread pools and lazy imports before the baseline
    b = make_batch(
        spec["batch"],
        spec["width"],
        spec["group"],
        spec["layout"],
        mask_dtype=spec["mask_dtype"],
        shuffled=spec["shuffled"],
    )
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (Linux >= 4.0)
    before = _status_kib("VmRSS")
    out = call(fn, b)
    peak = _status_kib("VmHWM")
    del out
    print((peak - before) / 1024)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# (variant, layout, target time relative to the floor; None = for information: min_form has
# no target of its own yet)
TIME_ROWS = [
    ("weighted", "filled", 1.5),
    ("process", "sparse", 3.0),
    ("process", "filled", 3.0),
    ("token_wise", "filled", 3.0),
    ("token_wise", "filled, shuffled rows", None),
    ("min_form", "step_end", None),
]
ORACLE_TARGETS = (("weighted", 100), ("process", 100), ("token_wise", 1000), ("min_form", None))
MEMORY_CASES = [  # (estimator, layout, shuffled rows)
    (FLOOR, "filled", False),
    ("weighted", "filled", False),
    ("process", "sparse", False),
    ("process", "filled", False),
    ("token_wise", "filled", False),
    ("token_wise", "filled", True),
    ("min_form", "step_end", False),
]
QUICK_MEMORY_CASES = [("token_wise", "filled", False), ("min_form", "step_end", False)]


def time_section(args: argparse.Namespace, results: list[tuple[str, bool]]) -> None:
    """Median time of each variant and of the floor on the same batches, side by side."""
    batches = {
        layout: make_batch(
            args.batch,
            args.width,
            args.group,
            layout.split(",")[0],
            mask_dtype=args.mask_dtype,
            shuffled="shuffled" in layout,
        )
        for layout in ("sparse", "filled", "filled, shuffled rows", "step_end")
    }
    cases = {f"{FLOOR}|{layout}": (estimator(FLOOR), b) for layout, b in batches.items()}
    cases.update({f"{v}|{layout}": (OURS[v], batches[layout]) for v, layout, _ in TIME_ROWS})
    times = median_times(cases, args.repeats)
    print(
        f"\n{'variant':<24}{'layout':<23}{'wall ms':>9}{'x floor':>9}{'cpu ms':>9}{'x floor':>9}"
        "  target (judged on wall time)"
    )
    for layout in batches:
        wall, cpu = times[f"{FLOOR}|{layout}"]
        ms = f"{wall * 1e3:>9.2f}{1:>9.2f}{cpu * 1e3:>9.2f}{1:>9.2f}"
        print(f"{FLOOR:<24}{layout:<23}{ms}  floor")
    for variant, layout, target in TIME_ROWS:
        wall, cpu = times[f"{variant}|{layout}"]
        floor_wall, floor_cpu = times[f"{FLOOR}|{layout}"]
        ratio, cpu_ratio = wall / floor_wall, cpu / floor_cpu
        mark = "(info)"
        if target is not None:
            ok = ratio <= target
            results.append((f"{variant} {layout} <= {target}x floor", ok))
            mark = f"<= {target}x {verdict(ok)}"
        print(
            f"{variant:<24}{layout:<23}{wall * 1e3:>9.2f}{ratio:>9.2f}{cpu * 1e3:>9.2f}"
            f"{cpu_ratio:>9.2f}  {mark}"
        )


def oracle_section(args: argparse.Namespace, results: list[tuple[str, bool]]) -> None:
    """Speed-up of each variant over the loop oracle (one oracle run; ours: a median)."""
    rows, width = args.oracle_shape
    small = {
        layout: make_batch(rows, width, args.group, layout, seed=1, mask_dtype=args.mask_dtype)
        for layout in {"filled", *ORACLE_LAYOUTS.values()}
    }
    print(f"\nspeed-up over the loop oracle on {rows} x {width} (filled unless named)")
    batch_of = {v: small[ORACLE_LAYOUTS.get(v, "filled")] for v in ORACLES}
    ours = {
        name: wall
        for name, (wall, _) in median_times(
            {v: (OURS[v], batch_of[v]) for v in ORACLES}, max(args.repeats, 11)
        ).items()
    }
    for variant, target in ORACLE_TARGETS:
        start = time.perf_counter()
        ORACLES[variant](batch_of[variant])
        slow = time.perf_counter() - start
        speedup = slow / ours[variant]
        mark = "(info)"
        if target is not None:
            ok = speedup >= target
            results.append((f"{variant} >= {target}x over oracle", ok))
            mark = f">= {target}x {verdict(ok)}"
        label = variant + (f" ({ORACLE_LAYOUTS[variant]})" if variant in ORACLE_LAYOUTS else "")
        print(
            f"{label:<20} oracle {slow * 1e3:9.1f} ms  ours {ours[variant] * 1e3:7.3f} ms  "
            f"{speedup:8.0f}x  {mark}"
        )


def memory_section(args: argparse.Namespace, results: list[tuple[str, bool]]) -> None:
    """Peak extra memory of one call per case, each in a fresh process."""
    reward_mib = args.batch * args.width * 4 / 2**20
    print(f"\npeak extra memory (fresh process each; reward tensor {reward_mib:.2f} MiB)")
    cases = MEMORY_CASES if not args.quick else QUICK_MEMORY_CASES
    for name, layout, shuffled in cases:
        mib = peak_memory(name, args, layout, shuffled)
        ratio = mib / reward_mib
        label = layout + (", shuffled rows" if shuffled else "")
        mark = "(info)"
        if name != FLOOR:
            ok = ratio <= 4.0
            results.append((f"{name} {label} memory <= 4x rewards", ok))
            mark = f"<= 4x {verdict(ok)}"
        print(f"{name:<26}{label:<24}{mib:>8.1f} MiB{ratio:>7.2f}x  {mark}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small batch, a few seconds")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--mask-dtype",
        choices=sorted(MASK_DTYPES),
        default="int64",
        help="default int64: verl's response_mask is a slice of the int64 attention_mask",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a small shared machine, OpenMP barriers of "
        "preempted threads swamp the kernels being compared)",
    )
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return 0
    if args.quick:
        args.batch, args.width, args.group, args.oracle_shape = 128, 512, 8, (16, 64)
        args.repeats = args.repeats or 5
    else:
        args.batch, args.width, args.group, args.oracle_shape = 1024, 4096, 8, (128, 512)
        args.repeats = args.repeats or 21
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    print(
        f"batch {args.batch} x {args.width}, groups of {args.group}, {STEPS} steps, "
        f"mask {args.mask_dtype}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"thread(s), median of {args.repeats}, glibc malloc settings {malloc or 'default'}"
    )
    results: list[tuple[str, bool]] = []
    time_section(args, results)
    oracle_section(args, results)
    memory_section(args, results)
    failed = [name for name, ok in results if not ok]
    print(
        f"\n{len(results) - len(failed)}/{len(results)} targets met"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    if args.quick:
        print("(--quick: a smoke run on a small batch; the targets are judged on the full run)")
        return 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
