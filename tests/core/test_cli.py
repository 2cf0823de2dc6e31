"""The CLI as a user runs it: a fresh interpreter, real entry points, real exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _core_helpers import BROKEN_PLUGIN, CONFLICT_PLUGIN, GOOD_PLUGIN

FAKES = "good-plugin,broken-plugin,zz-conflict-plugin"


@pytest.fixture
def site(fake_site):
    fake_site.add("good-plugin", "fake_good", GOOD_PLUGIN, version="1.2.3")
    fake_site.add("broken-plugin", "fake_broken", BROKEN_PLUGIN, version="0.0.1")
    fake_site.add("zz-conflict-plugin", "fake_conflict", CONFLICT_PLUGIN, version="0.1")
    return fake_site


def test_plugins_list_json_records_are_exact(site):
    result = site.run("-m", "rewardsql", "plugins", "list", "--json", REWARDSQL_PLUGINS=FAKES)
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert records == [
        {
            "plugin": "broken-plugin",
            "version": "0.0.1",
            "status": "error",
            "error": "cannot import 'fake_broken': RuntimeError: boom at import",
            "components": [],
        },
        {
            "plugin": "good-plugin",
            "version": "1.2.3",
            "status": "error",
            "error": "reward function 'exact_match' is provided by two plugins: 'good-plugin' and "
            "'zz-conflict-plugin'; uninstall one, or select plugins with REWARDSQL_PLUGINS.",
            "components": [
                {"kind": "reward_function", "name": "exact_match", "aliases": ["em"],
                 "summary": "exact string match"},
                {"kind": "reward_manager", "name": "length_manager", "aliases": [],
                 "summary": ""},
                {
                    "kind": "advantage_estimator",
                    "name": "double_adv",
                    "aliases": ["compute_double_advantage"],
                    "summary": "",
                },
            ],
        },
        {
            "plugin": "zz-conflict-plugin",
            "version": "0.1",
            "status": "error",
            "error": "reward function 'exact_match' is provided by two plugins: 'good-plugin' and "
            "'zz-conflict-plugin'; uninstall one, or select plugins with REWARDSQL_PLUGINS.",
            "components": [
                {"kind": "reward_function", "name": "exact_match", "aliases": [], "summary": ""},
                {"kind": "reward_function", "name": "always_one", "aliases": [], "summary": ""},
            ],
        },
    ]
    assert "broken-plugin" in result.stderr  # the broken plugin is reported, not hidden


def test_plugins_list_table_with_a_broken_plugin(site):
    result = site.run("-m", "rewardsql", "plugins", "list", REWARDSQL_PLUGINS=FAKES)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["PLUGIN", "VERSION", "STATUS", "COMPONENTS"]
    good = next(line for line in lines if line.startswith("good-plugin"))
    assert good.split()[:5] == ["good-plugin", "1.2.3", "error", "reward_function", "exact_match"]
    assert "advantage_estimator double_adv (aliases: compute_double_advantage)" in result.stdout
    assert "error: cannot import 'fake_broken': RuntimeError: boom at import" in result.stdout


def test_no_plugins_installed(site):
    result = site.run("-m", "rewardsql", "plugins", "list", REWARDSQL_PLUGINS="none")
    assert (result.returncode, result.stdout.strip()) == (0, "No plugins installed.")
    as_json = site.run("-m", "rewardsql", "plugins", "list", "--json", REWARDSQL_PLUGINS="none")
    assert json.loads(as_json.stdout) == []


def test_plugins_check_passes_for_good_components(site):
    result = site.run(
        "-m", "rewardsql", "plugins", "check", "good-plugin", REWARDSQL_PLUGINS="good-plugin"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "ok   advantage_estimator double_adv [good-plugin]: returned two finite 7x12"
        in result.stdout
    )
    assert "ok   reward_function exact_match [good-plugin]: returned score 1" in result.stdout
    assert "ok   reward_manager length_manager [good-plugin]" in result.stdout


def test_plugins_check_fails_naming_component_and_point(fake_site):
    fake_site.add(
        "bad-plugin",
        "fake_bad",
        """
        import torch
        import rewardsql

        def wrong_shape(token_level_rewards, response_mask, index=None, config=None, **kwargs):
            adv = token_level_rewards.sum(-1)
            return adv, adv

        def text_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
            return "high"

        @rewardsql.hookimpl
        def rewardsql_advantage_estimators(register):
            register("wrong_shape", wrong_shape)

        @rewardsql.hookimpl
        def rewardsql_reward_functions(register):
            register("text_score", text_score)
    """,
    )
    result = fake_site.run("-m", "rewardsql", "plugins", "check", REWARDSQL_PLUGINS="bad-plugin")
    assert result.returncode == 1
    assert (
        "error: advantage estimator 'wrong_shape' (bad-plugin) failed: advantages has shape (7,),"
        " expected (7, 12)"
    ) in result.stderr
    assert (
        "error: reward function 'text_score' (bad-plugin) failed: reward function must return a"
        " float or a dict with 'score', got str" in result.stderr
    )


def test_plugins_check_reports_a_broken_plugin_and_unknown_names(site):
    result = site.run(
        "-m",
        "rewardsql",
        "plugins",
        "check",
        "broken-plugin",
        "nothing_here",
        REWARDSQL_PLUGINS=FAKES,
    )
    assert result.returncode == 1
    assert "error: plugin 'broken-plugin': cannot import 'fake_broken'" in result.stderr
    assert "no plugin or component named 'nothing_here'" in result.stderr


def test_version_help_and_usage_errors(site):
    version = site.run("-m", "rewardsql", "--version")
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert (version.returncode, version.stdout.strip()) == (0, f"rewardsql {declared}")
    helptext = site.run("-m", "rewardsql", "--help")
    assert helptext.returncode == 0 and "plugins" in helptext.stdout
    wrong = site.run("-m", "rewardsql", "plugins", "lst")
    assert wrong.returncode == 2 and "No such command 'lst'" in wrong.stderr


def test_a_plugin_whose_commands_fail_does_not_break_the_others(fake_site):
    fake_site.add("cmd-broken", "fake_cmd_broken", """
        import rewardsql

        @rewardsql.hookimpl
        def rewardsql_commands(register):
            raise ImportError("No module named 'missing_extra'")
    """)
    fake_site.add("cmd-clash", "fake_cmd_clash", """
        import rewardsql

        def train():
            "Not rewardsql's train."

        @rewardsql.hookimpl
        def rewardsql_commands(register):
            register("train", train)
    """)
    env = {"REWARDSQL_PLUGINS": "cmd-broken,cmd-clash"}
    helped = fake_site.run("-m", "rewardsql", "--help", **env)
    assert helped.returncode == 0, helped.stderr
    for command in ("plugins", "train", "sft", "demo"):
        assert f" {command} " in helped.stdout
    listing = fake_site.run("-m", "rewardsql", "plugins", "list", "--json", **env)
    records = {r["plugin"]: r for r in json.loads(listing.stdout)}
    assert "ImportError: No module named 'missing_extra'" in records["cmd-broken"]["error"]
    assert "command 'train': taken by rewardsql itself" in records["cmd-clash"]["error"]
    # rewardsql's own train is the one that runs; the clashing one is not mounted
    train = fake_site.run("-m", "rewardsql", "train", "--help", **env)
    assert train.returncode == 0 and "--dry-run" in train.stdout


def test_builtin_commands_are_a_plugin_listed_on_request(site):
    result = site.run("-m", "rewardsql", "plugins", "list", "--json", "--builtin",
                      REWARDSQL_PLUGINS="none")
    (record,) = json.loads(result.stdout)
    assert record["plugin"] == "rewardsql" and record["status"] == "ok"
    assert {c["name"] for c in record["components"]} >= {"plugins", "train", "sft", "demo"}


def test_plugins_check_builds_managers_with_the_settings_of_a_config(tmp_path):
    """The real SQL plugin's manager, built with a training config's settings."""
    import subprocess
    import sys

    pytest.importorskip("rewardsql_sql_reward")

    def check(settings: str) -> subprocess.CompletedProcess[str]:
        config = tmp_path / "grpo.yaml"
        config.write_text("rewardsql:\n  reward_manager:\n" + settings)
        return subprocess.run([sys.executable, "-m", "rewardsql", "plugins", "check",
                               "sql_verifier", "--config", str(config)],
                              capture_output=True, text=True, timeout=120)

    good = check("    timeout: 5\n    db_root: /data/where/training/reads\n    workers: 1\n")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "ok   reward_manager sql_verifier" in good.stdout
    bad = check("    timeout: -1\n")
    assert bad.returncode == 1
    assert "rejects its settings" in bad.stdout and "'timeout'" in bad.stdout
    typo = check("    timout: 5\n")
    assert typo.returncode == 1 and "did you mean 'timeout'" in typo.stdout


def test_plugins_list_json_shows_a_managers_settings():
    import subprocess
    import sys

    pytest.importorskip("rewardsql_sql_reward")
    result = subprocess.run([sys.executable, "-m", "rewardsql", "plugins", "list", "--json"],
                            capture_output=True, text=True, timeout=120)
    records = {r["plugin"]: r for r in json.loads(result.stdout)}
    manager = next(c for c in records["rewardsql-sql-reward"]["components"]
                   if c["name"] == "sql_verifier")
    settings = {s["name"]: s for s in manager["settings"]}
    assert settings["timeout"]["default"] == 30.0 and settings["timeout"]["doc"]
    assert set(settings) >= {"db_root", "mode", "timeout", "workers", "placement"}


def test_a_plugin_adds_a_command_to_another_plugins_group(fake_site):
    fake_site.add("group-owner", "fake_group_owner", """
        import rewardsql, typer

        app = typer.Typer(help="Tools.")

        @app.command("first")
        def first():
            print("first ran")

        @rewardsql.hookimpl
        def rewardsql_commands(register):
            register("tools", app)
    """)
    fake_site.add("group-joiner", "fake_group_joiner", """
        import rewardsql

        def second(times: int = 1):
            "The second tool."
            print("second ran " * times)

        def third():
            print("third ran")

        @rewardsql.hookimpl
        def rewardsql_commands(register):
            register("tools second", second)
            register("extras third", third)
    """)
    env = {"REWARDSQL_PLUGINS": "group-owner,group-joiner"}
    assert "first ran" in fake_site.run("-m", "rewardsql", "tools", "first", **env).stdout
    second = fake_site.run("-m", "rewardsql", "tools", "second", "--times", "2", **env)
    assert second.returncode == 0 and "second ran second ran" in second.stdout, second.stderr
    assert "third ran" in fake_site.run("-m", "rewardsql", "extras", "third", **env).stdout
