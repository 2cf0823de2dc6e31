"""Fixtures for the training and data tests: SQLite databases, prepared parquet, configs."""

from __future__ import annotations

import json
import random
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHIPPED_GRPO = REPO / "examples" / "rewardsql" / "verl" / "grpo_trainer.yaml"
SHIPPED_GRPO_PRM = REPO / "examples" / "rewardsql" / "verl" / "grpo_prm.yaml"
SHIPPED_RM = REPO / "examples" / "rewardsql" / "rm_config.json"

#: A config in the shape of the RewardSQL seed's grpo_trainer.yaml (written for an older verl
#: fork): every key the seed used that moved or went away in verl 0.9.1 is here, and its batch
#: sizes as published: a mini-batch of 64 prompts in batches of 48, which the fork ran as one
#: update per step and verl 0.9.1 refuses as it is (the launcher translates it).
SEED_STYLE_YAML = """\
data:
  tokenizer: null
  train_files: ./dataset/train.parquet
  val_files: ./dataset/test.parquet
  prompt_key: prompt
  max_prompt_length: 4096
  max_response_length: 512
  train_batch_size: 48
  val_batch_size: null
  return_raw_input_ids: true
  return_raw_chat: true
  shuffle: false
  filter_overlong_prompts: true
  truncation: error
data_logger:
  enable: true
  log_frequency: 1
actor_rollout_ref:
  hybrid_engine: true
  model:
    path: ./checkpoints/cocte_model
    external_lib: null
    override_config: {}
    enable_gradient_checkpointing: false
    use_remove_padding: false
  actor:
    strategy: fsdp
    ppo_mini_batch_size: 64
    ppo_micro_batch_size: 8
    ppo_micro_batch_size_per_gpu: null
    use_dynamic_bsz: false
    ppo_max_token_len_per_gpu: 16384
    grad_clip: 1.0
    clip_ratio: 0.2
    entropy_coeff: 0.001
    use_kl_loss: true
    kl_loss_coef: 0.001
    kl_loss_type: low_var_kl
    ppo_epochs: 1
    shuffle: false
    ulysses_sequence_parallel_size: 1
    optim:
      lr: 1e-6
      lr_warmup_steps_ratio: 0.
      min_lr_ratio: null
      warmup_style: constant
      total_training_steps: -1
    fsdp_config:
      wrap_policy:
        min_num_params: 0
      param_offload: true
      optimizer_offload: true
      fsdp_size: -1
  ref:
    fsdp_config:
      param_offload: true
      wrap_policy:
        min_num_params: 0
    log_prob_micro_batch_size: 64
    log_prob_micro_batch_size_per_gpu: null
    log_prob_use_dynamic_bsz: ${actor_rollout_ref.actor.use_dynamic_bsz}
    log_prob_max_token_len_per_gpu: ${actor_rollout_ref.actor.ppo_max_token_len_per_gpu}
    ulysses_sequence_parallel_size: ${actor_rollout_ref.actor.ulysses_sequence_parallel_size}
  rollout:
    name: vllm
    temperature: 1.0
    top_k: -1
    top_p: 1
    use_fire_sampling: false
    prompt_length: ${data.max_prompt_length}
    response_length: ${data.max_response_length}
    dtype: bfloat16
    gpu_memory_utilization: 0.5
    ignore_eos: false
    enforce_eager: true
    free_cache_engine: true
    load_format: dummy_dtensor
    tensor_model_parallel_size: 1
    max_num_batched_tokens: 30000
    max_model_len: null
    max_num_seqs: 1024
    log_prob_micro_batch_size: 64
    log_prob_micro_batch_size_per_gpu: null
    disable_log_stats: true
    enable_chunked_prefill: true
    do_sample: true
    n: 8
critic:
  strategy: fsdp
  optim:
    lr: 1e-5
    warmup_style: constant
  model:
    path: ./checkpoints/cocte_model
    tokenizer_path: ${actor_rollout_ref.model.path}
    fsdp_config:
      param_offload: true
      optimizer_offload: true
  ppo_micro_batch_size: 8
  cliprange_value: 0.5
reward_model:
  enable: false
  strategy: fsdp
  model:
    input_tokenizer: ${actor_rollout_ref.model.path}
    path: ./checkpoints/prm_model
    use_remove_padding: false
  micro_batch_size: 8
  max_length: null
  reward_manager: custom
  rm_coef: 0.0
  enable_EXreward: true
  port: 5887
  candidate_tokens: [488, 481]
  step_tag_id: 7587
verifier:
  type: prime
  reward_coef: 1.0
  port: 5887
  timeout: 20
custom_reward_function:
  path: null
algorithm:
  gamma: 1.0
  lam: 1.0
  adv_estimator: grpo
  kl_penalty: kl
  kl_ctrl:
    type: fixed
    kl_coef: 0.001
trainer:
  total_epochs: 3
  project_name: your_project_name
  experiment_name: your_experiment_name
  logger: ['console']
  val_before_train: false
  val_generations_to_log_to_wandb: 10
  nnodes: 1
  n_gpus_per_node: 8
  save_freq: 30
  resume_mode: auto
  test_freq: 30
  critic_warmup: 0
  default_hdfs_dir: null
  remove_previous_ckpt_in_save: false
  del_local_ckpt_after_load: false
  default_local_dir: /your/save/path
"""

