"""The reward function ``sql_execution`` and the reward manager ``sql_verifier``."""

from __future__ import annotations

from pathlib import Path

import pytest
import rewardsql
from rewardsql import RewardRequest
from rewardsql.errors import ConfigError
from rewardsql_sql_reward import STATUSES
from rewardsql_sql_reward.rewards.reward_fn import DB_ROOT_ENV, compute_score
from rewardsql_sql_reward.rewards.verifier_manager import InfraErrorRateExceeded, SQLVerifierManager

GOLD = "SELECT name FROM singer WHERE age > 30"
COCTE = ("WITH old AS (SELECT name, age FROM singer WHERE age > 30) и \n"
         "SELECT name FROM old; и <|im_end|>")


def test_registered_under_their_names() -> None:
    assert rewardsql.get_reward_function("sql_execution") is compute_score
    assert rewardsql.get_reward_manager("sql_verifier") is SQLVerifierManager


def test_reward_function_scores_with_verls_signature(db_root: Path) -> None:
    info = {"db_id": "concert", "db_root": str(db_root)}
    right = compute_score("bird", f"```sql\n{GOLD}\n```", GOLD, info)
    assert right["score"] == 1.0 and right["status"] == "ok" and right["seconds"] >= 0
    assert compute_score("bird", COCTE, GOLD, extra_info=info)["score"] == 1.0
    wrong = compute_score("bird", "SELECT name FROM singer", GOLD, info)
    assert (wrong["score"], wrong["status"]) == (0.0, "wrong")
    broken = compute_score("bird", "SELEC", GOLD, info)
    assert (broken["score"], broken["status"]) == (0.0, "error")
    assert set(right) == set(wrong) == set(broken) == {"score", "status", "seconds"}


def test_reward_function_finds_db_root_in_the_environment(
    db_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DB_ROOT_ENV, str(db_root))
    assert compute_score("spider", GOLD, GOLD, {"db_id": "concert_copy"})["score"] == 1.0
    monkeypatch.delenv(DB_ROOT_ENV)
    with pytest.raises(ValueError, match=DB_ROOT_ENV):
        compute_score("spider", GOLD, GOLD, {"db_id": "concert"})
    with pytest.raises(ValueError, match="db_id"):
        compute_score("spider", GOLD, GOLD, {"question": "?"})


def test_missing_database_is_an_infra_error_naming_the_path(tmp_path: Path) -> None:
    result = compute_score("bird", GOLD, GOLD, {"db_id": "ghost", "db_root": str(tmp_path)})
    assert (result["score"], result["status"]) == (0.0, "infra_error")


def test_verl_loads_the_function_from_a_pkg_path(db_root: Path) -> None:
    omegaconf = pytest.importorskip("omegaconf")
    reward = pytest.importorskip("verl.trainer.ppo.reward")
    config = omegaconf.OmegaConf.create({"reward": {"custom_reward_function": {
        "path": "pkg://rewardsql_sql_reward.rewards.reward_fn", "name": "compute_score",
        "reward_kwargs": {"mode": "multiset"}}}})
    fn = reward.get_custom_reward_fn(config)
    info = {"db_id": "concert", "db_root": str(db_root)}
    # multiset (from reward_kwargs): DISTINCT drops the second 33-year-old
    assert fn("bird", "SELECT age FROM singer", "SELECT age FROM singer", info)["score"] == 1.0
    assert fn("bird", "SELECT DISTINCT age FROM singer", "SELECT age FROM singer",
              info)["score"] == 0.0


def _requests(db_root: Path | None, responses: list[str], db_id: str = "concert"
              ) -> list[RewardRequest]:
    info = {"db_id": db_id, **({"db_root": str(db_root)} if db_root else {})}
    return [RewardRequest(response=r, ground_truth=GOLD, data_source="bird", extra_info=info,
                          response_token_ids=tuple(range(3 + i)))
            for i, r in enumerate(responses)]


def test_manager_scores_a_batch_with_one_verifier_call(db_root: Path) -> None:
    responses = [GOLD, COCTE, "SELECT name FROM singer", "SELEC oops"] * 3
    with SQLVerifierManager({"workers": 2}) as manager:
        results = manager.score_batch(_requests(db_root, responses))
        assert manager.verifier.pool.runs == 1
    assert [r.score for r in results] == [1.0, 1.0, 0.0, 0.0] * 3
    assert all(r.token_rewards is None for r in results)
    keys = {"acc", "status", "sql_seconds", *(f"status_{s}" for s in STATUSES)}
    assert all(set(r.extra) == keys for r in results)
    assert [r.extra["status"] for r in results[:4]] == ["ok", "ok", "wrong", "error"]
    assert sum(r.extra["status_ok"] for r in results) == 6
    assert sum(r.extra["status_error"] for r in results) == 3
    assert all(r.extra["acc"] == r.score for r in results)


def test_all_tokens_placement_covers_every_response_token(db_root: Path) -> None:
    with SQLVerifierManager({"db_root": str(db_root), "placement": "all_tokens",
                             "workers": 1}) as manager:
        requests = _requests(None, [GOLD, "SELECT 1"])
        results = manager.score_batch(requests)
    assert results[0].token_rewards == [1.0] * len(requests[0].response_token_ids)
    assert results[1].token_rewards == [0.0] * len(requests[1].response_token_ids)


def test_too_many_infra_errors_stop_the_batch_with_reasons(db_root: Path) -> None:
    with SQLVerifierManager({"workers": 1, "max_infra_error_fraction": 0.25}) as manager:
        good = _requests(db_root, [GOLD] * 3)
        ghost = _requests(db_root, [GOLD], db_id="ghost")
        results = manager.score_batch(good + ghost)  # 1 of 4: at the limit, allowed
        assert results[3].extra["status"] == "infra_error"
        with pytest.raises(InfraErrorRateExceeded, match=r"ghost\.sqlite") as info:
            manager.score_batch(good[:2] + ghost + ghost)
        assert "2 of 4" in str(info.value)
        with pytest.raises(InfraErrorRateExceeded, match="db_id"):
            manager.score_batch([RewardRequest(response=GOLD, ground_truth=GOLD)])


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"db_rot": "/x"}, "db_rot"),
        ({"mode": "fuzzy"}, "mode"),
        ({"placement": "first_token"}, "placement"),
        ({"timeout": "fast"}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"workers": 0}, "workers"),
        ({"max_rows": True}, "max_rows"),
        ({"max_infra_error_fraction": 2}, "max_infra_error_fraction"),
    ],
)
def test_bad_config_names_the_key(config: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        SQLVerifierManager(config)
    assert info.value.key == key
    assert key in str(info.value)


def test_unknown_key_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'db_root'"):
        SQLVerifierManager({"db_rot": "/x"})
