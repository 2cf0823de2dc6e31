"""The ``rewardsql:`` config section: one schema, read in one place, spelt in one module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from rewardsql import schema
from rewardsql.errors import ConfigError
from rewardsql.section import RewardSQLSection, defaults, read_section

REPO = Path(__file__).resolve().parents[2]
SECTION_KEYS = ("rewardsql.reward_function", "rewardsql.reward_manager",
                "rewardsql.reward_weights")


def _strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module that are not docstrings (f-string parts included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def test_each_key_of_the_section_is_spelt_in_one_module():
    sources = [*(REPO / "core").rglob("*.py"), *(REPO / "plugins").glob("*/src/**/*.py")]
    found = {key: [] for key in SECTION_KEYS}
    for path in sources:
        for line, text in _strings(path):
            for key in SECTION_KEYS:
                if key in text:
                    found[key].append(f"{path.relative_to(REPO)}:{line}")
    for key, places in found.items():
        assert all(p.startswith("core/rewardsql/section.py") for p in places), (key, places)
    # ... where they are built from the schema's own names
    from rewardsql import section

    assert {section.REWARD_FUNCTION_KEY, section.MANAGER_SETTINGS_KEY,
            section.WEIGHTS_KEY} == set(SECTION_KEYS)


def test_defaults_and_reading_from_a_mapping_or_omegaconf():
    assert read_section({}) == RewardSQLSection()
    assert defaults() == {"reward_function": None, "reward_manager": {},
                          "reward_weights": {"process": 0.0, "outcome": 1.0}}
    config = OmegaConf.create({"w": 0.5, "rewardsql": {
        "reward_function": "sql_execution", "reward_manager": {"timeout": 3},
        "reward_weights": {"outcome": "${w}"}}})
    section = read_section(config)
    assert section.reward_function == "sql_execution"
    assert section.reward_manager == {"timeout": 3}
    assert (section.reward_weights.process, section.reward_weights.outcome) == (0.0, 0.5)
    assert isinstance(section.reward_weights.outcome, float)


@pytest.mark.parametrize(("section", "key", "words"), [
    ({"reward_wieghts": {}}, "rewardsql.reward_wieghts", "did you mean 'reward_weights'"),
    ({"reward_weights": {"outcome": "high"}}, "rewardsql.reward_weights.outcome",
     "expected a number"),
    ({"reward_weights": {"outcome": True}}, "rewardsql.reward_weights.outcome",
     "expected a number"),
    ({"reward_weights": {"process": 0, "outcome": 0}}, "rewardsql.reward_weights",
     "nothing to learn from"),
    ({"reward_manager": [1]}, "rewardsql.reward_manager", "expected a mapping"),
    ({"reward_function": 3}, "rewardsql.reward_function", "expected a string or null"),
])
def test_bad_values_name_the_key(section, key, words):
    with pytest.raises(ConfigError) as info:
        read_section({"rewardsql": section}, source="grpo.yaml")
    assert info.value.key == key and words in str(info.value)
    assert str(info.value).startswith("grpo.yaml: ")


def test_every_setting_has_a_doc():
    for field in schema.describe(RewardSQLSection):
        assert field.doc, field.name


def test_the_core_imports_no_heavy_library():
    code = ("import sys, rewardsql, rewardsql.cli, rewardsql.checks, rewardsql.section, "
            "rewardsql.verl_bridge, rewardsql.config, rewardsql.schema\n"
            "rewardsql.cli.build_app()\n"
            "print(sorted(m for m in ('torch', 'transformers', 'verl', 'omegaconf', 'pandas') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
