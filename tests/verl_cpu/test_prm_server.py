"""The PRM scored by vLLM's CPU build over HTTP (``rewardsql rm serve``, ``ServedPRMScorer``),
against the in-process ``PRMScorer`` on a PRM trained here. Nothing is mocked: the healthy-server
tests share one ``rm serve`` (vLLM's own server, float32); the killed-server test starts its
own. The hung server is a plain socket that accepts and never answers (a stand-in for a stuck
server: vLLM cannot be made to hang on purpose).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from _tiny_helpers import quick_example, read_jsonl, tiny_model
from _train_helpers import PRM_PROMPT, free_port, prm_records

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vLLM's CPU build is not installed (nox -s verl_cpu)")

READY_S = 300


def _serve(prm: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``rewardsql rm serve`` as a user starts it, in float32 (the in-process scorer's dtype)."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "rewardsql", "rm", "serve", "--prm", str(prm), "--port",
             str(port), "--", "--dtype", "float32", "--enforce-eager", "--port", "1"],
            stdout=handle, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + READY_S
    while "PRM server ready" not in log.read_text(errors="replace"):
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "rm serve did not get ready"
        time.sleep(1)
    return process


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pids: list[int]) -> list[int]:
    import psutil

    return [p for p in pids if psutil.pid_exists(p)
            and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="module")
def prm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PRM trained here (2 epochs on chains whose bad steps end in "AND 0"): its step scores
    span the range, so equal scores mean something."""
    from rewardsql.training.prm.config import PRMConfig
    from rewardsql.training.prm.trainer import run_prm

    folder = tmp_path_factory.mktemp("served-prm")
    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in prm_records(160, 0)))
    config = PRMConfig.from_dict({
        "model_name_or_path": str(tiny_model(tmp_path_factory, "tiny")),
        "train_file": str(data), "eval_file": None, "output_dir": str(folder / "prm"),
        "per_device_train_batch_size": 8, "learning_rate": 3e-3, "num_train_epochs": 2,
        "max_length": 256, "logging_steps": 5, "save_steps": 1000, "warmup_ratio": 0.1,
        "seed": 0, "resume_from_checkpoint": None})
    run_prm(config)
    return folder / "prm"


