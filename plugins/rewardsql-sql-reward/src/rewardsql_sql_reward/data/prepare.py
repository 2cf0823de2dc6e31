"""Spider- and BIRD-format questions to verl's RL parquet (``rewardsql data prepare``).

One row per question: ``prompt`` (chat messages from :mod:`rewardsql_sql_reward.data.prompts`),
``data_source``, ``ability``, ``reward_model`` (``style``, ``ground_truth`` = gold SQL) and
``extra_info`` (``db_id``, ``question_id``, ``db_root``, ``index``, ``split``). Every gold query is
executed through the SQL verifier: failures are reported (and kept unless asked otherwise). A
question whose database is missing is reported and left out; the counts say how many.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardsql.errors import ConfigError
from rewardsql.io import atomic_write

from rewardsql_sql_reward.data.prompts import build_messages, schema_ddl
from rewardsql_sql_reward.verifier import is_plain_db_id

FORMATS = ("spider", "bird")
#: The gold SQL's key in each format.
GOLD_KEY = {"spider": "query", "bird": "SQL"}
ABILITY = "text2sql"
#: Gold queries sent to the verifier at once (the progress bar moves by this much).
CHUNK = 64


@dataclass(frozen=True)
class Problem:
    """A question that did not go through cleanly."""

    index: int
    db_id: str
    kind: str  # "missing_database" or the verifier's status for a failing gold query
    detail: str


@dataclass(frozen=True)
class PromptFit:
    """How the written prompts fit a model: ``too_long`` of ``count`` prompts have more tokens
    than its ``limit`` positions; the longest has ``longest``."""

    model: Path
    limit: int
    count: int
    too_long: int
    longest: int

    def warning(self) -> str | None:
        """One line when some prompts do not fit, else None."""
        if not self.too_long:
            return None
        return (f"{self.too_long} of {self.count} prompts do not fit {self.model}'s "
                f"{self.limit} positions (the longest has {self.longest} tokens): lower "
                "--sample-values, or give training a model with a longer context")


@dataclass
class PrepareReport:
    """What :func:`prepare` read, wrote and left out; with a model, how the prompts fit it."""

    total: int = 0
    written: dict[Path, int] = field(default_factory=dict)
    missing_databases: dict[str, int] = field(default_factory=dict)  # db_id -> questions
    gold_failures: list[Problem] = field(default_factory=list)
    dropped_failing_gold: int = 0
    prompt_fit: PromptFit | None = None

    @property
    def left_out(self) -> int:
        """Questions not written (missing database, or failing gold when asked to drop)."""
        return sum(self.missing_databases.values()) + self.dropped_failing_gold

    def lines(self) -> list[str]:
        """A human report."""
        out = [f"read {self.total} questions"]
        for path, rows in self.written.items():
            out.append(f"wrote {rows} rows to {path}")
        if self.missing_databases:
            count = sum(self.missing_databases.values())
            dbs = ", ".join(f"{db} ({n})" for db, n in sorted(self.missing_databases.items()))
            out.append(f"left out {count} questions whose database is missing: {dbs}")
        if self.gold_failures:
            by_status = Counter(p.kind for p in self.gold_failures)
            verb = "left out" if self.dropped_failing_gold else "kept"
            out.append(f"{len(self.gold_failures)} gold queries failed ({verb}): "
                       + ", ".join(f"{k} {n}" for k, n in sorted(by_status.items())))
            for p in self.gold_failures[:20]:
                out.append(f"  question {p.index} ({p.db_id}): {p.kind}: {p.detail}")
            if len(self.gold_failures) > 20:
                out.append(f"  ... and {len(self.gold_failures) - 20} more")
        fit = self.prompt_fit
        if fit is not None and not fit.too_long and fit.count:
            out.append(f"prompts: the longest has {fit.longest} tokens, within {fit.model}'s "
                       f"{fit.limit} positions")
        return out


def load_questions(path: Path, fmt: str) -> list[dict[str, Any]]:
    """The question objects of a Spider or BIRD JSON file, each checked for its keys."""
    if fmt not in FORMATS:
        raise ConfigError(f"expected one of {', '.join(FORMATS)}, got {fmt!r}", source="--format")
    if not path.is_file():
        raise ConfigError("no such file", source=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON at line {exc.lineno}: {exc.msg}", source=path) from None
    if not isinstance(data, list):
        raise ConfigError(f"expected a JSON array of questions, got {type(data).__name__}",
                          source=path)
    gold = GOLD_KEY[fmt]
    for index, item in enumerate(data):
        if not isinstance(item, Mapping):
            raise ConfigError(f"question {index}: expected an object", source=path)
        for key in ("db_id", "question", gold):
            if not isinstance(item.get(key), str) or not item[key].strip():
                other = GOLD_KEY["bird" if fmt == "spider" else "spider"]
                hint = (f" (this looks like {'BIRD' if fmt == 'spider' else 'Spider'} data: "
                        f"try --format {'bird' if fmt == 'spider' else 'spider'})"
                        if key == gold and other in item else "")
                raise ConfigError(f"question {index}: missing or empty {key!r}{hint}",
                                  source=path, key=key)
    return data


def load_table_db_ids(path: Path) -> set[str]:
    """The ``db_id`` of every database a Spider/BIRD ``tables.json`` describes."""
    if not path.is_file():
        raise ConfigError("no such file", source=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON at line {exc.lineno}: {exc.msg}", source=path) from None
    if not isinstance(data, list) or not all(isinstance(t, Mapping) and "db_id" in t for t in data):
        raise ConfigError("expected a JSON array of objects with 'db_id'", source=path)
    return {str(t["db_id"]) for t in data}


def database_path(db_root: Path, db_id: str) -> Path:
    """``<db_root>/<db_id>/<db_id>.sqlite``, the Spider and BIRD layout."""
    return db_root / db_id / f"{db_id}.sqlite"


#: The config keys that hold a model's context length (positions), by model family.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def load_model_context(model: Path) -> tuple[Any, int]:
    """The tokenizer of the model directory ``model`` and its context length in tokens.

    Raises ConfigError naming ``--model`` when ``model`` is no such directory, or its tokenizer
    or config cannot be loaded, or the config names no context length.
    """
    from rewardsql.errors import require

    require("transformers", "--model", "train")
    from transformers import AutoConfig, AutoTokenizer

    if not model.is_dir():
        raise ConfigError(f"{model}: not a directory (a model directory: its tokenizer and "
                          "config.json)", source="--model")
    loaded = []
    for loader, what in ((AutoTokenizer, "its tokenizer"), (AutoConfig, "its config.json")):
        try:
            loaded.append(loader.from_pretrained(str(model), local_files_only=True))
        except (OSError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"{model}: cannot load {what} ({reason})",
                              source="--model") from None
    tokenizer, config = loaded
    for key in _CONTEXT_KEYS:
        limit = getattr(config, key, None)
        if isinstance(limit, int) and limit > 0:
            return tokenizer, limit
    raise ConfigError(f"{model}: config.json names no context length (one of "
                      f"{', '.join(_CONTEXT_KEYS)})", source="--model")


def prompt_fit(rows: Sequence[dict[str, Any]], tokenizer: Any, limit: int,
               model: Path) -> PromptFit:
    """Count the prompts of ``rows`` longer than ``limit`` tokens, as training tokenizes them
    (the chat template with the generation prompt)."""
    lengths = []
    for row in rows:
        try:
            ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True,
                                                tokenize=True, return_dict=False)
        except ValueError as exc:  # no chat template: training could not use it either
            raise ConfigError(f"{model}: its tokenizer cannot apply a chat template ({exc})",
                              source="--model") from None
        lengths.append(len(ids))
    return PromptFit(model=model, limit=limit, count=len(lengths),
                     too_long=sum(n > limit for n in lengths), longest=max(lengths, default=0))


def _open_verifier(db_root: Path, timeout: float) -> Any:
    try:
        from rewardsql_sql_reward import SQLVerifier
    except ImportError as exc:
        raise ConfigError(f"gold queries are executed by the SQL verifier, which is not "
                          f"installed (pip install rewardsql-sql-reward): {exc}") from None

    return SQLVerifier(db_root, timeout=timeout)


def prepare(
    fmt: str,
    input_path: Path,
    db_root: Path,
    output: Path,
    *,
    tables: Path | None = None,
    val_fraction: float = 0.0,
    val_output: Path | None = None,
    seed: int = 0,
    data_source: str | None = None,
    timeout: float = 30.0,
    sample_values: int = 3,
    drop_failing_gold: bool = False,
    progress: bool = True,
    model: Path | None = None,
) -> PrepareReport:
    """Convert ``input_path`` to parquet at ``output`` (and the validation split, if any).

    ``val_fraction`` of the questions (chosen with ``seed``) go to ``val_output``, by default
    ``val.parquet`` beside ``output``: the layout ``rewardsql train --data-path DIR`` reads.
    ``model`` (a model directory): the report's ``prompt_fit`` counts the written prompts that
    do not fit its context, so the user hears it now rather than when training starts.
    """
    from tqdm import tqdm

    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"must be in [0, 1), got {val_fraction}", source="--val-fraction")
    if not db_root.is_dir():
        raise ConfigError("no such directory", source=db_root)
    if output.suffix != ".parquet":
        raise ConfigError("the output must be a .parquet file", source=output)
    if val_fraction > 0:
        val_output = val_output or output.with_name("val.parquet")
        if val_output.resolve() == output.resolve():
            raise ConfigError("the validation split would overwrite the output; pass "
                              "--val-output", source=output)
    questions = load_questions(input_path, fmt)
    known = load_table_db_ids(tables) if tables is not None else None
    # a bad --model fails before the gold queries run
    context = load_model_context(model) if model is not None else None
    db_root = db_root.resolve()
    source_name = data_source or fmt
    gold_key = GOLD_KEY[fmt]
    report = PrepareReport(total=len(questions))
    schemas: dict[str, str | None] = {}

    pending: list[tuple[int, dict[str, Any]]] = []  # (question index, row)
    for index, item in enumerate(questions):
        db_id = item["db_id"]
        if db_id not in schemas:
            schemas[db_id] = _schema_or_none(db_root, db_id, known, sample_values)
        schema = schemas[db_id]
        if schema is None:
            report.missing_databases[db_id] = report.missing_databases.get(db_id, 0) + 1
            continue
        gold = item[gold_key].strip()
        question_id = item.get("question_id", index)
        pending.append((index, {
            "data_source": source_name,
            "prompt": build_messages(schema, item["question"], item.get("evidence")),
            "ability": ABILITY,
            "reward_model": {"style": "rule", "ground_truth": gold},
            "extra_info": {
                "db_id": db_id,
                "question_id": int(question_id) if str(question_id).isdigit() else index,
                "db_root": str(db_root),
                "index": index,
                "split": "train",
            },
        }))

    # Gold queries run in parallel chunks through the verifier's worker pool.
    rows: list[dict[str, Any]] = []
    with _open_verifier(db_root, timeout) as verifier, tqdm(
        total=len(pending), desc="executing gold SQL", unit="q", disable=not progress
    ) as bar:
        for start in range(0, len(pending), CHUNK):
            chunk = pending[start:start + CHUNK]
            results = verifier.execute_many(
                [(row["extra_info"]["db_id"], row["reward_model"]["ground_truth"])
                 for _, row in chunk])
            for (index, row), result in zip(chunk, results, strict=True):
                if result.status != "ok":
                    report.gold_failures.append(Problem(
                        index, row["extra_info"]["db_id"], str(result.status),
                        str(result.error or "")))
                    if drop_failing_gold:
                        report.dropped_failing_gold += 1
                        continue
                rows.append(row)
            bar.update(len(chunk))

    train_rows, val_rows = split_rows(rows, val_fraction, seed)
    for row in val_rows:
        row["extra_info"]["split"] = "val"
    write_parquet(output, train_rows)
    report.written[output] = len(train_rows)
    if val_fraction > 0 and val_output is not None:
        write_parquet(val_output, val_rows)
        report.written[val_output] = len(val_rows)
    if context is not None and model is not None:
        report.prompt_fit = prompt_fit(rows, *context, model)
    return report


def _schema_or_none(db_root: Path, db_id: str, known: set[str] | None,
                    sample_values: int) -> str | None:
    if known is not None and db_id not in known:
        return None  # not described by tables.json: reported with the missing ones
    if not is_plain_db_id(db_id):
        return None  # '../x' or '/elsewhere/x' would leave db_root: reported as missing
    path = database_path(db_root, db_id)
    if not path.is_file():
        return None
    return schema_ddl(path, sample_values=sample_values)


def split_rows(rows: Sequence[dict[str, Any]], val_fraction: float,
               seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A seeded random split; the validation count is ``round(len * fraction)``, at least 1 when
    the fraction is positive and there are two rows or more. Each side keeps input order."""
    if val_fraction <= 0 or len(rows) < 2:
        return list(rows), []
    n_val = min(len(rows) - 1, max(1, round(len(rows) * val_fraction)))
    chosen = set(random.Random(seed).sample(range(len(rows)), n_val))
    train = [r for i, r in enumerate(rows) if i not in chosen]
    val = [r for i, r in enumerate(rows) if i in chosen]
    return train, val


def write_parquet(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` as parquet, atomically (an empty file still has the columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(list(rows), schema=row_schema())
    with atomic_write(path, "wb") as handle:
        pq.write_table(table, handle)


def row_schema() -> Any:
    """The parquet schema of a prepared row."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(message)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([
            ("db_id", pa.string()),
            ("question_id", pa.int64()),
            ("db_root", pa.string()),
            ("index", pa.int64()),
            ("split", pa.string()),
        ])),
    ])

