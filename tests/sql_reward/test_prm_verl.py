"""``sql_prm`` on verl 0.9.1's dense-reward path, with verl's real classes on the CPU: the
manager loaded by verl's ``load_reward_manager`` (with the keyword arguments verl hands it), driven
by ``RewardLoopWorker.compute_score_batch`` on a real DataProto, and the (B, T) ``rm_scores``
built by the adapter's ``assemble_rm_scores``, as ``RewardLoopManager.compute_rm_score`` does.

verl's Ray trainer itself (2 GRPO steps on the reward-model path) needs vLLM, which is not in
the main test environment: that run belongs to the verl-on-CPU harness (nox session verl_cpu).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _tiny_helpers import tiny_model

pytest.importorskip("verl")

from omegaconf import OmegaConf
from rewardsql import reward_placeholder
from transformers import AutoTokenizer

GOLD = "SELECT COUNT(*) FROM shop"
RESPONSES = ["WITH a AS (SELECT id FROM shop) и SELECT COUNT(*) FROM a;",
             "WITH a AS (SELECT id FROM shop WHERE id > 2) и SELECT COUNT(*) FROM a;"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    model = tiny_model(tmp_path_factory)
    root = tmp_path_factory.mktemp("prm-verl-dbs")
    (root / "shop").mkdir()
    with sqlite3.connect(root / "shop" / "shop.sqlite") as con:
        con.execute("CREATE TABLE shop (id INTEGER PRIMARY KEY, name TEXT)")
        con.executemany("INSERT INTO shop VALUES (?, ?)", [(i, f"s{i}") for i in range(1, 6)])
    return model, root, AutoTokenizer.from_pretrained(model)


def _config(model, root, process=0.5, enable=True, scoring="in_process"):
    return OmegaConf.create({
        "reward": {
            "reward_manager": {"source": "register", "name": "sql_prm"},
            "custom_reward_function": {"path": reward_placeholder.__file__,
                                       "name": reward_placeholder.NAME},
            "reward_model": {"enable": enable, "enable_resource_pool": False,
                             "model_path": str(model)},
        },
        "rewardsql": {"reward_manager": {"prm_path": str(model), "device": "cpu",
                                         "prm_scoring": scoring,
                                         "verifier": {"db_root": str(root), "workers": 1}},
                      "reward_weights": {"process": process, "outcome": 1.0}},
    })


def _batch(tokenizer, prompt, responses, width=32):
    from verl import DataProto

    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    n = len(responses)
    prompts = torch.full((n, len(prompt_ids)), tokenizer.pad_token_id or 0)
    prompts[:] = torch.tensor(prompt_ids)
    out = torch.full((n, width), tokenizer.pad_token_id or 0)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, text in enumerate(responses):
        ids = tokenizer.encode(text, add_special_tokens=False)
        out[i, :len(ids)] = torch.tensor(ids)
        mask[i, :len(ids)] = 1
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": out,
                 "input_ids": torch.cat([prompts, out], 1),
                 "attention_mask": torch.cat([torch.ones_like(prompts), mask], 1)},
        non_tensors={"data_source": np.array(["spider"] * n, dtype=object),
                     "reward_model": np.array([{"ground_truth": GOLD}] * n, dtype=object),
                     "extra_info": np.array([{"db_id": "shop"}] * n, dtype=object)})


def _score(config, tokenizer, data):
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls

    manager = load_reward_manager(config, tokenizer, reward_router_address="127.0.0.1:1",
                                  reward_model_tokenizer=tokenizer)
    worker = SimpleNamespace(config=config, reward_manager=manager)
    worker.compute_score = functools.partial(RewardLoopWorker.compute_score, worker)
    try:
        outputs = asyncio.run(RewardLoopWorker.compute_score_batch(worker, data))
    finally:
        manager.manager.close()
    return resolve_reward_manager_cls(config), manager, outputs


def test_dense_scores_through_verls_reward_loop(parts):
    model, root, tokenizer = parts
    data = _batch(tokenizer, "how many shops?", RESPONSES)
    cls, manager, outputs = _score(_config(model, root), tokenizer, data)
    assert manager.manager.compute_score is None  # the placeholder is not handed on
    rm = cls.assemble_rm_scores(data, [o["reward_score"] for o in outputs])
    assert rm.shape == data.batch["responses"].shape
    tag = tokenizer.encode(" и ", add_special_tokens=False)[0]
    for i, text in enumerate(RESPONSES):
        ids = tokenizer.encode(text, add_special_tokens=False)
        row = rm[i]
        assert row[len(ids):].abs().sum() == 0  # nothing on padding
        outcome = 1.0 if i == 0 else 0.0
        ends = [ids.index(tag) - 1, len(ids) - 1]  # the two steps' last tokens
        step_scores = row[ends] - outcome
        assert ((step_scores > 0) & (step_scores < 0.5)).all()  # 0.5 x P(+)
        assert (row.nonzero().numel() > 1)  # dense: more than one non-zero position
    info = [o["reward_extra_info"] for o in outputs]
    assert [x["acc"] for x in info] == [1.0, 0.0]
    # verl turns every extra into a numpy array: numeric scalars only
    assert all(np.array([x[k] for x in info]).dtype.kind in "fiu" for k in info[0])


def test_the_reward_model_server_is_the_default_and_a_dead_one_is_one_line(parts):
    # verl hands every manager its reward-model server's address: sql_prm scores there unless
    # told prm_scoring=in_process (here no server runs at the address: the error names it)
    model, root, tokenizer = parts
    data = _batch(tokenizer, "how many shops?", RESPONSES[:1])
    with pytest.raises(Exception, match=r"the PRM server at http://127\.0\.0\.1:1 does not "
                                        r"answer: .*refused") as info:
        _score(_config(model, root, scoring="auto"), tokenizer, data)
    assert "\n" not in str(info.value)


def test_in_process_scoring_reports_the_model_it_loaded(parts):
    model, root, tokenizer = parts
    data = _batch(tokenizer, "how many shops?", RESPONSES[:1])
    _, _, outputs = _score(_config(model, root), tokenizer, data)
    assert outputs[0]["reward_extra_info"]["prm_models_loaded"] >= 1


def test_dense_scores_are_refused_off_the_reward_model_path(parts):
    model, root, tokenizer = parts
    config = _config(model, root, enable=False)  # verl would not call assemble_rm_scores
    data = _batch(tokenizer, "how many shops?", RESPONSES[:1])
    with pytest.raises(ValueError, match="colocated reward-model path"):
        _score(config, tokenizer, data)
