"""The ``sql_prm`` reward manager on real parts: the tiny tokenizer as the policy's, the tiny
model as an (untrained) PRM (" и ", "+" and "-" are single tokens of its tokenizer), and a real
SQLite database behind the real verifier."""

from __future__ import annotations

import numbers
import sqlite3

import pytest
from _tiny_helpers import tiny_model
from rewardsql import RewardRequest
from rewardsql.errors import ConfigError
from rewardsql.rewards import validate_results
from rewardsql.section import RewardWeights
from rewardsql.training.prm import PRMScorer
from rewardsql_sql_reward.rewards.annotate import build_prm_inputs
from rewardsql_sql_reward.rewards.prm_manager import SQLPRMManager, step_end_tokens
from transformers import AutoTokenizer

PROMPT = "Question: how many shops are there?"
GOLD = "SELECT COUNT(*) FROM shop"
# two steps separated by a blank line; the tiny tokenizer merges "),\n\n" into one token
MERGED = "WITH a AS (SELECT id FROM shop),\n\nSELECT COUNT(*) FROM a;"
TAGGED = "WITH a AS (SELECT id FROM shop) и SELECT COUNT(*) FROM a;"
WRONG = "WITH a AS (SELECT id FROM shop WHERE id > 1) и SELECT COUNT(*) FROM a;"
ONE_STEP = "SELECT COUNT(*) FROM shop;"


@pytest.fixture(scope="module")
def prm_path(tmp_path_factory):
    return str(tiny_model(tmp_path_factory))


@pytest.fixture(scope="module")
def tokenizer(prm_path):
    return AutoTokenizer.from_pretrained(prm_path)


@pytest.fixture(scope="module")
def db_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("prm-dbs")
    (root / "shop").mkdir()
    with sqlite3.connect(root / "shop" / "shop.sqlite") as con:
        con.execute("CREATE TABLE shop (id INTEGER PRIMARY KEY, name TEXT)")
        con.executemany("INSERT INTO shop VALUES (?, ?)", [(i, f"s{i}") for i in range(1, 6)])
    return root


def _request(tokenizer, response, db_id="shop"):
    ids = tokenizer.encode(response, add_special_tokens=False)
    return RewardRequest(response=tokenizer.decode(ids, skip_special_tokens=True),
                         ground_truth=GOLD, extra_info={"db_id": db_id} if db_id else {},
                         prompt=PROMPT, response_token_ids=tuple(ids))


def _manager(prm_path, tokenizer, db_root, **settings):
    config = SQLPRMManager.settings_for_weights(
        {"prm_path": prm_path, "device": "cpu", "batch_size": 2,
         "verifier": {"db_root": str(db_root), "workers": 1, "timeout": 5.0,
                      "max_infra_error_fraction": 0.5}, **settings},
        RewardWeights(process=0.5, outcome=1.0))
    return SQLPRMManager(config, tokenizer=tokenizer)


def test_step_ends_map_to_the_policy_token_across_a_bpe_merge(tokenizer):
    ids = tokenizer.encode(MERGED, add_special_tokens=False)
    ends = step_end_tokens(tokenizer, ids, ["WITH a AS (SELECT id FROM shop),",
                                            "SELECT COUNT(*) FROM a;"])
    assert tokenizer.decode([ids[ends[0]]]) == "),\n\n"  # the step's "," and the separator
    assert ends == [ids.index(ids[ends[0]]), len(ids) - 1]
    assert not tokenizer.decode(ids[:ends[0]]).endswith(",")  # one token earlier is too short
    # a step that is not in the response's text is not located (no guessing)
    assert step_end_tokens(tokenizer, ids, ["SELECT name FROM shop"]) is None


def test_step_ends_with_multibyte_text(tokenizer):
    steps = ["WITH a AS (SELECT id FROM shop WHERE name = 'é')", "SELECT COUNT(*) FROM a;"]
    ids = tokenizer.encode(" и ".join(steps), add_special_tokens=False)
    ends = step_end_tokens(tokenizer, ids, steps)
    assert tokenizer.decode(ids[:ends[0] + 1]).startswith(steps[0])
    assert not tokenizer.decode(ids[:ends[0]]).startswith(steps[0])
    assert ends[1] == len(ids) - 1


