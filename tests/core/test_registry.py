"""Loading plugins from real entry points: isolation of failures, conflicts, lookups, selection."""

from __future__ import annotations

import logging

import pytest
import rewardsql
from _core_helpers import BROKEN_PLUGIN, CONFLICT_PLUGIN, GOOD_PLUGIN
from rewardsql import ComponentConflictError, ComponentKind, UnknownComponentError


@pytest.fixture
def two(fake_site, monkeypatch):
    fake_site.add("good-plugin", "fake_good", GOOD_PLUGIN, version="1.2.3")
    fake_site.add("broken-plugin", "fake_broken", BROKEN_PLUGIN)
    monkeypatch.setenv("REWARDSQL_PLUGINS", "good-plugin,broken-plugin")
    return fake_site


def test_good_plugin_components_are_found_by_name_and_alias(two):
    fn = rewardsql.get_reward_function("em")
    assert fn is rewardsql.get_registry().get(ComponentKind.REWARD_FUNCTION, "em").obj
    assert fn("src", "SELECT 1", "SELECT 1") == {"score": 1.0}
    est = rewardsql.get_advantage_estimator("compute_double_advantage")
    assert est is rewardsql.get_advantage_estimator("double_adv")
    assert rewardsql.get_reward_manager("length_manager").__name__ == "LengthManager"


def test_broken_plugin_is_recorded_and_others_still_load(two, caplog):
    with caplog.at_level(logging.WARNING, logger="rewardsql"):
        records = {r.name: r for r in rewardsql.get_registry().plugin_records()}
    assert records["broken-plugin"].status == "error"
    assert "RuntimeError: boom at import" in records["broken-plugin"].error
    assert records["good-plugin"].version == "1.2.3"
    assert rewardsql.get_reward_function("em")  # loaded despite the broken neighbour
    warnings = [r.getMessage() for r in caplog.records if "broken-plugin" in r.getMessage()]
    assert len(warnings) == 1, warnings  # logged once
    rewardsql.get_registry()  # cached: no second load, no second warning
    assert len([r for r in caplog.records if "broken-plugin" in r.getMessage()]) == 1


def test_name_conflict_names_both_distributions(two, monkeypatch):
    two.add("zz-conflict-plugin", "fake_conflict", CONFLICT_PLUGIN, version="0.1")
    monkeypatch.setenv("REWARDSQL_PLUGINS", "good-plugin,broken-plugin,zz-conflict-plugin")
    with pytest.raises(ComponentConflictError) as err:
        rewardsql.get_reward_function("exact_match")
    assert "'good-plugin'" in str(err.value) and "'zz-conflict-plugin'" in str(err.value)
    records = {r.name: r for r in rewardsql.get_registry().plugin_records()}
    for name in ("good-plugin", "zz-conflict-plugin"):  # both sides are marked
        assert records[name].status == "error"
        assert str(err.value) in records[name].error
    # a plugin in error is not used at all: none of either plugin's other components
    for name in ("always_one", "em"):
        with pytest.raises(UnknownComponentError, match="plugins with errors"):
            rewardsql.get_reward_function(name)
    assert {c.name for c in records["zz-conflict-plugin"].components} == {
        "exact_match", "always_one"}  # still listed


def test_unknown_name_lists_what_is_available(two):
    with pytest.raises(UnknownComponentError) as err:
        rewardsql.get_advantage_estimator("double_adw")
    message = str(err.value)
    assert "Unknown advantage estimator 'double_adw'" in message
    assert "Did you mean 'double_adv'?" in message
    assert "compute_double_advantage, double_adv" in message


def test_loading_is_lazy_cached_and_resettable(two, monkeypatch):
    import sys

    assert "fake_good" not in sys.modules  # nothing loads before the first lookup
    first = rewardsql.get_registry()
    assert "fake_good" in sys.modules
    assert rewardsql.get_registry() is first
    rewardsql.reset_registry()
    assert rewardsql.get_registry() is not first


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ("none", []),
        ("good-plugin", ["good-plugin"]),
        ("good-plugin, broken-plugin", ["broken-plugin", "good-plugin"]),
    ],
)
def test_selection_by_environment(two, monkeypatch, selection, expected):
    monkeypatch.setenv("REWARDSQL_PLUGINS", selection)
    rewardsql.reset_registry()
    assert [r.name for r in rewardsql.get_registry().plugin_records()] == expected


