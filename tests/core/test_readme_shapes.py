"""Plugins written the way the original RewardSQL README shows them: binding reward functions by
parameter name, legacy-shape managers, decorators inside an installed package, and checks."""

from __future__ import annotations

import asyncio
import importlib

import _readme_plugin
import pytest
import rewardsql
from rewardsql.checks import CheckInputs, check_component
from rewardsql.components import ComponentKind
from rewardsql.signatures import (
    UnboundParameterError,
    bind_reward_function,
    needs_binding,
    unbound_parameters,
)


@pytest.fixture
def readme(fake_site, monkeypatch):
    _readme_plugin.install(fake_site.root)
    fake_site.modules.append(_readme_plugin.MODULE)
    importlib.invalidate_caches()
    monkeypatch.setenv("REWARDSQL_PLUGINS", _readme_plugin.DIST)
    return fake_site


# -- binding by parameter name -----------------------------------------------------------------


def seed_shape(port, db_id, question_id, solution_str, ground_truth, extra_info):
    return {"score": 1.0, "bound": (port, db_id, question_id, solution_str, ground_truth)}


def test_seed_signature_binds_from_call_extra_info_and_reward_kwargs():
    bound = bind_reward_function(seed_shape, {"port": 5432, "db_id": "from_kwargs"})
    out = bound(data_source="spider", solution_str="SELECT 1", ground_truth="SELECT 2",
                extra_info={"db_id": "shop", "question_id": 7})
    # extra_info wins over reward_kwargs; the call's keywords over both
    assert out["bound"] == (5432, "shop", 7, "SELECT 1", "SELECT 2")
    assert needs_binding(seed_shape, {"port": 1})
    assert unbound_parameters(seed_shape, extra_info_keys=["db_id", "question_id"],
                              reward_kwargs={}) == ["port"]


def test_unbound_parameter_names_it_and_where_it_could_come_from():
    bound = bind_reward_function(seed_shape)
    with pytest.raises(UnboundParameterError) as err:
        bound(data_source="s", solution_str="x", ground_truth="y", extra_info={"db_id": "a"})
    message = str(err.value)
    assert "nothing binds parameter 'port'" in message
    assert "extra_info (db_id)" in message
    assert "reward.custom_reward_function.reward_kwargs.port" in message


def test_verl_shape_is_left_to_verls_rules():
    def verl_fn(data_source, solution_str, ground_truth, extra_info=None, mode="bird", **kw):
        return {"score": 0.5, "mode": mode, "kw": sorted(kw)}

    assert not needs_binding(verl_fn, {"timeout": 3})
    out = bind_reward_function(verl_fn, {"timeout": 3})(
        data_source="s", solution_str="x", ground_truth="y", extra_info={"mode": "spider"})
    # an optional parameter of a verl-shaped function never comes from extra_info
    assert out == {"score": 0.5, "mode": "bird", "kw": ["timeout"]}


def test_async_functions_stay_async():
    async def seed_async(port, db_id, solution_str, ground_truth, extra_info):
        await asyncio.sleep(0)
        return float(port == 1 and db_id == "shop")

    bound = bind_reward_function(seed_async, {"port": 1})
    assert asyncio.iscoroutinefunction(bound)
    assert asyncio.run(bound(data_source="s", solution_str="x", ground_truth="y",
                             extra_info={"db_id": "shop"})) == 1.0


# -- the README's plugin, installed -------------------------------------------------------------


def test_readme_plugin_is_listed_under_its_own_distribution(readme):
    records = {r.name: r for r in rewardsql.get_registry().plugin_records()}
    assert "<local>" not in records  # the decorators ran inside an installed package
    record = records[_readme_plugin.DIST]
    assert (record.status, record.version) == ("ok", "1.0")
    assert {(c.kind, c.name) for c in record.components} == {
        (ComponentKind.REWARD_FUNCTION, "readme_sql_reward"),
        (ComponentKind.REWARD_MANAGER, "readme_manager")}
    manager = rewardsql.get_reward_manager("readme_manager")
    assert issubclass(manager, rewardsql.RewardManager)  # adapted into the contract
    assert manager.wrapped.__name__ == "ReadmeRewardManager"