#: Two small Spider-style databases: (db_id, DDL statements, rows per table).
DATABASES: dict[str, tuple[list[str], dict[str, list[tuple[Any, ...]]]]] = {
    "concert_singer": (
        [
            "CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, "
            "age INTEGER)",
            "CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name TEXT, "
            "year INTEGER, singer_id INTEGER REFERENCES singer(singer_id))",
        ],
        {
            "singer": [(1, "Joe Sharp", "Netherlands", 52), (2, "Timbaland", "United States", 32),
                       (3, "Justin Brown", "France", 29), (4, "Rose White", "France", 41)],
            "concert": [(1, "Auditions", 2014, 1), (2, "Super bootcamp", 2014, 2),
                        (3, "Home Visits", 2015, 2)],
        },
    ),
    "pets_1": (
        [
            "CREATE TABLE student (stuid INTEGER PRIMARY KEY, lname TEXT, age INTEGER)",
            "CREATE TABLE pets (petid INTEGER PRIMARY KEY, pettype TEXT, weight REAL, "
            "owner INTEGER REFERENCES student(stuid))",
        ],
        {
            "student": [(1001, "Smith", 18), (1002, "Kim", 19), (1003, "Jones", 21)],
            "pets": [(2001, "cat", 12.0, 1001), (2002, "dog", 13.4, 1002),
                     (2003, "dog", 9.3, 1002)],
        },
    ),
}

#: Spider-format questions over DATABASES; one names a database that does not exist and one
#: has a gold query that fails.
SPIDER_QUESTIONS: list[dict[str, Any]] = [
    {"db_id": "concert_singer", "question": "How many singers do we have?",
     "query": "SELECT count(*) FROM singer"},
    {"db_id": "concert_singer", "question": "Names of singers from France?",
     "query": "SELECT name FROM singer WHERE country = 'France'"},
    {"db_id": "concert_singer", "question": "How many concerts were in 2014?",
     "query": "SELECT count(*) FROM concert WHERE year = 2014"},
    {"db_id": "pets_1", "question": "How many dogs are there?",
     "query": "SELECT count(*) FROM pets WHERE pettype = 'dog'"},
    {"db_id": "pets_1", "question": "Average weight of each pet type?",
     "query": "SELECT pettype, avg(weight) FROM pets GROUP BY pettype"},
    {"db_id": "pets_1", "question": "Last names of students older than 18?",
     "query": "SELECT lname FROM student WHERE age > 18"},
    {"db_id": "pets_1", "question": "Broken gold query?",
     "query": "SELECT no_such_column FROM pets"},
    {"db_id": "world_1", "question": "How many countries are there?",
     "query": "SELECT count(*) FROM country"},
]


