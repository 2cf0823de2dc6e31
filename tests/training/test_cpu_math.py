"""Reproducible CPU math (rewardsql.training.cpu_math): classes from CPU flags, and SFT that gives
the
same weights whatever the thread count.

The SFT runs are subprocesses running ``rewardsql sft``, as a user does, since the settings must
be in place before torch is imported. Another CPU cannot be had here: the test checks what one
machine can show, that the settings take effect (ATen runs the class's kernels) and that
training no longer depends on how the work is split between threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _tiny_helpers import quick_example, tiny_model
from rewardsql.training.cpu_math import (
    CLASS_CAPABILITY,
    CLASS_ENV,
    MODES,
    VARIABLES,
    apply_cpu_math,
    cpu_class,
    cpu_flags,
    cpu_math_label,
    cpu_model,
    cpu_vendor,
    describe_cpu_math,
    reproducible_env,
    use_reproducible_cpu_math,
)
from rewardsql.training.sft.train import RESULT_FILE
from safetensors.torch import load_file

AVX512_SERVER = {"fma", "avx2", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


def test_the_class_is_the_widest_whose_flags_the_cpu_has():
    assert cpu_class(AVX512_SERVER | {"avx512_vnni", "amx_tile"}) == "avx512"
    assert cpu_class({"fma", "avx2", "avx512f"}) == "avx2"  # AVX-512 Foundation alone: not enough
    assert cpu_class({"sse4_2", "avx"}) is None
    assert cpu_class(set()) is None  # not x86, or no /proc/cpuinfo
    assert reproducible_env({"fma", "avx2"}) == CLASS_ENV["avx2"]
    assert reproducible_env(set()) == {}


def test_cpu_flags_and_model_read_their_lines(tmp_path: Path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Some Xeon\n"
                       "vmx flags\t: ept\nflags\t\t: fpu avx2 fma\n\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "fma"}
    assert cpu_model(cpuinfo) == "Some Xeon" and cpu_vendor(cpuinfo) == "GenuineIntel"
    assert cpu_flags(tmp_path / "missing") == set()
    assert cpu_model(tmp_path / "missing") is None and cpu_vendor(tmp_path / "missing") is None


def test_label_names_the_vendor_of_a_reproducible_class():
    assert cpu_math_label({"mode": "reproducible", "class": "avx2",
                           "vendor": "AuthenticAMD"}) == "reproducible avx2 (AMD)"
    assert cpu_math_label({"mode": "reproducible", "class": "avx512",
                           "vendor": "GenuineIntel"}) == "reproducible avx512 (Intel)"
    assert cpu_math_label({"mode": "reproducible", "class": "avx2",
                           "vendor": None}) == "reproducible avx2"
    assert cpu_math_label({"mode": "native", "class": None,
                           "vendor": "AuthenticAMD"}) == "native"


def test_refuses_once_torch_is_imported_and_sets_nothing(monkeypatch):
    import torch  # noqa: F401  (the point: torch is already here)

    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="before torch is imported"):
        use_reproducible_cpu_math()
    assert not any(name in os.environ for name in VARIABLES)


def test_a_process_without_the_settings_reports_native_math(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    described = describe_cpu_math()
    assert described["mode"] == "native" and described["class"] is None
    assert described["vendor"] == cpu_vendor()


def test_apply_cpu_math_checks_the_mode_and_gives_the_thread_count(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="--cpu-math must be one of reproducible, native, "
                                         "got 'fast'"):
        apply_cpu_math("fast")
    assert apply_cpu_math("native") == 0 and apply_cpu_math("native", 3) == 3
    assert not any(name in os.environ for name in VARIABLES)  # native sets nothing
    assert MODES == ("reproducible", "native")
    import torch  # noqa: F401  (already imported here: reproducible must refuse, not pretend)

    with pytest.raises(RuntimeError, match="before torch is imported"):
        apply_cpu_math("reproducible")


@pytest.mark.parametrize("command", [["sft", "--config", "missing.json"],
                                     ["train", "--engine", "local", "-o", "out"]])
def test_sft_and_train_name_a_bad_cpu_math_value(tmp_path: Path, command: list[str]):
    proc = subprocess.run([sys.executable, "-m", "rewardsql", *command, "--cpu-math", "fast"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert "--cpu-math must be one of reproducible, native, got 'fast'" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_train_refuses_reproducible_cpu_math_on_verl(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "rewardsql", "train", "-o", "out",
                           "--cpu-math", "reproducible"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert "--cpu-math reproducible is for --engine local" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def _sft(tmp_path_factory, out: Path, threads: int, env: dict[str, str],
         options: tuple[str, ...] = ()) -> dict:
    example = quick_example(tmp_path_factory)
    config = out.parent / f"{out.name}.json"
    config.write_text(json.dumps({
        "model_name_or_path": str(tiny_model(tmp_path_factory)),
        "train_file": str(example.sft_train), "output_dir": str(out),
        "per_device_train_batch_size": 8, "learning_rate": 3e-3, "max_steps": 12,
        "max_length": 384, "save_steps": 1000, "seed": 0, "device": "cpu",
        "resume_from_checkpoint": None}))
    # `rewardsql sft`, then what that process computed with
    script = ("import json, sys\nfrom rewardsql.cli import app\n"
              "from rewardsql.training.cpu_math import describe_cpu_math\n"
              "app(['sft', '--config', *sys.argv[1:]], standalone_mode=False)\n"
              "print('CPU_MATH', json.dumps(describe_cpu_math()))")
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    proc = subprocess.run([sys.executable, "-c", script, str(config), *options],
                          capture_output=True,
                          text=True, timeout=300,
                          env={**clean, **env, "OMP_NUM_THREADS": str(threads)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("CPU_MATH "))
    weights = load_file(out / "model.safetensors")
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(weights[name].contiguous().numpy().tobytes())
    saved = json.loads((out / RESULT_FILE).read_text())
    return {"cpu_math": json.loads(line.removeprefix("CPU_MATH ")), "sha": digest.hexdigest(),
            "saved": saved}


@pytest.mark.slow
@pytest.mark.skipif(cpu_class(cpu_flags()) is None,
                    reason="reproducible CPU math is for x86-64 CPUs with AVX2 or AVX-512")
def test_reproducible_sft_gives_the_same_weights_with_one_and_two_threads(tmp_path_factory,
                                                                          tmp_path):
    name = cpu_class(cpu_flags())
    one, two = (_sft(tmp_path_factory, tmp_path / f"sft-{n}", n, CLASS_ENV[name])
                for n in (1, 2))
    for run in (one, two):
        assert run["cpu_math"]["mode"] == "reproducible" and run["cpu_math"]["class"] == name
        assert run["cpu_math"]["aten_cpu_capability"] == CLASS_CAPABILITY[name]
    assert one["sha"] == two["sha"]
    # The same run asked for with `rewardsql sft --cpu-math reproducible` from a plain
    # environment: the CLI sets the class (and its 2 threads) and the result records it
    flag = _sft(tmp_path_factory, tmp_path / "sft-flag", 1, {},
                ("--cpu-math", "reproducible"))
    assert flag["saved"]["cpu_math"]["mode"] == "reproducible"
    assert flag["saved"]["cpu_math"]["class"] == name
    assert flag["sha"] == two["sha"]
    assert one["saved"]["cpu_math"] == one["cpu_math"]  # the result records what ran


def test_cli_refuses_reproducible_math_once_torch_is_imported(tmp_path: Path):
    """In a process that already holds torch (here pytest's), the CLI says so instead of
    training with math that only looks reproducible."""
    import torch  # noqa: F401
    from rewardsql.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["sft", "--config", str(tmp_path / "c.json"),
                                      "--cpu-math", "reproducible"])
    assert result.exit_code == 2
    assert "must be set before torch is imported" in result.output
    assert list(tmp_path.iterdir()) == []
