"""A db_id from a data file must not reach a database outside the root (issue 27).

A real SQLite file lies outside ``root``; every way of naming it through a db_id is an
``infra_error`` naming the id, and the file is never opened (its bytes and mtime are unchanged,
and no worker even receives a task for it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _sqlreward_helpers import make_concert_db
from rewardsql import RewardRequest
from rewardsql_sql_reward import SQLVerifier, resolve_db_path
from rewardsql_sql_reward.rewards.reward_fn import compute_score
from rewardsql_sql_reward.rewards.verifier_manager import SQLVerifierManager
from rewardsql_sql_reward.verifier import DatabaseLookupError

GOLD = "SELECT count(*) FROM singer"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """``root`` with one database, and a database ``outside.sqlite`` beside it: where the old
    join ``root / db_id / f"{db_id}.sqlite"`` lands for ``<tmp>/outside`` and ``../outside``."""
    root = tmp_path / "root"
    make_concert_db(root)
    outside = make_concert_db(tmp_path / "src", "outside").rename(tmp_path / "outside.sqlite")
    (tmp_path / "outside").mkdir()  # so that the kernel resolves root/../outside/../
    return root, outside


def _escaping_ids(outside: Path) -> dict[str, str]:
    return {
        "absolute": str(outside.with_suffix("")),
        "dotdot": "../outside",
        "dotdot_bare": "..",
        "separator": "outside/../concert",
        "nul": "concert\0",
        "empty": "",
    }


@pytest.mark.parametrize("form", ["absolute", "dotdot", "dotdot_bare", "separator", "nul",
                                  "empty"])
def test_an_id_that_is_not_a_plain_name_is_an_infra_error(layout: tuple[Path, Path],
                                                          form: str) -> None:
    root, outside = layout
    db_id = _escaping_ids(outside)[form]
    with pytest.raises(DatabaseLookupError, match="not a plain name"):
        resolve_db_path(root, db_id)
    with SQLVerifier(root, workers=1) as v:
        result = v.execute(db_id, GOLD)
        verdict = v.compare(db_id, GOLD, GOLD)
        assert v.pool.tasks_run == 0  # refused before any worker saw it
    assert result.status == "infra_error" and repr(db_id) in result.error
    assert (verdict.correct, verdict.status) == (False, "infra_error")
    assert repr(db_id) in verdict.error


@pytest.mark.parametrize("form", ["absolute", "dotdot"])
def test_joined_as_a_path_the_id_would_reach_the_outside_file(layout: tuple[Path, Path],
                                                               form: str) -> None:
    """The tests here are meaningful: the old join does name the outside database."""
    root, outside = layout
    db_id = _escaping_ids(outside)[form]
    assert (root / db_id / f"{db_id}.sqlite").samefile(outside)


def test_a_plain_name_still_resolves_and_runs(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    assert resolve_db_path(root, "concert") == root / "concert" / "concert.sqlite"
    with SQLVerifier(root, workers=1) as v:
        assert v.execute("concert", GOLD).rows == [(6,)]


def test_a_mapping_gives_exactly_its_paths(layout: tuple[Path, Path]) -> None:
    _root, outside = layout
    mapping = {"mine": outside}  # a mapped path may lie anywhere: the user chose it
    assert resolve_db_path(mapping, "mine") == outside
    for miss in ("outside", str(outside), "../outside", "mine/", "concert"):
        with pytest.raises(DatabaseLookupError, match="not in the db_root mapping"):
            resolve_db_path(mapping, miss)
    with SQLVerifier(mapping, workers=1) as v:
        assert v.compare("mine", GOLD, GOLD).status == "ok"  # hit
        miss = v.compare(str(outside), GOLD, GOLD)  # the mapped file's own path is no key
        assert miss.status == "infra_error" and repr(str(outside)) in miss.error
        assert v.pool.tasks_run == 1  # the hit's single query (gold == pred); the miss ran none


def test_the_reward_function_scores_an_escaping_id_as_an_infra_error(
        layout: tuple[Path, Path]) -> None:
    root, outside = layout
    for db_id in (str(outside.with_suffix("")), "../outside"):
        result = compute_score("bird", GOLD, GOLD, {"db_id": db_id, "db_root": str(root)})
        assert (result["score"], result["status"]) == (0.0, "infra_error")


def test_the_manager_scores_an_escaping_id_as_an_infra_error(layout: tuple[Path, Path]) -> None:
    root, _outside = layout
    requests = [RewardRequest(response=GOLD, ground_truth=GOLD, data_source="bird",
                              extra_info={"db_id": db_id}, response_token_ids=(1, 2))
                for db_id in ("concert", "../outside")]
    with SQLVerifierManager({"db_root": str(root), "workers": 1,
                             "max_infra_error_fraction": 0.5}) as manager:
        results = manager.score_batch(requests)
    assert [r.extra["status"] for r in results] == ["ok", "infra_error"]