def build_databases(db_root: Path) -> Path:
    """Create DATABASES under ``db_root`` in the Spider layout; return ``db_root``."""
    for db_id, (ddl, rows) in DATABASES.items():
        folder = db_root / db_id
        folder.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(folder / f"{db_id}.sqlite")
        with conn:
            for statement in ddl:
                conn.execute(statement)
            for table, values in rows.items():
                marks = ", ".join("?" * len(values[0]))
                conn.executemany(f"INSERT INTO {table} VALUES ({marks})", values)
        conn.close()
    return db_root


def build_spider_fixture(root: Path) -> dict[str, Path]:
    """Databases, questions (Spider ``query`` key) and a tables.json under ``root``."""
    db_root = build_databases(root / "database")
    questions = root / "train_spider.json"
    questions.write_text(json.dumps(SPIDER_QUESTIONS, indent=1))
    tables = root / "tables.json"
    tables.write_text(json.dumps([{"db_id": db, "table_names_original": list(rows)}
                                  for db, (_, rows) in DATABASES.items()] + [{"db_id": "world_1"}]))
    return {"db_root": db_root, "questions": questions, "tables": tables}


def write_prepared_parquet(folder: Path, db_root: Path, n_train: int = 48,
                           n_val: int = 4) -> Path:
    """``train.parquet`` and ``val.parquet`` in the prepared layout, written by the data
    module's own writer (without executing SQL, so the training tests need no verifier)."""
    from rewardsql_sql_reward.data.prepare import write_parquet
    from rewardsql_sql_reward.data.prompts import build_messages, schema_ddl

    schema = schema_ddl(db_root / "pets_1" / "pets_1.sqlite")

    def row(i: int) -> dict[str, Any]:
        return {
            "data_source": "spider",
            "prompt": build_messages(schema, f"How many pets weigh over {i}?"),
            "ability": "text2sql",
            "reward_model": {"style": "rule",
                             "ground_truth": f"SELECT count(*) FROM pets WHERE weight > {i}"},
            "extra_info": {"db_id": "pets_1", "question_id": i, "db_root": str(db_root),
                           "index": i, "split": "train"},
        }

    write_parquet(folder / "train.parquet", [row(i) for i in range(n_train)])
    write_parquet(folder / "val.parquet", [row(i) for i in range(n_val)])
    return folder


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m rewardsql *args`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "rewardsql", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


PRM_PROMPT = "<|im_start|>user\nList the products.<|im_end|>\n<|im_start|>assistant\n"


def prm_records(n: int, seed: int) -> list[dict]:
    """Chains whose bad steps end in "AND 0)" (an always-empty filter); every step after the
    first bad one is "-", as automatic labels are."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(1, 3)
        bad_at = rng.choice([*range(k + 1), k + 1])  # k + 1: no bad step
        steps, labels = [], []
        for i in range(k + 1):
            price = rng.randint(1, 90)
            cond = f"price > {price}" + (" AND 0" if i == bad_at else "")
            steps.append(f"WITH s{i} AS (SELECT name FROM products WHERE {cond})" if i < k
                         else f"SELECT name FROM s{i - 1} WHERE {cond}")
            labels.append("-" if i >= bad_at else "+")
        soft = [0.0 if lab == "-" else round(rng.uniform(0.5, 1.0), 3) for lab in labels]
        out.append({"prompt": PRM_PROMPT, "steps": steps, "annotated_steps": steps,
                    "labels": labels, "soft_labels": soft,
                    "settings": {"result_rows": 50, "result_chars": 500}})
    return out


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str,
              limit: float = 240) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it ends or ``limit`` passes first."""
    import time

    import pytest

    end = time.monotonic() + limit
    while time.monotonic() < end:
        if ready():
            proc.kill()
            proc.wait()
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (code {proc.returncode}) before {what}: "
                        f"{proc.stderr.read()[-2000:] if proc.stderr else ''}")
        time.sleep(0.002)
    proc.kill()
    pytest.fail(f"no {what} within {limit} s")


def free_port() -> int:
    """A TCP port nothing listens on now (for a server a test starts, or a URL that must refuse)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