@pytest.fixture(scope="module")
def server(prm: Path, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    process = _serve(prm, port, log)
    yield f"http://127.0.0.1:{port}", process, log
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


def _responses(n: int, seed: int) -> list[tuple[str, list[str]]]:
    """1-step and 4-to-6-step chains of the training shape, some with a bad step."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = 1 if i % 3 == 0 else rng.randint(4, 6)
        bad = rng.choice([*range(k), k])
        steps = []
        for j in range(k):
            cond = f"price > {rng.randint(1, 90)}" + (" AND 0" if j == bad else "")
            steps.append(f"WITH s{j} AS (SELECT name FROM products WHERE {cond})" if j < k - 1
                         else f"SELECT name FROM {'s' + str(j - 1) if j else 'products'} "
                              f"WHERE {cond}")
        out.append((PRM_PROMPT, steps))
    return out


def test_server_scores_equal_in_process_scores(prm: Path, server) -> None:
    from rewardsql.training.prm import PRMScorer, open_scorer

    url, _, _ = server
    items = _responses(60, 3)
    assert any(len(s) == 1 for _, s in items) and any(len(s) >= 4 for _, s in items)
    local = PRMScorer(prm, device="cpu").score_many(items)
    served = open_scorer(prm, url=url)
    remote = served.score_many(items)
    flat_local = [x for row in local for x in row]
    flat_remote = [x for row in remote for x in row]
    assert [len(r) for r in remote] == [len(r) for r in local] == [len(s) for _, s in items]
    assert min(flat_local) < 0.1 and max(flat_local) > 0.9  # a trained PRM, not 0.5 everywhere
    assert max(abs(a - b) for a, b in zip(flat_local, flat_remote, strict=True)) < 1e-3
    assert served.requests == 1  # one prompt: one request for all 60 candidates' steps


@pytest.fixture(scope="module")
def rerank_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The quick example's dev questions, databases, and a candidates file for 6 of them."""
    import pandas as pd

    example = quick_example(tmp_path_factory)
    source = example.out_dir / "dev.parquet"
    candidates = tmp_path_factory.mktemp("rerank") / "candidates.jsonl"
    with candidates.open("w") as handle:
        for row in pd.read_parquet(source).head(6).to_dict(orient="records"):
            gold = row["reward_model"]["ground_truth"]
            cands = [gold, gold.replace("SELECT", "SELECT DISTINCT", 1), "SELECT 1"]
            handle.write(json.dumps({"question_id": int(row["extra_info"]["question_id"]),
                                     "candidates": cands}) + "\n")
    return source, example.db_root, candidates


def _rerank(prm: Path, inputs: tuple[Path, Path, Path], out: Path, *extra: str
            ) -> subprocess.CompletedProcess[str]:
    questions, db_root, candidates = inputs
    return subprocess.run(
        [sys.executable, "-m", "rewardsql", "rerank", "--prm", str(prm), "--questions",
         str(questions), "--db-root", str(db_root), "--candidates", str(candidates), "-o",
         str(out), *extra], capture_output=True, text=True, timeout=600)


def test_rerank_on_the_server_picks_as_in_process(prm: Path, server, rerank_inputs,
                                                  tmp_path: Path) -> None:
    url, _, _ = server
    outs = {}
    for name, extra in (("local", ["--device", "cpu"]), ("served", ["--prm-url", url])):
        result = _rerank(prm, rerank_inputs, tmp_path / name, *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "6 questions (the candidates cover 6 of" in result.stdout
        outs[name] = read_jsonl(tmp_path / name / "questions.jsonl")
    assert len(outs["local"]) == len(outs["served"]) > 0
    for a, b in zip(outs["local"], outs["served"], strict=True):
        assert a["picks"] == b["picks"]
        for ca, cb in zip(a["candidates"], b["candidates"], strict=True):
            assert len(ca["step_scores"]) == len(cb["step_scores"])
            assert all(abs(x - y) < 1e-3 for x, y in zip(ca["step_scores"], cb["step_scores"],
                                                          strict=True))


def test_a_server_of_another_model_is_refused_naming_the_url(server,
                                                             tmp_path_factory) -> None:
    from rewardsql.training.prm import open_scorer
    from rewardsql.training.prm.served import PRMServerError

    url, _, _ = server
    other = tiny_model(tmp_path_factory, "tiny")  # same tokenizer, another model
    with pytest.raises(PRMServerError) as info:
        open_scorer(other, url=url)
    message = str(info.value)
    assert message.startswith(f"the server at {url} serves ") and "not the PRM at" in message
    assert "\n" not in message


def test_an_unreachable_server_is_one_line_naming_the_url(prm: Path, rerank_inputs,
                                                          tmp_path: Path) -> None:
    from rewardsql.training.prm import open_scorer
    from rewardsql.training.prm.served import PRMServerError

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PRMServerError, match=f"the PRM server at {url} does not answer"):
        open_scorer(prm, url=url)
    result = _rerank(prm, rerank_inputs, tmp_path / "out", "--prm-url", url)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: the PRM server at {url} does not answer: [Errno 111] Connection refused"]
    assert not (tmp_path / "out" / "questions.jsonl").exists()  # nothing half-written


def test_a_hung_server_times_out_retries_then_fails_naming_it(prm: Path, server) -> None:
    """A server that answers /v1/models (proxied to the real one) and never answers a scoring
    request: the request times out, is retried, then the call fails in one line."""
    from rewardsql.training.prm.served import PRMServerError, ServedPRMScorer

    url, _, _ = server
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    models = urllib.request.urlopen(f"{url}/v1/models", timeout=10).read()
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            request = conn.recv(65536)
            if request.startswith(b"GET /v1/models"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(len(models)).encode() + b"\r\n\r\n"
                             + models)
                conn.close()
            else:
                held.append(conn)  # never answered

    threading.Thread(target=accept, daemon=True).start()
    try:
        scorer = ServedPRMScorer(prm, f"127.0.0.1:{port}", timeout=1.0, retries=1)
        start = time.monotonic()
        with pytest.raises(PRMServerError) as info:
            scorer.score_steps(PRM_PROMPT, ["SELECT name FROM products"])
        assert time.monotonic() - start < 30
        assert scorer.retried == 1
        message = str(info.value)
        assert f"http://127.0.0.1:{port}" in message and "2 tries" in message
        assert "timed out" in message and "\n" not in message
    finally:
        listener.close()
        for conn in held:
            conn.close()


def test_a_killed_server_fails_the_call_and_sigterm_leaves_no_process(
        prm: Path, tmp_path: Path) -> None:
    from rewardsql.training.prm.served import PRMServerError, ServedPRMScorer

    port = free_port()
    process = _serve(prm, port, tmp_path / "serve.log")
    children = _descendants(process.pid)
    assert children  # vLLM's API server and its engine core
    scorer = ServedPRMScorer(prm, f"127.0.0.1:{port}", timeout=5.0, retries=1)
    assert len(scorer.score_steps(PRM_PROMPT, ["SELECT name FROM products"])) == 1
    # kill -9 of the server itself (the vLLM process rm serve started)
    os.kill(children[0], signal.SIGKILL)
    with pytest.raises(PRMServerError, match=f"the PRM server at http://127.0.0.1:{port} "
                                             "failed to score 1 steps"):
        scorer.score_steps(PRM_PROMPT, ["SELECT name FROM products"])
    # rm serve's SIGTERM handler ends what is left of the server's process group
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    deadline = time.monotonic() + 30
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _alive(children) == []
