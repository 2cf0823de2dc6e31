"""``rewardsql data prepare`` on Spider- and BIRD-format fixtures with real SQLite databases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from _train_helpers import SPIDER_QUESTIONS, build_databases, build_spider_fixture
from rewardsql.cli import app
from rewardsql_sql_reward.data.prepare import split_rows
from rewardsql_sql_reward.data.prompts import SYSTEM_PROMPT, schema_ddl
from typer.testing import CliRunner

runner = CliRunner()


def prepare(*args: str) -> Any:
    return runner.invoke(app, ["data", "prepare", *args])


def read(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def spider(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_spider_fixture(tmp_path_factory.mktemp("spider"))


def test_spider_to_verl_parquet(spider: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "train.parquet"
    result = prepare("--format", "spider", "--input", str(spider["questions"]),
                     "--db-root", str(spider["db_root"]), "--output", str(out))
    assert result.exit_code == 0, result.output
    rows = read(out)
    # 8 questions: world_1's database is missing (left out, reported); the broken gold is kept
    assert len(rows) == 7
    assert "left out 1 questions whose database is missing: world_1 (1)" in result.output
    assert "1 gold queries failed (kept): error 1" in result.output
    assert "question 6 (pets_1): error:" in result.output and "no_such_column" in result.output

    kept = [q for q in SPIDER_QUESTIONS if q["db_id"] != "world_1"]
    for index, (row, question) in enumerate(zip(rows, kept, strict=True)):
        assert row["data_source"] == "spider"
        assert row["reward_model"]["ground_truth"] == question["query"]
        info = row["extra_info"]
        assert info["db_id"] == question["db_id"]
        assert info["question_id"] == index  # Spider has no ids: the position in the file
        assert Path(info["db_root"]) == spider["db_root"].resolve()
        system, user = row["prompt"]
        assert system == {"role": "system", "content": SYSTEM_PROMPT}
        assert user["role"] == "user"
        schema = schema_ddl(spider["db_root"] / question["db_id"] / f"{question['db_id']}.sqlite")
        assert schema in user["content"] and question["question"] in user["content"]
        assert "CREATE TABLE" in user["content"] and "examples:" in user["content"]
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file


def test_val_split_is_seeded_and_disjoint(spider: dict[str, Path], tmp_path: Path) -> None:
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run / "train.parquet"
        result = prepare("--format", "spider", "--input", str(spider["questions"]),
                         "--db-root", str(spider["db_root"]), "--output", str(out),
                         "--val-fraction", "0.3", "--seed", "7")
        assert result.exit_code == 0, result.output
        outputs.append((read(out), read(out.with_name("val.parquet"))))
    (train_a, val_a), (train_b, val_b) = outputs
    assert (train_a, val_a) == (train_b, val_b)
    assert len(val_a) == 2 and len(train_a) == 5  # round(7 * 0.3)
    ids = [r["extra_info"]["index"] for r in train_a + val_a]
    assert sorted(ids) == sorted(set(ids))
    assert {r["extra_info"]["split"] for r in val_a} == {"val"}
    assert {r["extra_info"]["split"] for r in train_a} == {"train"}


def test_split_depends_on_the_seed() -> None:
    rows = [{"i": i} for i in range(50)]
    splits = {tuple(r["i"] for r in split_rows(rows, 0.2, seed)[1]) for seed in range(5)}
    assert len(splits) > 1
    train, val = split_rows(rows, 0.2, 0)
    assert len(val) == 10 and len(train) == 40


def test_drop_failing_gold(spider: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "train.parquet"
    result = prepare("--format", "spider", "--input", str(spider["questions"]),
                     "--db-root", str(spider["db_root"]), "--output", str(out),
                     "--drop-failing-gold")
    assert result.exit_code == 0, result.output
    assert len(read(out)) == 6
    assert "1 gold queries failed (left out)" in result.output


def test_tables_json_limits_the_databases(spider: dict[str, Path], tmp_path: Path) -> None:
    tables = tmp_path / "tables.json"
    tables.write_text(json.dumps([{"db_id": "concert_singer"}]))
    out = tmp_path / "train.parquet"
    result = prepare("--format", "spider", "--input", str(spider["questions"]),
                     "--db-root", str(spider["db_root"]), "--output", str(out),
                     "--tables", str(tables))
    assert result.exit_code == 0, result.output
    assert {r["extra_info"]["db_id"] for r in read(out)} == {"concert_singer"}
    assert "pets_1 (4)" in result.output and "world_1 (1)" in result.output


def test_bird_format_uses_sql_evidence_and_question_ids(tmp_path: Path) -> None:
    db_root = build_databases(tmp_path / "dev_databases")
    questions = [
        {"question_id": 101, "db_id": "concert_singer", "question": "Oldest singer?",
         "evidence": "oldest refers to MAX(age)",
         "SQL": "SELECT name FROM singer ORDER BY age DESC LIMIT 1", "difficulty": "simple"},
        {"question_id": 102, "db_id": "pets_1", "question": "How many pets?", "evidence": "",
         "SQL": "SELECT count(*) FROM pets", "difficulty": "simple"},
    ]
    source = tmp_path / "dev.json"
    source.write_text(json.dumps(questions))
    out = tmp_path / "bird.parquet"
    result = prepare("--format", "bird", "--input", str(source), "--db-root", str(db_root),
                     "--output", str(out))
    assert result.exit_code == 0, result.output
    rows = read(out)
    assert [r["extra_info"]["question_id"] for r in rows] == [101, 102]
    assert [r["data_source"] for r in rows] == ["bird", "bird"]
    assert rows[0]["reward_model"]["ground_truth"] == questions[0]["SQL"]
    assert "Hint: oldest refers to MAX(age)" in rows[0]["prompt"][1]["content"]
    assert "Hint:" not in rows[1]["prompt"][1]["content"]
    assert "failed" not in result.output


def test_wrong_format_says_which_one_it_looks_like(spider: dict[str, Path],
                                                   tmp_path: Path) -> None:
    result = prepare("--format", "bird", "--input", str(spider["questions"]),
                     "--db-root", str(spider["db_root"]), "--output",
                     str(tmp_path / "x.parquet"))
    assert result.exit_code == 2  # a usage error: the input is not in that format
    assert "missing or empty 'SQL'" in result.output and "--format spider" in result.output
    assert not (tmp_path / "x.parquet").exists()


def test_missing_db_root_and_bad_fraction(spider: dict[str, Path], tmp_path: Path) -> None:
    base = ["--format", "spider", "--input", str(spider["questions"]),
            "--output", str(tmp_path / "x.parquet")]
    result = prepare(*base, "--db-root", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "nowhere" in result.output
    result = prepare(*base, "--db-root", str(spider["db_root"]), "--val-fraction", "1.5")
    assert result.exit_code == 2 and "--val-fraction" in result.output


def test_nothing_to_write_is_an_error(tmp_path: Path) -> None:
    db_root = tmp_path / "db"
    db_root.mkdir()
    source = tmp_path / "q.json"
    source.write_text(json.dumps(SPIDER_QUESTIONS[:2]))
    result = prepare("--format", "spider", "--input", str(source), "--db-root", str(db_root),
                     "--output", str(tmp_path / "x.parquet"))
    assert result.exit_code == 1
    assert "concert_singer (2)" in result.output
    assert "no question could be prepared" in result.output


def test_a_db_id_outside_the_root_is_a_missing_database(tmp_path: Path) -> None:
    """A downloaded question file names its databases: '../outside' must not read a database
    beside db_root (the old join, db_root/../outside/../outside.sqlite, reached it)."""
    import shutil

    db_root = build_databases(tmp_path / "dev_databases")
    shutil.copy(db_root / "pets_1" / "pets_1.sqlite", tmp_path / "outside.sqlite")
    (tmp_path / "outside").mkdir()
    questions = [
        {"question_id": 1, "db_id": "pets_1", "question": "How many pets?", "evidence": "",
         "SQL": "SELECT count(*) FROM pets", "difficulty": "simple"},
        {"question_id": 2, "db_id": "../outside", "question": "How many pets?", "evidence": "",
         "SQL": "SELECT count(*) FROM pets", "difficulty": "simple"},
    ]
    source = tmp_path / "dev.json"
    source.write_text(json.dumps(questions))
    out = tmp_path / "bird.parquet"
    result = prepare("--format", "bird", "--input", str(source), "--db-root", str(db_root),
                     "--output", str(out))
    assert result.exit_code == 0, result.output
    assert [r["extra_info"]["db_id"] for r in read(out)] == ["pets_1"]
    assert "../outside (1)" in result.output


def _model_dir(root: Path, texts: list[str], positions: int) -> Path:
    """A tiny model directory: a tokenizer trained on ``texts`` with the bundled tiny model's
    recipe (its chat template included) and a one-layer Qwen2 with ``positions`` positions."""
    from rewardsql.demo.tiny.model import train_tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = root / f"model-{positions}"
    tokenizer = train_tokenizer(texts, vocab_size=400)
    tokenizer.save_pretrained(out)
    Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=positions)).save_pretrained(out)
    return out


def test_model_counts_the_prompts_that_do_not_fit(spider: dict[str, Path],
                                                  tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    args = ["--format", "spider", "--input", str(spider["questions"]),
            "--db-root", str(spider["db_root"])]
    plain = tmp_path / "plain.parquet"
    assert prepare(*args, "--output", str(plain)).exit_code == 0
    rows = read(plain)
    texts = [m["content"] for r in rows for m in r["prompt"]]
    # the model's context: the middle prompt's length, so some prompts fit and some do not
    probe = AutoTokenizer.from_pretrained(_model_dir(tmp_path, texts, 10_000))
    lengths = sorted(len(probe.apply_chat_template(r["prompt"], add_generation_prompt=True,
                                                   tokenize=True, return_dict=False))
                     for r in rows)
    limit = lengths[len(lengths) // 2]
    too_long = sum(n > limit for n in lengths)
    assert 0 < too_long < len(rows)
    model = _model_dir(tmp_path, texts, limit)

    out = tmp_path / "train.parquet"
    result = prepare(*args, "--output", str(out), "--model", str(model))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {too_long} of {len(rows)} prompts do not fit {model}'s {limit} positions "
        f"(the longest has {lengths[-1]} tokens): lower --sample-values, or give training a "
        "model with a longer context"]
    assert read(out) == rows  # a warning: everything is written as without --model

    roomy = _model_dir(tmp_path, texts, 10_000)
    result = prepare(*args, "--output", str(out), "--model", str(roomy))
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    assert (f"prompts: the longest has {lengths[-1]} tokens, within {roomy}'s 10000 positions"
            in result.stdout)


def test_model_that_is_no_model_directory_is_a_one_line_error(spider: dict[str, Path],
                                                              tmp_path: Path) -> None:
    out = tmp_path / "train.parquet"
    empty = tmp_path / "empty"
    empty.mkdir()
    for model, why in ((tmp_path / "nowhere", "not a directory"),
                       (empty, "cannot load its tokenizer")):
        result = prepare("--format", "spider", "--input", str(spider["questions"]),
                         "--db-root", str(spider["db_root"]), "--output", str(out),
                         "--model", str(model))
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: --model: {model}: {why}")
        assert not out.exists()  # checked before any gold query runs
