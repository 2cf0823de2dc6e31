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


def test_unreadable_or_unknown_files(tmp_path):
    (tmp_path / "c.toml").write_text("a = 1")
    with pytest.raises(ConfigError, match=r"expected a \.yaml, \.yml or \.json file"):
        load_config(tmp_path / "c.toml")
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin\.yaml: cannot read: 'utf-8' codec"):
        load_config(tmp_path / "latin.yaml")


def test_atomic_outputs_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.txt", "x")
        with atomic_directory(tmp_path / "ckpt") as tmp:
            (tmp / "a").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o755


def test_atomic_directory_recovers_after_a_crash_between_renames(tmp_path):
    ckpt = tmp_path / "global_step_2"
    old = tmp_path / ".global_step_2.old"  # what a crash between the two renames leaves
    old.mkdir()
    (old / "model.bin").write_text("v1")
    with pytest.raises(RuntimeError), atomic_directory(ckpt):
        raise RuntimeError("crash before the new one is complete")
    assert (ckpt / "model.bin").read_text() == "v1"