def test_dense_rewards_at_step_ends(prm_path, tokenizer, db_root):
    requests = [_request(tokenizer, r) for r in (TAGGED, WRONG, ONE_STEP, MERGED)]
    requests.append(_request(tokenizer, TAGGED, db_id=None))
    with _manager(prm_path, tokenizer, db_root) as manager:
        results = validate_results(manager.score_batch(requests), requests)
        inputs = build_prm_inputs([(PROMPT, r.response, r.extra_info["db_id"])
                                   for r in requests[:4]], manager.outcome.verifier,
                                  manager.annotation)
    reference = PRMScorer(prm_path, device="cpu").score_many(
        [(PROMPT, item.annotated_steps) for item in inputs])
    assert [len(item.steps) for item in inputs] == [2, 2, 1, 2]  # no separator: one step
    assert "<result>" in inputs[0].annotated_steps[0]  # the PRM reads executed steps
    for request, result, scores, outcome in zip(requests, results, reference, (1, 0, 1, 0),
                                                strict=False):
        ids = list(request.response_token_ids)
        ends = step_end_tokens(tokenizer, ids, inputs[requests.index(request)].steps)
        expected = [1.0 * outcome] * len(ids)  # outcome on every token beside a PRM
        for end, score in zip(ends, scores, strict=True):
            expected[end] += 0.5 * score
        assert result.token_rewards == pytest.approx(expected, abs=1e-5), result.extra
        assert result.extra["acc"] == outcome and result.extra["prm_status_ok"] == 1
        assert result.extra["prm_steps"] == result.extra["prm_reward_tokens"] == len(scores)
        if len(ends) > 1:  # dense: more than one distinct value
            assert len({round(v, 6) for v in result.token_rewards}) > 1
    # the sample without a database: the verifier's infra error and a recorded PRM status
    last = results[-1]
    assert last.extra["prm_status_no_database"] == 1 and last.extra["status_infra_error"] == 1
    assert set(last.token_rewards) == {0.0}
    for result in results:
        assert all(isinstance(v, numbers.Real) for v in result.extra.values())
        assert result.extra["prm_seconds"] == results[0].extra["prm_seconds"] > 0


def test_fill_and_last_token_placements(prm_path, tokenizer, db_root):
    request = _request(tokenizer, TAGGED)
    with _manager(prm_path, tokenizer, db_root, process_placement="fill",
                  outcome_placement="last_token") as manager:
        (result,) = manager.score_batch([request])
    ids = list(request.response_token_ids)
    tag = ids.index(tokenizer.encode(" и ", add_special_tokens=False)[0])
    rewards = result.token_rewards
    assert len(set(rewards[:tag])) == 1 and rewards[0] > 0  # step 1's tokens share its score
    assert tag == len(ids) - 1 or len(set(rewards[tag + 1:-1])) == 1
    assert rewards[-1] == pytest.approx(rewards[-2] + 1.0)  # the outcome on the last token
    assert result.extra["prm_reward_tokens"] == len(ids)  # the last step ends the response


def test_settings_errors_name_the_key(prm_path, tokenizer):
    with pytest.raises(ConfigError) as info:
        SQLPRMManager({"process_weight": 0.5}, tokenizer=tokenizer)
    assert info.value.key == "prm_path"
    with pytest.raises(ConfigError) as info:
        SQLPRMManager({"process_weight": 0.5, "prm_path": prm_path})
    assert info.value.key == "tokenizer"
    with pytest.raises(ConfigError) as info:
        SQLPRMManager({"process_placement": "middle"}, tokenizer=tokenizer)
    assert info.value.key == "process_placement"


@pytest.mark.parametrize(("settings", "layout"), [
    ({"process_weight": 0.5, "prm_path": "prm"}, ("step_end", "all_tokens")),
    ({}, ("step_end", "last_token")),  # no PRM: the outcome on the last token
    ({"process_weight": 0.5, "prm_path": "prm", "process_placement": "fill",
      "outcome_placement": "last_token"}, ("fill", "last_token")),
])
def test_token_layout_resolves_the_defaults(settings, layout):
    """What an estimator that reads the token rewards back (grpo_min_form) is checked against:
    the placements in effect, null resolved as the manager resolves it when it scores."""
    parsed = SQLPRMManager.parse_settings(settings)
    assert SQLPRMManager.token_layout(parsed) == dict(
        zip(("process_placement", "outcome_placement"), layout, strict=True))
