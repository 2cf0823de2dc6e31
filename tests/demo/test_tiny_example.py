"""The bundled example: deterministic databases and questions, executable CoCTE gold SQL."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from _tiny_helpers import quick_example, read_jsonl, tiny_model
from rewardsql.demo.tiny import DATA_SOURCE, build_example
from rewardsql_sql_reward.data.prompts import build_messages, schema_ddl


def _dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_same_seed_gives_identical_files_and_databases(tmp_path, tmp_path_factory):
    a = quick_example(tmp_path_factory)
    b = build_example(tmp_path / "again", seed=0, scale="quick")
    for name in ("train.json", "rl.json", "dev.json", "sft_train.jsonl", "sft_dev.jsonl"):
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name
    for db_id in a.db_ids:
        assert _dump(a.db_path(db_id)) == _dump(b.db_path(db_id)), db_id
    other = build_example(tmp_path / "seed1", seed=1, scale="quick")
    assert other.train_json.read_bytes() != a.train_json.read_bytes()
    assert _dump(other.db_path("shop")) != _dump(a.db_path("shop"))


def test_rebuild_is_a_no_op_unless_a_file_changed(tmp_path):
    first = build_example(tmp_path, seed=3, scale="quick")
    assert first.built
    stamp = first.train_parquet.stat().st_mtime_ns
    again = build_example(tmp_path, seed=3, scale="quick")
    assert not again.built and again == first
    assert first.train_parquet.stat().st_mtime_ns == stamp
    # A damaged file (or other parameters) means a rebuild that restores it
    first.dev_json.write_text("[]")
    repaired = build_example(tmp_path, seed=3, scale="quick")
    assert repaired.built
    assert len(json.loads(first.dev_json.read_text())) == first.n_dev


@pytest.mark.parametrize("split", ["train", "rl", "dev"])
def test_every_gold_query_runs_and_returns_rows(tmp_path_factory, split):
    example = quick_example(tmp_path_factory)
    questions = json.loads((example.out_dir / f"{split}.json").read_text())
    assert len(questions) == {"train": example.n_train, "rl": example.n_rl,
                              "dev": example.n_dev}[split]
    for q in questions:
        db = example.db_path(q["db_id"])
        rows = _rows(db, q["query"])
        assert rows and any(v is not None for v in rows[0]), q
        # CoCTE: 2 or 3 steps separated by a blank line; the steps joined without the blank
        # lines (as a parser that drops step separators would) give the same result
        steps = q["query"].split("\n\n")
        assert 2 <= len(steps) <= 3 and steps[0].startswith("WITH ")
        assert steps[-1].startswith("SELECT ") and "\n" not in q["query"].replace("\n\n", "")
        assert _rows(db, "".join(steps)) == rows


def test_full_scale_covers_the_sql_features(tmp_path_factory):
    example = build_example(tmp_path_factory.getbasetemp() / "tiny-full", scale="full")
    train = json.loads(example.train_json.read_text())
    dev = json.loads(example.dev_json.read_text())
    assert 2000 <= len(train) + len(dev) <= 5000
    assert len(example.db_ids) >= 4
    queries = [q["query"] for q in train]
    for feature in (" JOIN ", " GROUP BY ", " HAVING ", " ORDER BY ", " LIMIT ", " WHERE ",
                    " = '", "COUNT(", "SUM(", "AVG("):
        assert any(feature in s for s in queries), feature
    steps = {s.count("\n\n") + 1 for s in queries}
    assert steps == {2, 3}
    for q in train[::7] + dev:  # a sample of train (all of it is checked at quick scale) and dev
        assert _rows(example.db_path(q["db_id"]), q["query"])
    # Every value a question filters on is written in the question
    for q in train + dev:
        for value in q["values"]:
            assert value in q["question"] and value in q["query"], q


@pytest.mark.parametrize("held_out", ["dev", "rl"])
def test_dev_and_rl_questions_are_new_but_their_values_are_not(tmp_path_factory, held_out):
    example = build_example(tmp_path_factory.getbasetemp() / "tiny-full", scale="full")
    splits = {s: json.loads((example.out_dir / f"{s}.json").read_text())
              for s in ("train", "rl", "dev")}
    held = splits[held_out]
    others = [q for s, qs in splits.items() if s != held_out for q in qs]
    assert not {q["question"] for q in held} & {q["question"] for q in others}
    sft_questions = {line["messages"][1]["content"] for line in read_jsonl(example.sft_train)}
    assert not [q for q in held if any(q["question"] in text for text in sft_questions)]
    # generalise over new questions, not new vocabulary: held-out values come from train's pools
    held_values = {v for q in held for v in q["values"] if not v.isdigit()}
    train_values = {v for q in splits["train"] for v in q["values"] if not v.isdigit()}
    assert len(held_values & train_values) >= 0.8 * len(held_values)


def test_the_teacher_errs_at_the_stated_rate_and_kinds_in_sft_only(tmp_path_factory):
    from rewardsql.demo.tiny import teacher

    example = build_example(tmp_path_factory.getbasetemp() / "tiny-full", scale="full")
    train = json.loads(example.train_json.read_text())
    sft = read_jsonl(example.sft_train)
    frame = pd.read_parquet(example.train_parquet)
    made: Counter[str] = Counter()
    caught: Counter[str] = Counter()
    for q, line, truth in zip(train, sft, frame["reward_model"], strict=True):
        assert line["messages"][-1]["content"] == q["demonstration"]  # SFT learns the teacher's
        assert truth["ground_truth"] == q["query"]  # rewards and labels get the right SQL
        miss = teacher.NEAR_MISSES.get(q["template"])
        if q["teacher_error"] is None:
            assert q["demonstration"] == q["query"]
            continue
        assert miss is not None and q["teacher_error"] == miss.kind
        assert q["demonstration"] == miss.apply(q["query"]) != q["query"]
        # a near-miss runs; an execution check catches it where it changes the result
        db = example.db_path(q["db_id"])
        caught[q["template"]] += _rows(db, q["demonstration"]) != _rows(db, q["query"])
        made[q["template"]] += 1
    planted = Counter(q["template"] for q in train if q["template"] in teacher.NEAR_MISSES)
    assert set(made) == set(teacher.NEAR_MISSES) and set(planted) == set(made)
    for template, n in planted.items():  # the stated rate, in every planted template
        assert made[template] == round(teacher.TEACHER_ERROR_RATE * n), (template, made, n)
        assert caught[template] >= 0.4 * made[template], (template, caught, made)
    assert example.teacher["errors"] == {teacher.NEAR_MISSES[t].kind: made[t] for t in made}
    assert example.teacher["error_rate"] == teacher.TEACHER_ERROR_RATE
    # dev's and rl's gold and SFT files are the teacher-free truth
    dev = json.loads(example.dev_json.read_text())
    assert all("demonstration" not in q for q in dev)
    assert [line["messages"][-1]["content"] for line in read_jsonl(example.sft_dev)] == \
        [q["query"] for q in dev]


def test_a_domain_out_of_questions_is_made_up_by_the_others(tmp_path_factory, monkeypatch):
    from rewardsql.demo.tiny import questions
    from rewardsql.demo.tiny.domains import DOMAINS

    example = quick_example(tmp_path_factory)
    conns = {d.db_id: sqlite3.connect(example.db_path(d.db_id)) for d in DOMAINS}

    def top_k_but_not_at_school(ctx):  # school has no question to give
        return None if ctx.domain.db_id == "school" else questions.top_k(ctx)

    monkeypatch.setattr(questions, "TEMPLATES", {"top_k": top_k_but_not_at_school})
    monkeypatch.setattr(questions, "DOMAIN_PATIENCE", 200)
    try:
        pairs = questions.generate_pairs(list(DOMAINS), conns, "train", 60, seed=0,
                                         exclude=set())
    finally:
        for conn in conns.values():
            conn.close()
    per_db = Counter(p.db_id for p in pairs)
    assert len(pairs) == len({p.question for p in pairs}) == 60
    assert "school" not in per_db and set(per_db) == {"shop", "library", "clinic"}
    assert all(n >= 15 for n in per_db.values())


def test_every_domain_out_of_questions_is_an_error(tmp_path_factory, monkeypatch):
    from rewardsql.demo.tiny import questions
    from rewardsql.demo.tiny.domains import DOMAINS

    example = quick_example(tmp_path_factory)
    conns = {d.db_id: sqlite3.connect(example.db_path(d.db_id)) for d in DOMAINS}
    monkeypatch.setattr(questions, "TEMPLATES", {"group_having": questions.group_having})
    monkeypatch.setattr(questions, "DOMAIN_PATIENCE", 200)
    try:
        with pytest.raises(RuntimeError, match="could not generate 1000 distinct train"):
            questions.generate_pairs(list(DOMAINS), conns, "train", 1000, seed=0,
                                     exclude=set())
    finally:
        for conn in conns.values():
            conn.close()


def test_databases_have_foreign_keys_and_a_few_hundred_rows(tmp_path_factory):
    example = quick_example(tmp_path_factory)
    for db_id in example.db_ids:
        db = example.db_path(db_id)
        assert db == example.db_root / db_id / f"{db_id}.sqlite"
        tables = [r[0] for r in _rows(db, "SELECT name FROM sqlite_master WHERE type='table'")]
        assert len(tables) >= 3
        fks = [fk for t in tables for fk in _rows(db, f"PRAGMA foreign_key_list({t})")]
        assert fks, db_id
        assert _rows(db, "PRAGMA foreign_key_check") == []
        total = sum(_rows(db, f"SELECT COUNT(*) FROM {t}")[0][0] for t in tables)
        assert 300 <= total <= 2000, (db_id, total)


def test_rl_parquet_is_in_verls_format(tmp_path_factory):
    example = quick_example(tmp_path_factory)
    questions = json.loads(example.train_json.read_text())
    frame = pd.read_parquet(example.train_parquet)
    assert list(frame.columns) == ["data_source", "prompt", "ability", "reward_model",
                                   "extra_info"]
    assert len(frame) == example.n_train
    schemas = {db: schema_ddl(example.db_path(db), sample_values=example.sample_values)
               for db in example.db_ids}
    for i in (0, 1, len(frame) - 1):
        row, q = frame.iloc[i], questions[i]
        assert row["data_source"] == DATA_SOURCE and row["ability"] == "text2sql"
        assert [dict(m) for m in row["prompt"]] == build_messages(schemas[q["db_id"]],
                                                                  q["question"])
        assert dict(row["reward_model"]) == {"style": "rule", "ground_truth": q["query"]}
        assert dict(row["extra_info"]) == {
            "db_id": q["db_id"], "question_id": q["question_id"],
            "db_root": str(example.db_root), "split": "train", "index": i}
    ids = {e["question_id"] for e in frame["extra_info"]}
    for split, path in (("rl", example.rl_parquet), ("dev", example.dev_parquet)):
        held = pd.read_parquet(path)
        assert set(held["extra_info"].map(lambda e: e["split"])) == {split}
        ids |= {e["question_id"] for e in held["extra_info"]}
    assert len(ids) == example.n_train + example.n_rl + example.n_dev


def test_sft_dev_pairs_the_prompt_with_the_gold_cocte(tmp_path_factory):
    example = quick_example(tmp_path_factory)
    lines = read_jsonl(example.sft_dev)
    frame = pd.read_parquet(example.dev_parquet)
    assert len(lines) == example.n_dev
    for line, (_, row) in zip(lines, frame.iterrows(), strict=True):
        *prompt, answer = line["messages"]
        assert prompt == [dict(m) for m in row["prompt"]]
        assert answer == {"role": "assistant", "content": row["reward_model"]["ground_truth"]}
    corpus = list(example.corpus())
    assert len(corpus) == 3 * example.n_train  # system, user, assistant: train only
    # every quoted value is blanked, and only that: the questions and SQL are otherwise intact
    assert not any(re.search(r"'[^']+'", text) for text in corpus)
    assert sum("''" in text for text in corpus) >= example.n_train  # most questions name a value
    assert any("WITH " in text and " FROM " in text for text in corpus)


def test_no_value_is_a_word_of_the_tokenizer(tmp_path_factory):
    # the tokenizer learned no value as a word, so train values are spelled in pieces just like
    # the dev values it never saw (with values in its corpus, ~100 train words were one token)
    from transformers import AutoTokenizer

    example = quick_example(tmp_path_factory)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model(tmp_path_factory))
    for questions in (example.train_json, example.dev_json):
        words = {w for q in json.loads(questions.read_text()) for v in q["values"]
                 if isinstance(v, str) for w in v.split() if not w.isdigit()}
        assert len(words) > 20, questions
        whole = sorted(w for w in words if len(tokenizer.encode(w)) == 1)
        assert not whole, f"{questions.name}: {whole}"


def test_unknown_scale_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="scale must be one of"):
        build_example(tmp_path, scale="huge")
