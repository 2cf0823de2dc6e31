"""Benchmark of the SQL verifier against the published design and plain in-process sqlite3.

    python bench/sql_verifier.py            # the full run (about a minute on 2 cores)
    python bench/sql_verifier.py --quick    # a smoke run in seconds

Workload: (pred, gold) pairs of typical text-to-SQL queries (filters, joins, GROUP BY, ORDER BY,
nesting, CTEs) over shop databases this script generates deterministically. Every pair has its
own gold text, so the "cold" run executes every gold once. Predictions are equivalent rewrites
(correct), perturbed constants (mostly wrong) and misspelt columns (errors).

Measured side by side, in pairs per second:
  (a) ``SQLVerifier.verify_batch`` over the whole workload (worker pool started beforehand),
      with a cold gold cache, then again with a warm one;
  (b) the published design: a fresh two-process ``multiprocessing.Pool`` per comparison, one
      process executing pred and one gold, each with a fresh connection, then set comparison;
  (c) plain in-process sqlite3, a connection per query, no limits or isolation.
Targets: a/b >= 20; a/c >= 0.7 with a cold gold cache, higher with a warm one; one runaway
query in the mix adds no more than its timeout to the total, and the other queries of that batch
do not wait for it (all answered within 0.25 s of the batch's time without it on one worker
fewer, the worker the runaway holds).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rewardsql_sql_reward import SQLVerifier

CITIES = ["Lisbon", "Porto", "Oslo", "Lima", "Quito", "Accra", "Hanoi", "Perth"]
CATEGORIES = ["books", "games", "garden", "tools", "music", "sports"]
STATUSES = ["paid", "shipped", "returned", "cancelled"]
RUNAWAY = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"


# -- databases -------------------------------------------------------------------------------------


def make_shop_db(path: Path, seed: int, rows: int) -> None:
    """A shop database: ``rows`` customers and orders, ``rows / 2`` products, ``2 rows`` items."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.executescript("""
            CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT, age INTEGER,
                                    joined_year INTEGER);
            CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, category TEXT, price REAL);
            CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers,
                                 order_year INTEGER, status TEXT);
            CREATE TABLE order_items (order_id INTEGER REFERENCES orders,
                                      product_id INTEGER REFERENCES products, quantity INTEGER);
            CREATE INDEX order_items_product ON order_items (product_id);
            CREATE INDEX orders_customer ON orders (customer_id);
        """)
        conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?)", [
            (i, f"customer_{i}", rng.choice(CITIES), rng.randint(18, 80), rng.randint(2010, 2024))
            for i in range(1, rows + 1)])
        conn.executemany("INSERT INTO products VALUES (?, ?, ?, ?)", [
            (i, f"product_{i}", rng.choice(CATEGORIES), round(rng.uniform(1, 500), 2))
            for i in range(1, rows // 2 + 1)])
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", [
            (i, rng.randint(1, rows), rng.randint(2015, 2024), rng.choice(STATUSES))
            for i in range(1, rows + 1)])
        conn.executemany("INSERT INTO order_items VALUES (?, ?, ?)", [
            (rng.randint(1, rows), rng.randint(1, rows // 2), rng.randint(1, 9))
            for _ in range(rows * 2)])
    conn.close()


# -- workload --------------------------------------------------------------------------------------

# Gold templates; {placeholders} are drawn per pair. The second item is a misspelt-column error.
TEMPLATES = [
    ("SELECT name FROM customers WHERE city = '{city}' AND age > {age}", "nam"),
    ("SELECT c.name, COUNT(*) FROM customers c JOIN orders o ON o.customer_id = c.id "
     "WHERE o.order_year = {year} GROUP BY c.id ORDER BY COUNT(*) DESC, c.name LIMIT {k}", "c.nme"),
    ("SELECT category, AVG(price) FROM products GROUP BY category HAVING COUNT(*) > {n}",
     "categry"),
    ("SELECT name FROM products WHERE price > (SELECT AVG(price) FROM products "
     "WHERE category = '{cat}')", "prce"),
    ("SELECT p.category, SUM(oi.quantity * p.price) FROM order_items oi JOIN products p "
     "ON p.id = oi.product_id JOIN orders o ON o.id = oi.order_id WHERE o.status = '{status}' "
     "AND o.order_year >= {year} GROUP BY p.category ORDER BY 2 DESC", "oi.qty"),
    ("SELECT name FROM customers WHERE id IN (SELECT customer_id FROM orders "
     "WHERE order_year >= {year} AND status = '{status}') ORDER BY name", "customer"),
    ("WITH big AS (SELECT customer_id, COUNT(*) AS n FROM orders GROUP BY customer_id "
     "HAVING n >= {n2}) SELECT c.city, COUNT(*) FROM customers c JOIN big "
     "ON big.customer_id = c.id GROUP BY c.city", "c.cty"),
    ("SELECT name FROM products p WHERE NOT EXISTS (SELECT 1 FROM order_items oi "
     "WHERE oi.product_id = p.id AND oi.quantity > {q})", "oi.prod"),
    ("SELECT COUNT(DISTINCT city) FROM customers WHERE age BETWEEN {age} AND {age2}", "cty"),
    ("SELECT name, price FROM products WHERE category = '{cat}' ORDER BY price DESC LIMIT {k}",
     "nme"),
    ("SELECT o.order_year, COUNT(DISTINCT o.customer_id) FROM orders o JOIN customers c "
     "ON c.id = o.customer_id WHERE c.joined_year < {year} GROUP BY o.order_year", "o.yr"),
]


def _params(rng: random.Random) -> dict[str, object]:
    age = rng.randint(18, 70)
    return {"city": rng.choice(CITIES), "age": age, "age2": age + rng.randint(1, 20),
            "year": rng.randint(2015, 2024), "k": rng.randint(1, 20), "n": rng.randint(5, 60),
            "n2": rng.randint(1, 4), "cat": rng.choice(CATEGORIES),
            "status": rng.choice(STATUSES), "q": rng.randint(1, 8)}


def _equivalent(sql: str, rng: random.Random) -> str:
    """A different text with the same result: keywords lower-cased, spacing changed."""
    words = ["SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "JOIN", "HAVING", "AND"]
    for word in rng.sample(words, 4):
        sql = sql.replace(f" {word} ", f"  {word.lower()} ")
    return sql + rng.choice([" ", "\n", ";"])


def make_workload(paths: list[Path], pairs: int, seed: int) -> list[tuple[Path, str, str]]:
    """``pairs`` (database, pred, gold) triples with distinct gold texts where possible."""
    rng = random.Random(seed)
    items: list[tuple[Path, str, str]] = []
    seen: set[tuple[Path, str]] = set()
    while len(items) < pairs:
        template, misspelt = rng.choice(TEMPLATES)
        params = _params(rng)
        path = rng.choice(paths)
        gold = template.format(**params)
        if (path, gold) in seen and rng.random() < 0.9:
            continue
        seen.add((path, gold))
        roll = rng.random()
        if roll < 0.5:
            pred = _equivalent(gold, rng)
        elif roll < 0.85:
            pred = template.format(**_params(rng))
        else:
            column = misspelt.split(".")[-1]
            original = {"nam": "name", "nme": "name", "categry": "category", "prce": "price",
                        "qty": "quantity", "customer": "customer_id", "cty": "city",
                        "prod": "product_id", "yr": "order_year"}[column]
            pred = gold.replace(original, column, 1)
        items.append((path, pred, gold))
    return items


# -- (c) plain in-process sqlite3 and (b) the published design -----------------------------------


def _plain_execute(path: str, sql: str) -> list | str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    except Exception as exc:  # what evaluation scripts do: any failure is an error string
        return f"Execution error: {exc}"
    finally:
        conn.close()


def plain_compare(path: Path, pred: str, gold: str) -> bool:
    pred_rows, gold_rows = _plain_execute(str(path), pred), _plain_execute(str(path), gold)
    if isinstance(pred_rows, str) or isinstance(gold_rows, str):
        return False
    return set(pred_rows) == set(gold_rows)


def _published_execute(sql: str, db_path: str) -> list | str:
    conn = sqlite3.connect(db_path)
    try:
        return conn.cursor().execute(sql).fetchall()
    except Exception as exc:
        return f"Execution error: {exc}"
    finally:
        conn.close()


def published_compare(path: Path, pred: str, gold: str, timeout: float = 60.0) -> bool:
    """The published design: a fresh two-process pool per comparison (multiprocessing's default
    start method, as the published code uses it), one query per process, sets compared."""
    with multiprocessing.Pool(processes=2) as pool:
        result = pool.starmap_async(_published_execute, [(pred, str(path)), (gold, str(path))])
        try:
            pred_rows, gold_rows = result.get(timeout=timeout)
        except Exception:
            pool.terminate()
            return False
    if isinstance(pred_rows, str) or isinstance(gold_rows, str):
        return False
    return set(map(tuple, pred_rows)) == set(map(tuple, gold_rows))


# -- the run ---------------------------------------------------------------------------------------


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run that takes seconds")
    parser.add_argument("--pairs", type=int, help="workload size (default 1200; quick 150)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = parser.parse_args(argv)
    pairs = args.pairs or (150 if args.quick else 1200)
    published_pairs = min(pairs, 40 if args.quick else 600)
    repeats = 1 if args.quick else 3
    runaway_timeout = 0.5 if args.quick else 2.0

    with tempfile.TemporaryDirectory(prefix="rewardsql-bench-") as tmp:
        root = Path(tmp)
        paths = []
        for i, rows in enumerate((200, 300, 400)):
            path = root / f"shop_{i}" / f"shop_{i}.sqlite"
            make_shop_db(path, seed=args.seed + i, rows=rows)
            paths.append(path)
        work = make_workload(paths, pairs, args.seed)
        golds = len({(p, g) for p, _, g in work})
        print(f"workload: {len(work)} pairs over {len(paths)} databases "
              f"({golds} distinct golds); published design on {published_pairs} pairs")

        # (c) plain sqlite3
        plain_times, expected = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            expected = [plain_compare(p, pred, gold) for p, pred, gold in work]
            plain_times.append(time.perf_counter() - start)
        rate_c = _rate(len(work), statistics.median(plain_times))

        # (a) the verifier: cold gold cache (fresh verifier, started), then warm
        cold_times, warm_times, mismatches = [], [], 0
        for _ in range(repeats):
            with SQLVerifier(None, workers=None) as verifier:
                start = time.perf_counter()
                verifier.start()
                boot = time.perf_counter() - start
                start = time.perf_counter()
                verdicts = verifier.verify_batch(work)
                cold_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                verifier.verify_batch(work)
                warm_times.append(time.perf_counter() - start)
                workers = verifier.workers
            mismatches = sum(v.correct != e for v, e in zip(verdicts, expected, strict=True))
        rate_a_cold = _rate(len(work), statistics.median(cold_times))
        rate_a_warm = _rate(len(work), statistics.median(warm_times))

        # (b) the published design
        start = time.perf_counter()
        published = [published_compare(p, pred, gold) for p, pred, gold in work[:published_pairs]]
        rate_b = _rate(published_pairs, time.perf_counter() - start)
        mismatches_b = sum(a != e for a, e in zip(published, expected, strict=False))

        # one runaway query in the mix, fresh verifiers for both totals; the pool's trace gives
        # the moment every other query had its answer
        runaway_work = work[: max(50, len(work) // 2)]
        totals = []
        for batch in (runaway_work, [(paths[0], RUNAWAY, work[0][2]), *runaway_work]):
            with SQLVerifier(None, timeout=runaway_timeout) as verifier:
                verifier.start()
                verifier.pool.trace = trace = []
                start = time.monotonic()
                outcome = verifier.verify_batch(batch)
                totals.append(time.monotonic() - start)
                duplicates = verifier.pool.duplicates
        runaway_status = outcome[0].status
        added = totals[1] - totals[0]
        others_done = max(at - start for task, _, at in trace if task.sql != RUNAWAY)
        # The runaway holds one worker for its timeout; the rest run on the others.
        others_target = totals[0] * workers / max(1, workers - 1) + 0.25

    status_counts: dict[str, int] = {}
    for verdict in verdicts:
        status_counts[verdict.status] = status_counts.get(verdict.status, 0) + 1
    print(f"verifier: {workers} workers, started in {boot:.2f} s; verdicts {status_counts}")
    print(f"agreement with plain sqlite3: {len(work) - mismatches}/{len(work)} (verifier), "
          f"{published_pairs - mismatches_b}/{published_pairs} (published design)")
    print()
    print(f"(a) verify_batch, cold gold cache  {rate_a_cold:10.1f} pairs/s")
    print(f"(a) verify_batch, warm gold cache  {rate_a_warm:10.1f} pairs/s")
    print(f"(b) published two-process pool     {rate_b:10.1f} pairs/s")
    print(f"(c) plain in-process sqlite3       {rate_c:10.1f} pairs/s")
    print(f"runaway query (timeout {runaway_timeout:g} s, status {runaway_status}): total "
          f"{totals[0]:.2f} s -> {totals[1]:.2f} s, added {added:.2f} s; every other query "
          f"answered after {others_done:.2f} s ({duplicates} re-dispatched)")
    print()
    checks = [
        (f"a/b = {rate_a_cold / rate_b:.1f} (target >= 20)", rate_a_cold / rate_b >= 20),
        (f"a/c cold = {rate_a_cold / rate_c:.2f} (target >= 0.7)", rate_a_cold / rate_c >= 0.7),
        (f"a/c warm = {rate_a_warm / rate_c:.2f} (target: above cold, {rate_a_cold / rate_c:.2f})",
         rate_a_warm > rate_a_cold),
        (f"runaway adds {added:.2f} s (target <= {runaway_timeout:g} s)",
         added <= runaway_timeout and runaway_status == "timeout"),
        (f"nothing waits for the runaway: every other query answered after {others_done:.2f} s "
         f"(target <= {others_target:.2f} s: the batch without it on one worker fewer + 0.25 s)",
         others_done <= others_target or workers == 1),  # one worker: nothing to run them
        (f"verdicts agree with plain sqlite3 on {len(work) - mismatches}/{len(work)} pairs",
         mismatches == 0),
    ]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    if args.quick:
        print("(--quick: a smoke run; the targets are judged on the full run)")
    return 1 if args.strict and not all(ok for _, ok in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
