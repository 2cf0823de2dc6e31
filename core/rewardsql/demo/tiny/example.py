"""``build_example``: the bundled text-to-SQL example (databases, questions, RL and SFT files).

Layout under ``out_dir`` (Spider/BIRD style, so every command reads it like a real benchmark)::

    databases/<db_id>/<db_id>.sqlite
    train.json, rl.json, dev.json      Spider-format questions (db_id, question, query, question_id)
    train.parquet, rl.parquet,         verl RL format (data_source, prompt, ability, reward_model,
    dev.parquet                        extra_info)
    sft_train.jsonl, sft_dev.jsonl     {"messages": [system, user, assistant (CoCTE SQL)]}
    manifest.json                      generator version, parameters, the teacher's errors and
                                       file hashes (the cache key)

Three splits of distinct questions over the same value pools: ``train`` for SFT, ``rl`` for GRPO
(and the PRM's labels), ``dev`` for evaluation. ``sft_train.jsonl``'s answers are the imperfect
teacher's (:mod:`rewardsql.demo.tiny.teacher`); every ``query`` and ground truth is correct.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardsql.demo.tiny import teacher
from rewardsql.demo.tiny.domains import DOMAINS, generate_rows, write_database
from rewardsql.demo.tiny.questions import SPLITS, Pair, generate_pairs
from rewardsql.errors import MissingDependencyError
from rewardsql.io import atomic_write, atomic_write_json, atomic_write_text

#: Bump when the output of the generator changes, so old caches are rebuilt.
GENERATOR_VERSION = 6
DATA_SOURCE = "rewardsql_tiny"
#: Sample values per column in the prompt's schema. None, because the tiny model needs short prompts
#: and every value a question filters on is written in the question.
SAMPLE_VALUES = 0
#: A quoted SQL string literal ('' inside is an escaped quote): a value in a question or its SQL.
QUOTED_VALUE = re.compile(r"'(?:[^']|'')*'")
#: Questions per split at each scale.
SCALES: dict[str, dict[str, int]] = {
    "full": {"train": 3000, "rl": 600, "dev": 300},
    "quick": {"train": 400, "rl": 80, "dev": 60},
}
_FILES = ("train.json", "rl.json", "dev.json", "train.parquet", "rl.parquet", "dev.parquet",
          "sft_train.jsonl", "sft_dev.jsonl")


@dataclass(frozen=True)
class TinyExample:
    """Paths and counts of a built example."""

    out_dir: Path
    db_root: Path
    train_json: Path
    rl_json: Path
    dev_json: Path
    train_parquet: Path
    rl_parquet: Path
    dev_parquet: Path
    sft_train: Path
    sft_dev: Path
    manifest: Path
    n_train: int
    n_rl: int
    n_dev: int
    db_ids: tuple[str, ...]
    seed: int
    scale: str
    sample_values: int = SAMPLE_VALUES
    #: The imperfect teacher of sft_train.jsonl: rate, near-misses, how many it made
    teacher: dict = field(default_factory=dict, compare=False)
    built: bool = field(default=True, compare=False)  # False when the cache was reused

    def db_path(self, db_id: str) -> Path:
        """The SQLite file of ``db_id``."""
        return self.db_root / db_id / f"{db_id}.sqlite"

    def corpus(self) -> Iterator[str]:
        """Training text for a tokenizer: every train SFT message (never dev text), with each
        quoted value blanked (``'Lyon'`` -> ``''``).

        A tokenizer that learns no value as a word spells the values of every split in the same
        small pieces, so SFT must learn to copy a value from the question instead of recalling
        the train values as whole tokens (examples/tiny/README.md, round 6).
        """
        with open(self.sft_train, encoding="utf-8") as handle:
            for line in handle:
                for message in json.loads(line)["messages"]:
                    yield QUOTED_VALUE.sub("''", message["content"])


def _paths(out: Path) -> dict[str, Path]:
    return {
        "db_root": out / "databases",
        "train_json": out / "train.json",
        "rl_json": out / "rl.json",
        "dev_json": out / "dev.json",
        "train_parquet": out / "train.parquet",
        "rl_parquet": out / "rl.parquet",
        "dev_parquet": out / "dev.parquet",
        "sft_train": out / "sft_train.jsonl",
        "sft_dev": out / "sft_dev.jsonl",
        "manifest": out / "manifest.json",
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _db_digest(path: Path) -> str:
    """Hash of a database's contents (its SQL dump), independent of SQLite's page layout."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


def _example(out: Path, manifest: dict, built: bool) -> TinyExample:
    p = _paths(out)
    return TinyExample(out_dir=out, n_train=manifest["n_train"], n_rl=manifest["n_rl"],
                       n_dev=manifest["n_dev"],
                       db_ids=tuple(manifest["db_ids"]), seed=manifest["seed"],
                       scale=manifest["scale"], sample_values=manifest["sample_values"],
                       teacher=manifest["teacher"], built=built, **p)


def _params(seed: int, scale: str) -> dict:
    counts = SCALES[scale]
    return {"generator_version": GENERATOR_VERSION, "seed": seed, "scale": scale,
            "n_train": counts["train"], "n_rl": counts["rl"], "n_dev": counts["dev"],
            "sample_values": SAMPLE_VALUES,
            "db_ids": [d.db_id for d in DOMAINS]}