def test_plugins_check_binds_the_readme_function_and_runs_the_legacy_manager(readme, tmp_path):
    registry = rewardsql.get_registry()
    function = registry.get(ComponentKind.REWARD_FUNCTION, "readme_sql_reward")
    legacy = registry.get(ComponentKind.REWARD_MANAGER, "readme_manager")

    bare = check_component(function)
    assert not bare.ok
    assert "nothing binds parameter 'port'" in bare.detail and "--config FILE" in bare.detail

    config = tmp_path / "train.yaml"
    config.write_text("reward:\n  custom_reward_function:\n    reward_kwargs: {port: 5432}\n"
                      "rewardsql:\n  reward_manager: {port: 5432}\n")
    inputs = CheckInputs.from_config_file(config)
    result = check_component(function, inputs)
    assert result.ok, result.detail
    assert result.detail == "returned score 1 for a correct answer"  # really executed
    module = importlib.import_module(_readme_plugin.MODULE)
    assert module.CALLS[-1] == (5432, "rewardsql_check", 0)

    checked = check_component(legacy, inputs)
    assert checked.ok, checked.detail
    # the correct answer scores 1, the wrong one and the broken one 0: real execution
    assert checked.detail == "scored 1, 0, 0 for 3 responses"


def test_plugins_check_cli_for_the_readme_package(readme, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("reward:\n  custom_reward_function:\n    reward_kwargs: {port: 5432}\n")
    result = readme.run("-m", "rewardsql", "plugins", "check", _readme_plugin.DIST,
                        "--config", str(config), REWARDSQL_PLUGINS=_readme_plugin.DIST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (f"ok   reward_function readme_sql_reward [{_readme_plugin.DIST}]: returned score 1"
            in result.stdout)
    assert f"ok   reward_manager readme_manager [{_readme_plugin.DIST}]" in result.stdout


def test_plugins_check_of_a_plugin_without_components_fails(fake_site):
    fake_site.add("quiet-plugin", "fake_quiet2", """
        import rewardsql

        @rewardsql.hookimpl
        def rewardsql_reward_functions(register):
            pass
    """)
    result = fake_site.run("-m", "rewardsql", "plugins", "check", "quiet-plugin",
                           REWARDSQL_PLUGINS="quiet-plugin")
    assert result.returncode == 1
    assert "error: quiet-plugin provides no component to check" in result.stderr


def test_a_failing_decorator_leaves_none_of_its_package_in_use(fake_site, monkeypatch):
    fake_site.add("half-decorated", "fake_half_decorated", """
        import rewardsql

        @rewardsql.register_reward_function("first_fine")
        def first_fine(data_source, solution_str, ground_truth, extra_info=None):
            return 1.0

        @rewardsql.register_reward_manager("not_a_manager")
        class NotAManager:
            pass
    """)
    monkeypatch.setenv("REWARDSQL_PLUGINS", "half-decorated")
    records = {r.name: r for r in rewardsql.get_registry().plugin_records()}
    assert "<local>" not in records
    record = records["half-decorated"]
    assert record.status == "error" and "not_a_manager" in record.error
    with pytest.raises(rewardsql.UnknownComponentError, match="plugins with errors"):
        rewardsql.get_reward_function("first_fine")


def test_legacy_manager_dense_rows_become_token_rewards(readme, tmp_path):
    from rewardsql.checks import CHECK_SQL, _check_tokenizer, _extra_info, _make_check_database

    db_root = _make_check_database(tmp_path)
    cls = rewardsql.get_reward_manager("readme_manager")
    tokenizer = _check_tokenizer([CHECK_SQL, "SELECT name FROM singer"])
    requests = [rewardsql.RewardRequest(
        response=text, ground_truth=CHECK_SQL, data_source="d", extra_info=_extra_info(db_root),
        response_token_ids=tuple(tokenizer.encode(text, add_special_tokens=False)))
        for text in (CHECK_SQL, "SELECT name FROM singer")]
    sparse = cls({"port": 1}, tokenizer=tokenizer).score_batch(requests)
    assert [(r.score, r.token_rewards, r.extra) for r in sparse] == [
        (1.0, None, {"acc": 1.0}), (0.0, None, {"acc": 0.0})]
    dense = cls({"port": 1, "dense": True}, tokenizer=tokenizer).score_batch(requests)
    assert dense[0].token_rewards == pytest.approx([1 / 8] * 8)  # 8 words, 8 tokens
    assert dense[0].score == pytest.approx(1.0)
    assert dense[1].token_rewards is None  # all zero: nothing dense about it


def test_registering_a_class_of_neither_shape_says_both(fake_site):
    class Neither:
        def __init__(self, config):
            pass

    with pytest.raises(TypeError, match="verl's legacy shape"):
        rewardsql.register_reward_manager("neither")(Neither)


def test_binding_twice_is_binding_once():
    """The local engine binds the user's function; a legacy manager binds what it is given."""
    twice = bind_reward_function(bind_reward_function(seed_shape, {"port": 1}))
    out = twice(data_source="s", solution_str="x", ground_truth="y",
                extra_info={"db_id": "shop", "question_id": 2})
    assert out["bound"] == (1, "shop", 2, "x", "y")