def test_selection_by_entry_point_name(fake_site, monkeypatch):
    fake_site.add("dist-name", "fake_by_ep", GOOD_PLUGIN, entry_name="ep-name")
    monkeypatch.setenv("REWARDSQL_PLUGINS", "ep-name")
    assert [r.name for r in rewardsql.get_registry().plugin_records()] == ["dist-name"]


def test_misspelt_hook_is_an_error(fake_site, monkeypatch):
    fake_site.add(
        "typo-plugin",
        "fake_typo",
        """
        import rewardsql

        @rewardsql.hookimpl
        def rewardsql_reward_function(register):  # singular: not a hook
            register("x", print)
    """,
    )
    fake_site.add("good-plugin", "fake_good", GOOD_PLUGIN)
    monkeypatch.setenv("REWARDSQL_PLUGINS", "typo-plugin,good-plugin")
    records = {r.name: r for r in rewardsql.get_registry().plugin_records()}
    assert records["typo-plugin"].status == "error"
    assert "rewardsql_reward_function" in records["typo-plugin"].error
    assert records["typo-plugin"].components == []
    assert records["good-plugin"].status == "ok"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('register("bad", 42)', "must be callable"),
        ('register("", print)', "non-empty strings"),
        ('raise ValueError("no db")', "ValueError: no db"),
    ],
)
def test_invalid_registration_keeps_none_of_the_plugin(fake_site, monkeypatch, body, message):
    fake_site.add(
        "half-plugin",
        "fake_half",
        f"""
        import rewardsql

        @rewardsql.hookimpl
        def rewardsql_reward_functions(register):
            register("first_ok", print)
            {body}
    """,
    )
    monkeypatch.setenv("REWARDSQL_PLUGINS", "half-plugin")
    (record,) = rewardsql.get_registry().plugin_records()
    assert record.status == "error" and message in record.error
    assert record.components == []
    with pytest.raises(UnknownComponentError):
        rewardsql.get_reward_function("first_ok")


def test_reward_manager_must_subclass_the_contract(fake_site, monkeypatch):
    fake_site.add(
        "mgr-plugin",
        "fake_mgr",
        """
        import rewardsql

        class NotAManager:
            pass

        @rewardsql.hookimpl
        def rewardsql_reward_managers(register):
            register("nope", NotAManager)
    """,
    )
    monkeypatch.setenv("REWARDSQL_PLUGINS", "mgr-plugin")
    (record,) = rewardsql.get_registry().plugin_records()
    assert "subclass of rewardsql.RewardManager" in record.error


@pytest.mark.parametrize("kind", list(ComponentKind))
def test_every_hook_spec_registers_its_kind(fake_site, monkeypatch, kind):
    from rewardsql.components import HOOK_OF_KIND

    obj = "Mgr" if kind is ComponentKind.REWARD_MANAGER else "fn"
    fake_site.add(
        "one-hook",
        "fake_one_hook",
        f"""
        import rewardsql

        def fn(*args, **kwargs):
            return 0.0

        class Mgr(rewardsql.RewardManager):
            def score_batch(self, requests):
                return []

        @rewardsql.hookimpl
        def {HOOK_OF_KIND[kind]}(register):
            register("thing", {obj}, aliases=["thing_alias"], summary="s")
    """,
    )
    monkeypatch.setenv("REWARDSQL_PLUGINS", "one-hook")
    registry = rewardsql.get_registry()
    component = registry.get(kind, "thing_alias")
    assert (component.kind, component.name, component.aliases, component.plugin) == (
        kind,
        "thing",
        ("thing_alias",),
        "one-hook",
    )
    assert [c.kind for c in registry.components() if c.plugin == "one-hook"] == [kind]


def test_decorators_register_local_components(fake_site, monkeypatch):
    fake_site.add("good-plugin", "fake_good", GOOD_PLUGIN)
    monkeypatch.setenv("REWARDSQL_PLUGINS", "good-plugin")

    @rewardsql.register_advantage_estimator("my_est", aliases=("compute_my_est",))
    def my_est(token_level_rewards, response_mask, **kwargs):
        """My estimator."""
        return token_level_rewards, token_level_rewards

    @rewardsql.register_reward_function("my_reward")
    def my_reward(data_source, solution_str, ground_truth, extra_info=None):
        return 1.0

    assert rewardsql.get_advantage_estimator("compute_my_est") is my_est
    assert rewardsql.get_reward_function("my_reward") is my_reward
    local = {r.name: r for r in rewardsql.get_registry().plugin_records()}["<local>"]
    assert {c.name for c in local.components} == {"my_est", "my_reward"}
    assert next(c for c in local.components if c.name == "my_est").summary == "My estimator."

    # re-running a notebook cell replaces the local component
    @rewardsql.register_advantage_estimator("my_est")
    def my_est_v2(token_level_rewards, response_mask, **kwargs):
        return token_level_rewards, token_level_rewards

    assert rewardsql.get_advantage_estimator("my_est") is my_est_v2

    # but an installed plugin's name cannot be taken
    with pytest.raises(ComponentConflictError, match="good-plugin"):
        rewardsql.register_reward_function("exact_match")(my_reward)


