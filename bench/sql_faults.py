"""Benchmark of the SQL verifier under runaway SQL, with its training-time budget (issue 26).

    python bench/sql_faults.py              # the full run (one to two minutes on 2 cores)
    python bench/sql_faults.py --quick      # a smoke run in seconds

Measured in one run, 2 workers, per-query ``timeout=2.0`` (quick: smaller counts):
  (1) one ``verify_batch`` of 512 distinct runaway predictions (a recursive CTE without end,
      each with its own constant, so none is deduplicated) and 64 normal correct ones, shuffled,
      under the default budget. Targets: done within 2 x timeout + 10 s, every runaway a
      ``timeout``, every normal prediction ``ok``. For scale, a few distinct runaways without
      the budget (each holds a worker for the full timeout; 512 took 512 s before the budget);
  (2) a batch without runaways (typical text-to-SQL pairs, cold gold cache) with the budget
      on and off, alternately, in the same run: the ratio of their median times (target <= 1.1,
      no slower within noise) and equal verdicts;
  (3) 100,000 verifications under the budget (golds from a fixed set of questions, as in
      training; every prediction text distinct): resident memory of this process and of the
      workers after warm-up and at the end (target: growth within 50 MB each).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from rewardsql_sql_reward import SQLVerifier
from rewardsql_sql_reward.verifier.budget import Budget
from sql_verifier import _equivalent, make_shop_db, make_workload

TIMEOUT = 2.0
WORKERS = 2


def runaway(n: int) -> str:
    return (f"WITH RECURSIVE r(i) AS (SELECT {n} UNION ALL SELECT i + 1 FROM r) "
            "SELECT count(*) FROM r")


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def runaway_batch(paths: list[Path], runaways: int, normals: int, seed: int
                  ) -> tuple[float, int, int, int]:
    """(seconds, runaways that were timeouts, normals that were ok, workers killed)."""
    rng = random.Random(seed)
    golds = [gold for _, _, gold in make_workload(paths[:1], normals, seed)]
    items = [(paths[0], runaway(i), rng.choice(golds)) for i in range(runaways)]
    items += [(paths[0], _equivalent(gold, rng), gold) for gold in golds]
    rng.shuffle(items)
    with SQLVerifier(None, workers=WORKERS, timeout=TIMEOUT) as verifier:
        verifier.start()
        start = time.perf_counter()
        verdicts = verifier.verify_batch(items, budget=Budget())
        seconds = time.perf_counter() - start
        kills = verifier.pool.kills
    timeouts = sum(v.status == "timeout" for (_, p, _), v in zip(items, verdicts, strict=True)
                   if p.startswith("WITH RECURSIVE r(i) AS (SELECT"))
    ok = sum(v.status == "ok" and v.correct for (_, p, _), v in zip(items, verdicts, strict=True)
             if not p.startswith("WITH RECURSIVE r(i) AS (SELECT"))
    return seconds, timeouts, ok, kills


def unbudgeted_runaways(paths: list[Path], count: int) -> float:
    items = [(paths[0], runaway(10_000 + i), "SELECT 1") for i in range(count)]
    with SQLVerifier(None, workers=WORKERS, timeout=TIMEOUT) as verifier:
        verifier.start()
        start = time.perf_counter()
        verifier.verify_batch(items)
        return time.perf_counter() - start


def normal_batches(paths: list[Path], pairs: int, repeats: int, seed: int
                   ) -> tuple[float, float, bool]:
    """Median seconds with the budget on and off (alternating, fresh verifiers), and whether
    the verdicts agree."""
    work = make_workload(paths, pairs, seed)
    times: dict[bool, list[float]] = {True: [], False: []}
    verdicts: dict[bool, list] = {}
    for _ in range(repeats):
        for on in (True, False):
            with SQLVerifier(None, workers=WORKERS, timeout=TIMEOUT) as verifier:
                verifier.start()
                start = time.perf_counter()
                verdicts[on] = verifier.verify_batch(work, budget=Budget() if on else None)
                times[on].append(time.perf_counter() - start)
    same = [(v.correct, v.status) for v in verdicts[True]] == [
        (v.correct, v.status) for v in verdicts[False]]
    if not same:
        for on in (True, False):
            counts = Counter(v.status for v in verdicts[on])
            print(f"    statuses with the budget {'on' if on else 'off'}: {dict(counts)}")
    return statistics.median(times[True]), statistics.median(times[False]), same


def memory_run(paths: list[Path], total: int, batch: int, seed: int
               ) -> tuple[list[tuple[int, float, float]], float]:
    """RSS samples (verifications done, this process MB, workers MB) and the seconds taken."""
    rng = random.Random(seed)
    questions = make_workload(paths, 1000, seed)
    samples: list[tuple[int, float, float]] = []
    done = 0
    start = time.perf_counter()
    with SQLVerifier(None, workers=WORKERS, timeout=TIMEOUT) as verifier:
        verifier.start()
        every = max(batch, total // 10)
        while done < total:
            items = []
            for _ in range(min(batch, total - done)):
                path, pred, gold = rng.choice(questions)
                items.append((path, f"{pred.rstrip().rstrip(';')} -- {done + len(items)}", gold))
            verifier.verify_batch(items, budget=Budget())
            done += len(items)
            if done % every < batch or done == total:
                workers = sum(rss_mb(pid) for pid in verifier.pool.pids())
                samples.append((done, rss_mb(), workers))
    return samples, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run that takes seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = parser.parse_args(argv)
    runaways, normals = (64, 16) if args.quick else (512, 64)
    verifications = 5_000 if args.quick else 100_000
    failed: list[str] = []

    with tempfile.TemporaryDirectory(prefix="rewardsql-bench-") as tmp:
        paths = []
        for i, rows in enumerate((200, 300, 400)):
            path = Path(tmp) / f"shop_{i}" / f"shop_{i}.sqlite"
            make_shop_db(path, seed=args.seed + i, rows=rows)
            paths.append(path)
        print(f"{WORKERS} workers, timeout {TIMEOUT:g} s, default budget: "
              f"{Budget().describe(TIMEOUT)}; {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.2f}")

        seconds, timeouts, ok, kills = runaway_batch(paths, runaways, normals, args.seed)
        limit = 2 * TIMEOUT + 10
        print(f"(1) {runaways} distinct runaways + {normals} normal, budget on: {seconds:.2f} s "
              f"(target <= {limit:g} s); runaways timeout {timeouts}/{runaways}, normal ok "
              f"{ok}/{normals}; workers killed: {kills}")
        if seconds > limit or timeouts != runaways or ok != normals:
            failed.append("runaway batch")
        few = 4
        off = unbudgeted_runaways(paths, few)
        print(f"    budget off, {few} distinct runaways alone: {off:.2f} s "
              f"(~{off / few * runaways:.0f} s for {runaways} at that rate)")

        on_s, off_s, same = normal_batches(paths, 300 if args.quick else 1200,
                                           1 if args.quick else 3, args.seed)
        ratio = on_s / off_s
        print(f"(2) batch without runaways: budget on {on_s:.3f} s, off {off_s:.3f} s, "
              f"ratio {ratio:.2f} (target <= 1.1); verdicts equal: {same}")
        if ratio > 1.1 or not same:
            failed.append("no-runaway batch")

        samples, mem_s = memory_run(paths, verifications, 512, args.seed)
        print(f"(3) {verifications} verifications in {mem_s:.1f} s "
              f"({verifications / mem_s:.0f}/s); resident memory, MB:")
        print("    verifications  this process  workers")
        for done, own, workers in samples:
            print(f"    {done:>13}  {own:>12.1f}  {workers:>7.1f}")
        _, own0, workers0 = samples[0]  # after warm-up: the first sample
        own_growth = max(s[1] for s in samples) - own0
        workers_growth = max(s[2] for s in samples) - workers0
        print(f"    growth after warm-up: this process {own_growth:+.1f} MB, workers "
              f"{workers_growth:+.1f} MB (target within 50 MB each)")
        if own_growth > 50 or workers_growth > 50:
            failed.append("memory")

    print(f"summary: runaway batch {seconds:.2f} s | no-runaway ratio {ratio:.2f} | memory "
          f"growth {own_growth:+.1f} / {workers_growth:+.1f} MB | "
          + ("all targets met" if not failed else f"missed: {', '.join(failed)}"))
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