def _cached(out: Path, params: dict) -> dict | None:
    """The manifest when ``out`` holds a complete build with these parameters, else None."""
    p = _paths(out)
    try:
        manifest = json.loads(p["manifest"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if any(manifest.get(k) != v for k, v in params.items()):
        return None
    # db_root is baked into the parquet files: a moved directory must be rebuilt
    if manifest.get("db_root") != str(p["db_root"].resolve()):
        return None
    try:
        for name, digest in manifest["files"].items():
            if _sha256(out / name) != digest:
                return None
        for db_id, digest in manifest["databases"].items():
            if _db_digest(p["db_root"] / db_id / f"{db_id}.sqlite") != digest:
                return None
    except (OSError, KeyError, sqlite3.Error):
        return None
    return manifest


def build_example(out_dir: str | os.PathLike[str], *, seed: int = 0,
                  scale: str = "full") -> TinyExample:
    """Build the bundled example under ``out_dir``; a no-op when an identical build is there.

    ``scale="full"`` gives a few thousand questions, ``"quick"`` a CI-sized set over the same
    databases. Dev questions are drawn first, then rl, then train, each split excluding the
    questions of the earlier ones. The same seed always gives byte-identical question files and
    identical databases.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    out = Path(out_dir).resolve()
    params = _params(seed, scale)
    manifest = _cached(out, params)
    if manifest is not None:
        return _example(out, manifest, built=False)

    _prompts()  # before writing anything: the prompts need the SQL plugin
    p = _paths(out)
    out.mkdir(parents=True, exist_ok=True)
    db_digests = {}
    rows_by_db = {}
    for domain in DOMAINS:
        rows_by_db[domain.db_id] = generate_rows(domain, seed)
        target = p["db_root"] / domain.db_id / f"{domain.db_id}.sqlite"
        _write_db_atomically(domain, rows_by_db[domain.db_id], target)
        db_digests[domain.db_id] = _db_digest(target)

    conns = {d.db_id: sqlite3.connect(f"{(p['db_root'] / d.db_id / f'{d.db_id}.sqlite').as_uri()}"
                                      "?mode=ro", uri=True) for d in DOMAINS}
    pairs: dict[str, list[Pair]] = {}
    try:
        for split in SPLITS:
            pairs[split] = generate_pairs(
                list(DOMAINS), conns, split, SCALES[scale][split], seed,
                exclude={q.question for drawn in pairs.values() for q in drawn})
    finally:
        for conn in conns.values():
            conn.close()

    schema_ddl = _prompts().schema_ddl
    schemas = {d.db_id: schema_ddl(p["db_root"] / d.db_id / f"{d.db_id}.sqlite",
                                   sample_values=SAMPLE_VALUES) for d in DOMAINS}
    taught = teacher.demonstrations([q.template for q in pairs["train"]],
                                    [q.query for q in pairs["train"]], seed)
    first_id = 0
    for split in ("train", "rl", "dev"):  # question ids in this order
        _write_split(p, split, pairs[split], first_id, schemas,
                     taught if split == "train" else None)
        first_id += len(pairs[split])

    errors = Counter(kind for _, kind in taught if kind)
    planted = Counter(q.template for q in pairs["train"] if q.template in teacher.NEAR_MISSES)
    manifest = {**params, "db_root": str(p["db_root"]),
                "teacher": {**teacher.describe(), "errors": dict(sorted(errors.items())),
                            "planted_template_questions": dict(sorted(planted.items()))},
                "files": {name: _sha256(out / name) for name in _FILES},
                "databases": db_digests}
    atomic_write_json(p["manifest"], manifest)
    return _example(out, manifest, built=True)


def _prompts() -> Any:
    """The SQL plugin's prompt builder: the example's prompts are the ones ``rewardsql data
    prepare`` writes for Spider and BIRD (one builder)."""
    try:
        from rewardsql_sql_reward.data import prompts
    except ImportError:
        raise MissingDependencyError(
            "the bundled example needs the SQL plugin, which is not installed here: pip install "
            "rewardsql-sql-reward (from a checkout: pip install -e plugins/rewardsql-sql-reward)"
        ) from None
    return prompts


def _write_db_atomically(domain, rows, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)  # sqlite3 creates the file itself
    try:
        write_database(domain, rows, Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_split(p: dict[str, Path], split: str, pairs: list[Pair], first_id: int,
                 schemas: dict[str, str],
                 taught: list[tuple[str, str | None]] | None = None) -> None:
    """The split's files; ``taught``: the teacher's demonstrations, for the SFT file."""
    import pandas as pd  # a `train` extra: imported here, `import rewardsql.demo.tiny` stays light

    questions = [{"question_id": first_id + i, "db_id": q.db_id, "question": q.question,
                  "query": q.query, "template": q.template, "values": list(q.values)}
                 for i, q in enumerate(pairs)]
    if taught is not None:
        for question, (demonstration, kind) in zip(questions, taught, strict=True):
            question["demonstration"] = demonstration
            question["teacher_error"] = kind
    atomic_write_text(p[f"{split}_json"],
                      json.dumps(questions, indent=1, ensure_ascii=False) + "\n")
    records = []
    sft_lines = []
    for i, q in enumerate(questions):
        messages = _prompts().build_messages(schemas[q["db_id"]], q["question"])
        records.append({
            "data_source": DATA_SOURCE,
            "prompt": messages,
            "ability": "text2sql",
            "reward_model": {"style": "rule", "ground_truth": q["query"]},
            "extra_info": {"db_id": q["db_id"], "question_id": q["question_id"],
                           "db_root": str(p["db_root"]), "split": split, "index": i},
        })
        answer = q.get("demonstration", q["query"])
        sft_lines.append(json.dumps(
            {"messages": [*messages, {"role": "assistant", "content": answer}]},
            ensure_ascii=False))
    with atomic_write(p[f"{split}_parquet"], "wb") as handle:
        pd.DataFrame.from_records(records).to_parquet(handle, index=False)
    if f"sft_{split}" in p:  # rl questions are GRPO prompts only: no SFT file
        atomic_write_text(p[f"sft_{split}"], "\n".join(sft_lines) + "\n")
