"""Config loading errors name the file and key; atomic writes never leave half a file."""

from __future__ import annotations

import pytest
from rewardsql.config import ConfigError, check_known_keys, get_key, load_config
from rewardsql.io import atomic_directory, atomic_write, atomic_write_json, atomic_write_text


def test_load_yaml_and_json(tmp_path):
    (tmp_path / "a.yaml").write_text("trainer:\n  total_epochs: 3\n")
    (tmp_path / "b.json").write_text('{"lr": 1e-6}')
    assert load_config(tmp_path / "a.yaml") == {"trainer": {"total_epochs": 3}}
    assert load_config(tmp_path / "b.json") == {"lr": 1e-6}
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == {}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "a: [1, 2\n", "invalid YAML at line 2"),
        ("bad.json", '{"a": 1,\n "b": }', "invalid JSON at line 2, column 7"),
        ("list.yaml", "- 1\n- 2\n", "the top level must be a mapping, got list"),
    ],
)
def test_malformed_files_name_the_file_and_place(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_get_key_errors_name_the_key():
    cfg = {"actor": {"optim": {"lr": "fast"}, "flag": True}}
    assert get_key(cfg, "actor.missing", 5) == 5
    with pytest.raises(
        ConfigError, match=r"cfg.yaml: key 'actor.optim.beta': required key is missing"
    ):
        get_key(cfg, "actor.optim.beta", source="cfg.yaml")
    with pytest.raises(ConfigError, match=r"key 'actor.optim.lr': expected float, got str 'fast'"):
        get_key(cfg, "actor.optim.lr", expected=float)
    with pytest.raises(ConfigError, match="expected int, got bool"):
        get_key(cfg, "actor.flag", expected=int)


def test_unknown_key_suggests_the_closest():
    with pytest.raises(
        ConfigError,
        match=r"key 'data.train_batchsize': unknown key; did you mean "
        r"'train_batch_size'\?",
    ):
        check_known_keys({"train_batchsize": 8}, ["train_batch_size", "val_files"], prefix="data.")
    check_known_keys({"val_files": "x"}, ["train_batch_size", "val_files"])


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "out" / "report.json"
    atomic_write_json(target, {"ok": 1})
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write('{"half": ')
        raise RuntimeError("interrupted")
    assert target.read_text() == '{\n  "ok": 1\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]  # no temp file left
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    ckpt = tmp_path / "global_step_1"
    with atomic_directory(ckpt) as tmp:
        (tmp / "model.bin").write_text("v1")
    with pytest.raises(KeyboardInterrupt), atomic_directory(ckpt) as tmp:
        (tmp / "model.bin").write_text("v2-partial")
        raise KeyboardInterrupt
    assert (ckpt / "model.bin").read_text() == "v1"
    with atomic_directory(ckpt) as tmp:
        (tmp / "model.bin").write_text("v2")
    assert (ckpt / "model.bin").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step_1"]