def test_decorator_validates_its_target():
    with pytest.raises(TypeError, match=r"subclass of rewardsql\.RewardManager"):
        rewardsql.register_reward_manager("m")(object)


def test_one_module_named_by_two_entry_points(fake_site, monkeypatch):
    fake_site.add("twice-plugin", "fake_twice", GOOD_PLUGIN)
    info = next(fake_site.root.glob("twice_plugin-*.dist-info"))
    (info / "entry_points.txt").write_text("[rewardsql]\nfirst = fake_twice\nsecond = fake_twice\n")
    monkeypatch.setenv("REWARDSQL_PLUGINS", "twice-plugin")
    (record,) = rewardsql.get_registry().plugin_records()
    assert "already loaded by another entry point" in record.error
    assert record.components  # listed, but a plugin in error is not used
    with pytest.raises(UnknownComponentError, match="plugins with errors: twice-plugin"):
        rewardsql.get_reward_function("em")


def test_plugin_registering_with_a_decorator_at_import_time(fake_site, monkeypatch):
    """A plugin module that calls back into rewardsql while it is being loaded."""
    fake_site.add(
        "eager-plugin",
        "fake_eager",
        """
        import rewardsql

        @rewardsql.register_reward_function("at_import")
        def at_import(data_source, solution_str, ground_truth, extra_info=None):
            return 1.0
    """,
    )
    monkeypatch.setenv("REWARDSQL_PLUGINS", "eager-plugin")
    assert rewardsql.get_reward_function("at_import")("s", "x", "y") == 1.0


def test_selection_is_normalised_and_unmatched_names_warned(fake_site, monkeypatch, caplog):
    fake_site.add("good-plugin", "fake_good", GOOD_PLUGIN)
    monkeypatch.setenv("REWARDSQL_PLUGINS", "Good_Plugin, no-such-plugin")
    with caplog.at_level(logging.WARNING, logger="rewardsql"):
        records = rewardsql.get_registry().plugin_records()
    assert [r.name for r in records] == ["good-plugin"]
    assert "REWARDSQL_PLUGINS names 'no-such-plugin', which matches no installed plugin" in (
        caplog.text
    )
    with pytest.raises(UnknownComponentError, match=r"REWARDSQL_PLUGINS=Good_Plugin"):
        rewardsql.get_reward_function("missing")


def test_hook_without_arguments_is_accepted(fake_site, monkeypatch):
    fake_site.add(
        "quiet-plugin",
        "fake_quiet",
        """
        import rewardsql

        @rewardsql.hookimpl
        def rewardsql_reward_functions():
            pass
    """,
    )
    monkeypatch.setenv("REWARDSQL_PLUGINS", "quiet-plugin")
    (record,) = rewardsql.get_registry().plugin_records()
    assert (record.status, record.components) == ("ok", [])


def test_the_old_plugin_manager_names_are_deprecated_aliases_of_the_registry(two):
    """0.1 called the registry a "plugin manager"; the old names work for one more release and
    say what replaces them each time they are used."""
    import warnings

    import rewardsql.registry

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names warn about nothing
        registry = rewardsql.get_registry()
        assert isinstance(registry, rewardsql.registry.Registry)
        assert registry.get(ComponentKind.REWARD_FUNCTION, "em").plugin == "good-plugin"
    with pytest.warns(DeprecationWarning, match=r"get_plugin_manager is deprecated.*get_registry"):
        assert rewardsql.get_plugin_manager() is registry
    with pytest.warns(DeprecationWarning, match=r"reset_plugin_manager .*reset_registry"):
        rewardsql.reset_plugin_manager()
    assert rewardsql.get_registry() is not registry
    with pytest.warns(DeprecationWarning, match=r"RewardSQLPluginManager .*Registry"):
        assert rewardsql.registry.RewardSQLPluginManager is rewardsql.registry.Registry
    with pytest.warns(DeprecationWarning):
        from rewardsql.registry import RewardSQLPluginManager  # noqa: F401
    for name in ("get_registry", "reset_registry", "get_plugin_manager", "reset_plugin_manager"):
        assert name in rewardsql.__all__
