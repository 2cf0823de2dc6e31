"""Question / gold SQL pairs over the example's databases, gold written as Chain-of-CTEs.

Each template picks tables and values from a domain, phrases a question that names every value
the SQL filters on, and writes the gold SQL as CTE steps separated by a blank line (the last CTE
before the final SELECT has no trailing comma, every other one has one, so the text runs as-is and
also after the step separators are removed). A candidate is kept only if its gold SQL returns at
least one row with a non-NULL value and, for ORDER BY ... LIMIT, no tie at the cut.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from rewardsql.demo.tiny.domains import Column, Domain, Table


@dataclass(frozen=True)
class Pair:
    """One generated question: its text, gold CoCTE SQL and the filter values it names."""

    db_id: str
    question: str
    query: str
    template: str
    values: tuple[str, ...]


#: Splits of the example, in the order their questions are drawn (each excludes the questions
#: of the ones before). All three draw filter values from the same pools: dev asks new questions
#: (other combinations, phrasings and constants), not new words, so a model this small is judged
#: on composing SQL, not on copying a value it has never seen.
SPLITS = ("dev", "rl", "train")


@dataclass
class _Ctx:
    rng: random.Random
    conn: sqlite3.Connection
    domain: Domain

    def rows(self, sql: str) -> list[tuple]:
        return self.conn.execute(sql).fetchall()

    def text_value(self, table: Table, col: Column) -> str | None:
        pool = sorted(r[0] for r in self.rows(f"SELECT DISTINCT {col.name} FROM {table.name}")
                      if isinstance(r[0], str))
        return self.rng.choice(pool) if pool else None

    def number(self, low: int, high: int) -> int:
        """A number in [low, high]."""
        return self.rng.randint(low, max(low, high))


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _chain(*steps: str) -> str:
    """Join CTE bodies and the final SELECT as CoCTE steps (blank line between steps)."""
    *ctes, final = steps
    parts = [("WITH " if i == 0 else "") + cte + ("," if i < len(ctes) - 1 else "")
             for i, cte in enumerate(ctes)]
    return "\n\n".join([*parts, final + ";"])


def _entity_tables(domain: Domain) -> list[Table]:
    return [t for t in domain.tables
            if t.column("label") and t.column("category") and t.column("number")]


def _relations(domain: Domain) -> list[tuple[Table, Column, Table]]:
    """(child, foreign key column, parent) for every parent with a label and a category."""
    out = []
    for child in domain.tables:
        for fk in child.columns_with("fk"):
            parent = domain.table(fk.ref)
            if parent.column("label") and parent.column("category"):
                out.append((child, fk, parent))
    return out


def _no_tie(ctx: _Ctx, sql_all_sorted: str, k: int) -> bool:
    """True when the k-th and (k+1)-th sort keys differ (the LIMIT cut is well defined)."""
    keys = [r[-1] for r in ctx.rows(sql_all_sorted)]
    return len(keys) >= k and (len(keys) == k or keys[k - 1] != keys[k])


# Templates: each returns (question, gold, values) or None when the draw has no good answer.
Result = tuple[str, str, tuple[str, ...]] | None


def top_k(ctx: _Ctx) -> Result:
    t = ctx.rng.choice(_entity_tables(ctx.domain))
    label, cat = t.column("label"), t.column("category")
    num = ctx.rng.choice(t.columns_with("number"))
    v = ctx.text_value(t, cat)
    k = ctx.rng.randint(1, 4)
    desc = ctx.rng.random() < 0.5
    if v is None:
        return None
    order = "DESC" if desc else "ASC"
    if not _no_tie(ctx, f"SELECT {label.name}, {num.name} FROM {t.name} WHERE {cat.name} = "
                        f"{_q(v)} ORDER BY {num.name} {order}", k):
        return None
    most = "highest" if desc else "lowest"
    phr = ctx.rng.choice([
        f"Which {k} {t.noun} with {cat.words} {_q(v)} have the {most} {num.words}?",
        f"List the {k} {t.noun} whose {cat.words} is {_q(v)} with the {most} {num.words}.",
    ])
    if k == 1:
        phr = ctx.rng.choice([
            f"Which {t.singular} with {cat.words} {_q(v)} has the {most} {num.words}?",
            f"Name the {t.singular} whose {cat.words} is {_q(v)} with the {most} {num.words}.",
        ])
    gold = _chain(
        f"chosen AS (SELECT {label.name}, {num.name} FROM {t.name} WHERE {cat.name} = {_q(v)})",
        f"SELECT {label.name} FROM chosen ORDER BY {num.name} {order} LIMIT {k}",
    )
    return phr, gold, (v,)


def aggregate(ctx: _Ctx) -> Result:
    t = ctx.rng.choice(_entity_tables(ctx.domain))
    cat = t.column("category")
    num = ctx.rng.choice(t.columns_with("number"))
    v = ctx.text_value(t, cat)
    if v is None:
        return None
    fn, word = ctx.rng.choice([("AVG", "average"), ("MAX", "maximum"), ("MIN", "minimum")])
    phr = ctx.rng.choice([
        f"What is the {word} {num.words} of {t.noun} whose {cat.words} is {_q(v)}?",
        f"Give the {word} {num.words} among {t.noun} with {cat.words} {_q(v)}.",
    ])
    gold = _chain(
        f"chosen AS (SELECT {num.name} FROM {t.name} WHERE {cat.name} = {_q(v)})",
        f"SELECT {fn}({num.name}) FROM chosen",
    )
    return phr, gold, (v,)


def count_filter(ctx: _Ctx) -> Result:
    t = ctx.rng.choice(_entity_tables(ctx.domain))
    cat = t.column("category")
    num = ctx.rng.choice(t.columns_with("number"))
    v = ctx.text_value(t, cat)
    n = ctx.number(num.low, num.high - (num.high - num.low) // 4)
    if v is None:
        return None
    phr = ctx.rng.choice([
        f"How many {t.noun} with {cat.words} {_q(v)} have a {num.words} above {n}?",
        f"Count the {t.noun} whose {cat.words} is {_q(v)} and whose {num.words} is over {n}.",
    ])
    gold = _chain(
        f"chosen AS (SELECT id FROM {t.name} WHERE {cat.name} = {_q(v)} AND {num.name} > {n})",
        "SELECT COUNT(*) FROM chosen",
    )
    return phr, gold, (v, str(n))


def group_having(ctx: _Ctx) -> Result:
    t = ctx.rng.choice([t for t in ctx.domain.tables if t.column("category")])
    cat = t.column("category")
    counts = [r[0] for r in ctx.rows(f"SELECT COUNT(*) FROM {t.name} GROUP BY {cat.name}")]
    k = ctx.number(2, max(counts))
    phr = ctx.rng.choice([
        f"Which {cat.words} values have at least {k} {t.noun}?",
        f"List every {cat.words} with {k} or more {t.noun}.",
    ])
    gold = _chain(
        f"counts AS (SELECT {cat.name}, COUNT(*) AS n FROM {t.name} GROUP BY {cat.name} "
        f"HAVING COUNT(*) >= {k})",
        f"SELECT {cat.name} FROM counts",
    )
    return phr, gold, (str(k),)


def join_filter(ctx: _Ctx) -> Result:
    child, fk, parent = ctx.rng.choice(_relations(ctx.domain))
    label = parent.column("label")
    num = ctx.rng.choice(child.columns_with("number"))
    n = ctx.number(num.low + (num.high - num.low) * 2 // 3, num.high)
    phr = ctx.rng.choice([
        f"Which {parent.noun} have {child.noun} with {num.words} above {n}?",
        f"Name the {parent.noun} that have a {child.singular} whose {num.words} is over {n}.",
    ])
    gold = _chain(
        f"big AS (SELECT {fk.name} FROM {child.name} WHERE {num.name} > {n})",
        f"SELECT DISTINCT {parent.name}.{label.name} FROM {parent.name} "
        f"JOIN big ON {parent.name}.id = big.{fk.name}",
    )
    return phr, gold, (str(n),)


def count_for_label(ctx: _Ctx) -> Result:
    child, fk, parent = ctx.rng.choice(_relations(ctx.domain))
    label = parent.column("label")
    name = ctx.text_value(parent, label)
    if name is None:
        return None
    phr = ctx.rng.choice([
        f"How many {child.noun} does the {parent.singular} {_q(name)} have?",
        f"Count the {child.noun} of the {parent.singular} named {_q(name)}.",
    ])
    gold = _chain(
        f"target AS (SELECT id FROM {parent.name} WHERE {label.name} = {_q(name)})",
        f"SELECT COUNT(*) FROM {child.name} JOIN target ON {child.name}.{fk.name} = target.id",
    )
    return phr, gold, (name,)


def total_for_label(ctx: _Ctx) -> Result:
    child, fk, parent = ctx.rng.choice(_relations(ctx.domain))
    nums = [c for c in child.columns_with("number") if c.additive]
    if not nums:
        return None
    num = ctx.rng.choice(nums)
    label = parent.column("label")
    name = ctx.text_value(parent, label)
    if name is None:
        return None
    phr = ctx.rng.choice([
        f"What is the total {num.words} of {child.noun} for the {parent.singular} {_q(name)}?",
        f"Sum the {num.words} over the {child.noun} of the {parent.singular} named {_q(name)}.",
    ])
    gold = _chain(
        f"target AS (SELECT id FROM {parent.name} WHERE {label.name} = {_q(name)})",
        f"SELECT SUM({child.name}.{num.name}) FROM {child.name} "
        f"JOIN target ON {child.name}.{fk.name} = target.id",
    )
    return phr, gold, (name,)


def having_children(ctx: _Ctx) -> Result:
    child, fk, parent = ctx.rng.choice(_relations(ctx.domain))
    label, cat = parent.column("label"), parent.column("category")
    v = ctx.text_value(parent, cat)
    k = ctx.number(1, 8)
    if v is None:
        return None
    phr = ctx.rng.choice([
        f"Which {parent.noun} with {cat.words} {_q(v)} have more than {k} {child.noun}?",
        f"List the {parent.noun} whose {cat.words} is {_q(v)} and who have over {k} "
        f"{child.noun}.",
    ])
    gold = _chain(
        f"chosen AS (SELECT id, {label.name} FROM {parent.name} WHERE {cat.name} = {_q(v)})",
        f"counts AS (SELECT {fk.name}, COUNT(*) AS n FROM {child.name} GROUP BY {fk.name})",
        f"SELECT chosen.{label.name} FROM chosen JOIN counts ON chosen.id = counts.{fk.name} "
        f"WHERE counts.n > {k}",
    )
    return phr, gold, (v, str(k))


def top_total(ctx: _Ctx) -> Result:
    child, fk, parent = ctx.rng.choice(_relations(ctx.domain))
    nums = [c for c in child.columns_with("number") if c.additive]
    if not nums:
        return None
    num = ctx.rng.choice(nums)
    label, cat = parent.column("label"), parent.column("category")
    v = ctx.text_value(parent, cat)
    if v is None:
        return None
    steps = (
        f"chosen AS (SELECT id, {label.name} FROM {parent.name} WHERE {cat.name} = {_q(v)})",
        f"totals AS (SELECT {fk.name}, SUM({num.name}) AS total FROM {child.name} "
        f"GROUP BY {fk.name})",
    )
    final = (f"SELECT chosen.{label.name} FROM chosen JOIN totals ON chosen.id = totals.{fk.name} "
             "ORDER BY totals.total DESC")
    check = _chain(*steps, final).rstrip(";").replace(
        f"SELECT chosen.{label.name} FROM", f"SELECT chosen.{label.name}, totals.total FROM")
    if not _no_tie(ctx, check, 1):
        return None
    phr = ctx.rng.choice([
        f"Which {parent.singular} with {cat.words} {_q(v)} has the highest total {num.words} "
        f"of {child.noun}?",
        f"Among {parent.noun} whose {cat.words} is {_q(v)}, who has the largest total "
        f"{num.words} over their {child.noun}?",
    ])
    return phr, _chain(*steps, final + " LIMIT 1"), (v,)


def group_join_having(ctx: _Ctx) -> Result:
    child, fk, parent = ctx.rng.choice(_relations(ctx.domain))
    nums = [c for c in child.columns_with("number") if c.additive]
    if not nums:
        return None
    num = ctx.rng.choice(nums)
    cat = parent.column("category")
    totals = [r[0] for r in ctx.rows(
        f"SELECT SUM({child.name}.{num.name}) FROM {child.name} JOIN {parent.name} "
        f"ON {child.name}.{fk.name} = {parent.name}.id GROUP BY {parent.name}.{cat.name}")]
    n = ctx.number(min(totals) // 2, max(totals))
    phr = ctx.rng.choice([
        f"For which {cat.words} values do the {parent.noun}' {child.noun} have a total "
        f"{num.words} above {n}?",
        f"List each {parent.singular} {cat.words} whose {child.noun} add up to more than {n} "
        f"{num.words}.",
    ])
    gold = _chain(
        f"joined AS (SELECT {parent.name}.{cat.name} AS {cat.name}, {child.name}.{num.name} AS "
        f"{num.name} FROM {child.name} JOIN {parent.name} ON {child.name}.{fk.name} = "
        f"{parent.name}.id)",
        f"totals AS (SELECT {cat.name}, SUM({num.name}) AS total FROM joined GROUP BY {cat.name} "
        f"HAVING SUM({num.name}) > {n})",
        f"SELECT {cat.name} FROM totals",
    )
    return phr, gold, (str(n),)


TEMPLATES: dict[str, Callable[[_Ctx], Result]] = {
    "top_k": top_k,
    "aggregate": aggregate,
    "count_filter": count_filter,
    "group_having": group_having,
    "join_filter": join_filter,
    "count_for_label": count_for_label,
    "total_for_label": total_for_label,
    "having_children": having_children,
    "top_total": top_total,
    "group_join_having": group_join_having,
}


def answers(conn: sqlite3.Connection, sql: str) -> bool:
    """True when ``sql`` runs and returns at least one row with a non-NULL value."""
    try:
        rows = conn.execute(sql).fetchall()
    except sqlite3.Error:
        return False
    return bool(rows) and any(v is not None for v in rows[0]) and rows[0] != (0,)


#: Failed draws in a row after which a domain counts as out of new questions for a split; the
#: other domains then make up its share (the smallest schema runs out first at full scale).
DOMAIN_PATIENCE = 5000


def generate_pairs(domains: list[Domain], conns: dict[str, sqlite3.Connection], split: str,
                   count: int, seed: int, exclude: set[str]) -> list[Pair]:
    """``count`` distinct questions for ``split``, cycling through domains and templates.

    Raises:
        RuntimeError: every domain ran out of new questions before ``count``.
    """
    rng = random.Random(f"{seed}:questions:{split}")
    names = list(TEMPLATES)
    pairs: list[Pair] = []
    seen = set(exclude)
    live = list(domains)
    failures = 0
    while len(pairs) < count:
        domain = live[len(pairs) % len(live)]
        if failures >= DOMAIN_PATIENCE:
            live.remove(domain)
            failures = 0
            if not live:
                raise RuntimeError(f"could not generate {count} distinct {split} questions: "
                                   f"every domain ran out after {len(pairs)}")
            continue
        failures += 1
        name = rng.choice(names)
        ctx = _Ctx(rng, conns[domain.db_id], domain)
        made = TEMPLATES[name](ctx)
        if made is None:
            continue
        question, gold, vals = made
        if question in seen or not answers(ctx.conn, gold):
            continue
        seen.add(question)
        failures = 0
        pairs.append(Pair(domain.db_id, question, gold, name, vals))
    return pairs
