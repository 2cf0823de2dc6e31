"""Benchmark of the process reward model's scoring and labelling, on the tiny example.

    python bench/prm.py            # the full run
    python bench/prm.py --quick    # a smoke run

(a) Scoring: candidates scored per second by ``PRMScorer.score_many`` (padded, length-sorted
    batches, LM head on the tag positions only) against the published design: a Flask-style
    HTTP service holding the same model, one request per candidate, which tokenizes the joined
    text, runs the model on it alone and returns the step scores. The service is a stdlib
    ``http.server`` on 127.0.0.1 in a subprocess (bounded request size, timeouts). Both score
    the same annotated candidates (8 per tiny dev question: the gold CoCTE steps and 7 samples)
    with the same tiny PRM (the tiny model with a ``prm_config.json``), torch on the
    same thread count, measured in one run, with the demo's prompts (schema only) and with
    ``rewardsql data prepare``'s default prompts (3 sample values per column). Target: >= 20x.
    Where vLLM is installed (the verl_cpu environment), a third row: the same PRM on vLLM's
    server (``rewardsql rm serve``, float32) scored by ``ServedPRMScorer``, with the prompt
    tokens per candidate sent and computed (vLLM's prefix-cache counters).
(b) Labelling: completions generated per labelled step, OmegaPRM's binary search (with rollout
    reuse across a question's answers) against labelling every prefix of every answer
    (Math-Shepherd), on the same 8 sampled answers of each tiny dev question with the same
    seeded completions (m = 8), so the labels can be compared: the share of equal hard labels is
    reported. Target: >= 3x fewer completions.
(c) End to end: ``rm label`` (API) on tiny train questions, ``rm train`` of the tiny model with
    held-out questions, best-of-8 on the tiny dev questions (first sample as the one-sample
    baseline, majority vote, PRM picks, pass@8).
(d) Sampling (``--parts sampling``): completions per second of the tiny model (or ``--policy``)
    on transformers' ``Policy`` and on vLLM's offline engine (``VLLMPolicy``, float32 on a CPU),
    for labels (``run_label``: the answers come from :class:`SimulatedPolicy`, so their steps
    execute and binary search probes their prefixes; the rollouts come from the model, a round
    in one call) and for best-of-8 (8 samples of every question in one call), with vLLM's
    prefix-cache hit rate over each (prompt tokens found cached). Where vLLM is installed (the
    verl_cpu environment); the engine's start is timed apart.

The policy is :class:`SimulatedPolicy` unless ``--policy`` names a model (see its docstring).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY = 1 << 20  # the service refuses larger requests


def _serve(model_dir: str, port_queue, threads: int) -> None:
    """The published design: one model, one candidate per request, ids from the joined text."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tag = tokenizer.encode(" и ", add_special_tokens=False)[0]
    good, bad = (tokenizer.encode(c, add_special_tokens=False)[0] for c in "+-")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            if length > MAX_BODY:
                self.send_error(413)
                return
            body = json.loads(self.rfile.read(length))
            ids = tokenizer.encode(body["text"], add_special_tokens=False)
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0]
            positions = [i for i, t in enumerate(ids) if t == tag]
            scores = torch.softmax(logits[positions][:, [good, bad]], -1)[:, 0].tolist()
            data = json.dumps({"step_scores": scores}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    server.timeout = 30
    port_queue.put(server.server_address[1])
    server.serve_forever()


def _post(port: int, text: str) -> list[float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/score",
                                     data=json.dumps({"text": text}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["step_scores"]


class SimulatedPolicy:
    """A stand-in policy for the tiny example: the gold CoCTE steps, each corrupted with
    probability ``error`` (a changed constant, a flipped order or comparison, or now and then a
    misspelt column, which fails). It continues any prefix of a question's answer the same way,
    so the value of a prefix depends on its steps as it would for a policy. Cheap, seeded and
    the same on every machine; the tiny SFT models of a quick CPU run answer almost nothing
    right, so their labels would be all "-" and measure nothing."""

    def __init__(self, questions, error: float = 0.3) -> None:
        from rewardsql_sql_reward.rewards.cocte import split_steps

        self.gold = {self.prompt_text(q.messages): split_steps(q.gold) for q in questions}
        self.error = error
        self.name = f"simulated(error={error})"

    @staticmethod
    def prompt_text(messages) -> str:
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages
                       ) + "<|im_start|>assistant\n"

    def _corrupt(self, step: str, rng) -> str:
        import re

        if rng.random() >= self.error:
            return step
        options = []
        if re.search(r"\b\d+\b", step):
            options.append(lambda s: re.sub(r"\b(\d+)\b", lambda m: str(int(m[1]) + 1), s,
                                                    count=1))
        if "DESC" in step or "ASC" in step:
            options.append(lambda s: s.replace("DESC", "ASC") if "DESC" in s
                           else s.replace("ASC", "DESC"))
        if ">" in step or "<" in step:
            options.append(lambda s: s.replace(">", ">=", 1) if ">" in s
                           else s.replace("<", "<=", 1))
        if "'" in step:
            options.append(lambda s: re.sub(r"'([^']*)'", lambda m: f"'{m[1]}x'", s, count=1))
        if not options or rng.random() < 0.15:
            options.append(lambda s: s.replace(" FROM ", " FROM nowhere_", 1))
        return rng.choice(options)(step)

    def generate(self, text: str, n: int, *, seed: int, greedy: bool = False) -> list[str]:
        import random

        prompt = next(p for p in self.gold if text.startswith(p))
        head = text[len(prompt):]
        done = len([s for s in head.split("\n\n") if s.strip()])
        gold = self.gold[prompt]
        out = []
        for i in range(n):
            rng = random.Random(seed * 1_000_003 + i)
            rest = gold[done:] if greedy else [self._corrupt(s, rng) for s in gold[done:]]
            out.append("\n\n".join(rest))
        return out

    def generate_many(self, requests) -> list[list[str]]:
        return [self.generate(r.text, r.n, seed=r.seed, greedy=r.greedy) for r in requests]


class SimulatedAnswers:
    """The model's rollouts on :class:`SimulatedPolicy`'s answers: a question's answers (a
    request for its bare prompt) come from the simulated policy, every other request (the
    prefix rollouts of the label search) from ``model``, a round in one call."""

    def __init__(self, model, simulated: SimulatedPolicy, questions) -> None:
        self.model, self.simulated = model, simulated
        self.name, self.kind = model.name, model.kind
        self.prompts = {model.prompt_text(q.messages): simulated.prompt_text(q.messages)
                        for q in questions}

    def prompt_text(self, messages) -> str:
        return self.model.prompt_text(messages)

    def generate_many(self, requests) -> list[list[str]]:
        rollouts = iter(self.model.generate_many([r for r in requests
                                                  if r.text not in self.prompts]))
        return [self.simulated.generate(self.prompts[r.text], r.n, seed=r.seed)
                if r.text in self.prompts else next(rollouts) for r in requests]


def candidates(example, policy, limit: int, n: int, sample_values: int):
    """PRM inputs: ``n`` candidates per dev question (the gold steps and ``n - 1`` samples),
    annotated; prompts with ``sample_values`` values per column."""
    from rewardsql_sql_reward.prm.policy import load_questions
    from rewardsql_sql_reward.rewards.annotate import build_prm_inputs

    questions = load_questions(example.dev_json, example.db_root,
                               sample_values=sample_values)[:limit]
    items = []
    for q in questions:
        prompt = policy.prompt_text(q.messages)
        items.append((prompt, q.gold, q.db_id))
        items += [(prompt, r, q.db_id) for r in policy.generate(prompt, n - 1, seed=q.index)]
    return questions, build_prm_inputs(items, example.db_root)


def _vllm_server(prm_dir: Path):
    """``rewardsql rm serve`` for the PRM (float32, as PRMScorer on the CPU) and its URL; None
    where vLLM is not installed (the ``bench`` nox session: run this in the verl_cpu one)."""
    import importlib.util
    import os
    import socket
    import subprocess

    if importlib.util.find_spec("vllm") is None:
        return None, None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    process = subprocess.Popen(
        [sys.executable, "-m", "rewardsql", "rm", "serve", "--prm", str(prm_dir), "--port",
         str(port), "--", "--dtype", "float32", "--enforce-eager"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return process, url
        except OSError:
            time.sleep(1)
    process.terminate()
    raise RuntimeError("rm serve did not start")


def _prefix_cache(url: str) -> tuple[float, float]:
    """vLLM's prefix-cache counters (prompt tokens looked up, and found cached)."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    values = {"vllm:prefix_cache_queries_total": 0.0, "vllm:prefix_cache_hits_total": 0.0}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in values:
            values[name] += float(line.rsplit(" ", 1)[1])
    return values["vllm:prefix_cache_queries_total"], values["vllm:prefix_cache_hits_total"]


def bench_scoring(prm_dir: Path, inputs, threads: int, repeats: int) -> dict:
    from rewardsql.training.prm import PRMScorer

    torch.set_num_threads(threads)
    scorer = PRMScorer(prm_dir, device="cpu", batch_size=32)
    pairs = [(i.prompt, i.annotated_steps) for i in inputs]
    scorer.score_many(pairs[:8])  # warm-up
    queue = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(str(prm_dir), queue, threads), daemon=True)
    server.start()
    vllm_process, vllm_url = _vllm_server(prm_dir)
    ours, theirs, vllm_times = [], [], []
    vllm_row: dict = {}
    try:
        port = queue.get(timeout=120)
        _post(port, inputs[0].text)  # warm-up
        if vllm_url:
            from rewardsql.training.prm import open_scorer

            remote = open_scorer(prm_dir, url=vllm_url)
            remote.score_many(pairs[:8])  # warm-up
            queries0, hits0 = _prefix_cache(vllm_url)
            sent0 = remote.prompt_tokens
        # interleaved rounds, so that load from other processes hits all alike
        for _ in range(repeats):
            start = time.perf_counter()
            batched = scorer.score_many(pairs)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            served = [_post(port, i.text) for i in inputs]
            theirs.append(time.perf_counter() - start)
            if vllm_url:
                start = time.perf_counter()
                from_vllm = remote.score_many(pairs)
                vllm_times.append(time.perf_counter() - start)
        if vllm_url:
            queries, hits = _prefix_cache(vllm_url)
            rounds = len(vllm_times)
            encoded = [scorer.encode(p, st) for p, st in pairs]
            vllm_row = {
                "vllm_server_per_s": round(len(pairs) / statistics.median(vllm_times), 1),
                # steps past the server's max_model_len are not scored there (PRMScorer has no
                # limit unless prm_config.json sets max_length): compare the steps both scored
                "vllm_max_score_difference": max(
                    abs(a - b) for x, y in zip(batched, from_vllm, strict=True)
                    for a, b in zip(x, y, strict=False)),
                "vllm_candidates_cut_by_max_model_len": sum(
                    len(y) < len(x) for x, y in zip(batched, from_vllm, strict=True)),
                # per candidate: what the items carry (no prefix cache), what vLLM computed
                "vllm_prompt_tokens_sent_per_candidate": round(
                    (remote.prompt_tokens - sent0) / rounds / len(pairs), 1),
                "vllm_prompt_tokens_computed_per_candidate": round(
                    (queries - queries0 - (hits - hits0)) / rounds / len(pairs), 1),
                "vllm_prefix_cache_hit_rate": round((hits - hits0) / max(queries - queries0, 1),
                                                    3),
                "candidate_tokens_mean": round(statistics.mean(
                    len(e.input_ids) for e in encoded), 1),
            }
    finally:
        server.kill()
        server.join()
        if vllm_process is not None:
            vllm_process.terminate()
            vllm_process.wait(timeout=60)
    # the same scores where the joined text keeps every tag (the tiny tokenizer's tag is an
    # added token, so it does): the two designs compute the same thing
    diff = max(abs(a - b) for x, y in zip(batched, served, strict=True)
               for a, b in zip(x, y, strict=True))
    ours_rate = len(pairs) / statistics.median(ours)
    theirs_rate = len(pairs) / statistics.median(theirs)
    return {"candidates": len(pairs), "tokens_mean": round(statistics.mean(
        len(scorer.encode(p, s).input_ids) for p, s in pairs)),
        "prmscorer_per_s": round(ours_rate, 1), "http_service_per_s": round(theirs_rate, 1),
        "ratio": round(ours_rate / theirs_rate, 1), "max_score_difference": diff, **vllm_row,
        "threads": threads}


def bench_labelling(example, policy, limit: int, n: int, m: int) -> dict:
    from rewardsql_sql_reward import SQLVerifier, extract_sql
    from rewardsql_sql_reward.prm.label import PrefixValues, label_response
    from rewardsql_sql_reward.prm.policy import load_questions, stable_seed
    from rewardsql_sql_reward.rewards.annotate import build_prm_inputs

    questions = load_questions(example.dev_json, example.db_root,
                               sample_values=example.sample_values)[:limit]
    generated: dict = {}
    sample_steps: set = set()
    totals = {"binary": 0, "every": 0}  # every: Math-Shepherd, each answer on its own
    steps = equal = positive = responses_correct = responses = 0
    with SQLVerifier(example.db_root) as verifier:
        for q in questions:
            prompt = policy.prompt_text(q.messages)
            samples = policy.generate(prompt, n, seed=stable_seed(0, q.question_id))
            sample_steps.update((q.question_id, s) for s in samples)

            def judge(texts, q=q):
                return [v.correct for v in verifier.verify_batch(
                    [(q.db_id, extract_sql(t), q.gold) for t in texts])]

            def complete(prefix, k, prompt=prompt, q=q):
                key = (q.question_id, tuple(prefix), k)
                if key not in generated:  # generated once; each search counts its own
                    head = "".join(s + "\n\n" for s in prefix)
                    generated[key] = [head + t for t in policy.generate(
                        prompt + head, k, seed=stable_seed(q.question_id, tuple(prefix)))]
                return generated[key]

            inputs = build_prm_inputs([(prompt, r, q.db_id) for r in samples], verifier)
            outcomes = judge(samples)
            labels = {}
            for search in totals:  # binary: prefixes shared across the question's answers
                values = PrefixValues(complete, judge, m)
                labels[search] = [label_response(
                    i.steps, i.failed, o, values if search == "binary" else
                    PrefixValues(complete, judge, m), "every" if search != "binary" else search)
                    for i, o in zip(inputs, outcomes, strict=True)]
                totals[search] += (values.generated if search == "binary" else sum(
                    lab.rollouts for lab in labels[search]))
            for a, b in zip(labels["binary"], labels["every"], strict=True):
                steps += len(a.labels)
                equal += sum(x == y for x, y in zip(a.labels, b.labels, strict=True))
                positive += b.labels.count("+")
            responses += len(samples)
            responses_correct += sum(outcomes)
    return {"questions": len(questions), "responses": responses,
            "responses_correct": responses_correct, "labelled_steps": steps,
            "positive_steps": positive, "equal_hard_labels": equal,
            "completions_binary": totals["binary"], "completions_every": totals["every"],
            "per_step_binary": round(totals["binary"] / max(steps, 1), 3),
            "per_step_every": round(totals["every"] / max(steps, 1), 3),
            "ratio": round(totals["every"] / max(totals["binary"], 1), 2), "n": n, "m": m,
            "distinct_answers": len(sample_steps)}


def bench_pipeline(example, work: Path, threads: int, quick: bool) -> dict:
    """(c) End to end on the simulated policy: ``rm label`` on the train questions, ``rm train``
    of the tiny model (held-out answers of other questions), best-of-8 on the dev questions."""
    from rewardsql.demo.tiny import build_tiny_model
    from rewardsql.training.prm.config import PRMConfig
    from rewardsql.training.prm.trainer import run_prm
    from rewardsql_sql_reward.prm.label import LabelSettings, run_label
    from rewardsql_sql_reward.prm.policy import load_questions, stable_seed
    from rewardsql_sql_reward.prm.rerank import RerankSettings, run_rerank

    torch.set_num_threads(threads)
    train_q = load_questions(example.train_json, example.db_root,
                             sample_values=example.sample_values)[:40 if quick else 200]
    dev_q = load_questions(example.dev_json, example.db_root,
                           sample_values=example.sample_values)
    policy = SimulatedPolicy([*train_q, *dev_q])
    labels = work / "pipeline" / "labels.jsonl"
    if labels.exists():
        labels.unlink()
    report = run_label(policy, train_q, example.db_root, labels,
                       LabelSettings(n=4, m=4), progress=False)
    lines = labels.read_text(encoding="utf-8").splitlines()
    cut = len(lines) * 4 // 5 // 4 * 4  # whole questions (4 answers each) held out
    (work / "pipeline" / "train.jsonl").write_text("\n".join(lines[:cut]) + "\n")
    (work / "pipeline" / "heldout.jsonl").write_text("\n".join(lines[cut:]) + "\n")
    model = build_tiny_model(work / "model", example.corpus(), size="tiny")
    result = run_prm(PRMConfig.from_dict({
        "model_name_or_path": str(model), "train_file": str(work / "pipeline" / "train.jsonl"),
        "eval_file": str(work / "pipeline" / "heldout.jsonl"),
        "output_dir": str(work / "pipeline" / "prm"), "per_device_train_batch_size": 8,
        "learning_rate": 2e-3, "num_train_epochs": 1 if quick else 3, "max_length": 768,
        "logging_steps": 10, "save_steps": 100000, "warmup_ratio": 0.1, "seed": 0,
        "resume_from_checkpoint": None, "report_to": "none"}))
    cands = {}
    for q in dev_q:
        prompt = policy.prompt_text(q.messages)
        samples = policy.generate(prompt, 8, seed=stable_seed(1, q.question_id))
        cands[str(q.question_id)] = {"question_id": q.question_id, "candidates": samples,
                                     "greedy": samples[0], "prompt": prompt}
    summary = run_rerank(dev_q, example.db_root, work / "pipeline" / "prm",
                         work / "pipeline" / "rerank", RerankSettings(n=8), candidates=cands,
                         device="cpu", progress=False)
    return {"label_responses": report.written, "label_plus": report.positive,
            "label_minus": report.negative, "label_completions": report.rollouts,
            "prm_heldout": result.evaluations[-1], "prm_train_steps": result.n_steps,
            "rerank_accuracy": summary["accuracy"]}


def bench_sampling(example, model_dir: Path, work: Path, threads: int, quick: bool) -> dict:
    """(d) Completions per second, transformers against vLLM, for labels and best-of-8; rounds
    interleaved (so that load from other processes hits both alike), vLLM's prefix cache emptied
    before each (a round must not find the last one's prompts)."""
    import importlib.util

    from rewardsql_sql_reward.prm.label import LabelSettings, run_label
    from rewardsql_sql_reward.prm.policy import Policy, Request, load_questions, stable_seed

    if importlib.util.find_spec("vllm") is None:
        return {}
    from rewardsql_sql_reward.prm.vllm_policy import VLLMPolicy, close_engines

    torch.set_num_threads(threads)
    questions = load_questions(example.dev_json, example.db_root,
                               sample_values=example.sample_values)[:8 if quick else 48]
    simulated = SimulatedPolicy(questions)
    n, m, tokens = (4, 4, 32) if quick else (8, 8, 64)
    settings = LabelSettings(n=n, m=m, max_new_tokens=tokens)
    out: dict = {"questions": len(questions), "n": n, "m": m, "max_new_tokens": tokens,
                 "threads": threads}
    options = {"disable_log_stats": False}  # the prefix-cache counters
    if not torch.cuda.is_available():
        options.update(dtype="float32", enforce_eager=True)
    models = {}
    for name, make in (("transformers", lambda: Policy(model_dir, device="cpu",
                                                       max_new_tokens=tokens)),
                       ("vllm", lambda: VLLMPolicy(model_dir, max_new_tokens=tokens,
                                                   engine_options=options))):
        start = time.perf_counter()
        models[name] = make()
        out[f"{name}_start_s"] = round(time.perf_counter() - start, 1)
        models[name].generate(models[name].prompt_text(questions[-1].messages), 2, seed=0)
    (work / "sampling").mkdir(parents=True, exist_ok=True)

    def label(model) -> int:
        labels = work / "sampling" / f"labels-{model.kind}.jsonl"
        labels.unlink(missing_ok=True)  # else the run resumes: nothing to do
        return run_label(SimulatedAnswers(model, simulated, questions), questions,
                         example.db_root, labels, settings, progress=False).rollouts

    def best_of_8(model) -> int:
        prompts = [model.prompt_text(q.messages) for q in questions]
        return sum(len(t) for t in model.generate_many(
            [Request(p, 8, stable_seed(1, i)) for i, p in enumerate(prompts)]))

    times: dict = {}
    for _ in range(1 if quick else 3):
        for part, run in (("labels", label), ("best_of_8", best_of_8)):
            for name, model in models.items():
                if name == "vllm":
                    model.llm.reset_prefix_cache()
                    before = model.prefix_cache()
                start = time.perf_counter()
                completions = run(model)
                times.setdefault((name, part), []).append(time.perf_counter() - start)
                out[f"{part}_completions_{name}"] = completions
                if name == "vllm":
                    after = model.prefix_cache()
                    out[f"vllm_{part}_hit_rate"] = round(
                        (after[1] - before[1]) / max(after[0] - before[0], 1), 3)
    close_engines()
    for (name, part), seconds in times.items():
        out[f"{name}_{part}_per_s"] = round(
            out[f"{part}_completions_{name}"] / statistics.median(seconds), 1)
    for part in ("labels", "best_of_8"):
        out[f"{part}_ratio"] = round(out[f"vllm_{part}_per_s"]
                                     / out[f"transformers_{part}_per_s"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, default=None,
                        help="a Hugging Face policy (default: the simulated policy)")
    parser.add_argument("--prm", type=Path, help="the PRM (default: the tiny model as one)")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parts", default="scoring,labelling,pipeline,sampling",
                        help="which of scoring, labelling, pipeline, sampling to run")
    args = parser.parse_args(argv)

    from rewardsql.demo.tiny import build_example, build_tiny_model
    from rewardsql_sql_reward.prm.policy import Policy

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-prm-"))
    example = build_example(work / "example", seed=0, scale="quick")
    prm = args.prm
    if prm is None:
        model = build_tiny_model(work / "model", example.corpus(), size="tiny")
        prm = work / "prm"
        if not prm.exists():
            shutil.copytree(model, prm)
            (prm / "prm_config.json").write_text(json.dumps(
                {"step_tag": " и ", "candidate_tokens": ["+", "-"]}))
    torch.set_num_threads(args.threads)
    if args.policy is not None:
        policy = Policy(args.policy, device="cpu", temperature=1.0, max_new_tokens=128)
    else:
        from rewardsql_sql_reward.prm.policy import load_questions

        policy = SimulatedPolicy([q for values in (example.sample_values, 3)
                                  for q in load_questions(example.dev_json, example.db_root,
                                                          sample_values=values)])
    limit, n = (4, 4) if args.quick else (24, 8)
    parts = set(args.parts.split(","))
    scoring: dict = {}
    labelling: dict = {}
    # the demo's prompts (schema only), and `data prepare`'s default (3 values per column)
    for values in (example.sample_values, 3) if "scoring" in parts else ():
        _, inputs = candidates(example, policy, limit, n, values)
        scoring[f"sample_values={values}"] = bench_scoring(prm, inputs, args.threads,
                                                            1 if args.quick else 3)
        print(json.dumps({"scoring": scoring}), flush=True)
    if "labelling" in parts:
        labelling = bench_labelling(example, policy, 8 if args.quick else 60, 8, 8)
        print(json.dumps({"labelling": labelling}), flush=True)
    if "pipeline" in parts:
        pipeline = bench_pipeline(example, work, args.threads, args.quick)
        print(json.dumps({"pipeline": pipeline}), flush=True)
    sampling: dict = {}
    if "sampling" in parts:
        policy_dir = args.policy or build_tiny_model(work / "model", example.corpus(),
                                                     size="tiny")
        sampling = bench_sampling(example, policy_dir, work, args.threads, args.quick)
        print(json.dumps({"sampling": sampling}), flush=True)
    for name, row in scoring.items():
        print(f"scoring ({name}, {row['tokens_mean']} tokens): PRMScorer "
              f"{row['prmscorer_per_s']} candidates/s, HTTP service {row['http_service_per_s']}/s:"
              f" {row['ratio']}x (target >= 20x)")
        if "vllm_server_per_s" in row:
            print(f"  vLLM server (rm serve, /generative_scoring): {row['vllm_server_per_s']} "
                  f"candidates/s ({row['vllm_server_per_s'] / row['prmscorer_per_s']:.2f}x "
                  f"PRMScorer, {row['vllm_server_per_s'] / row['http_service_per_s']:.1f}x the "
                  "one-request-per-candidate service); prompt tokens per candidate: "
                  f"{row['vllm_prompt_tokens_sent_per_candidate']} sent, "
                  f"{row['vllm_prompt_tokens_computed_per_candidate']} computed with the prefix "
                  f"cache (hit rate {row['vllm_prefix_cache_hit_rate']}), candidates "
                  f"{row['candidate_tokens_mean']} tokens; max |score - PRMScorer| "
                  f"{row['vllm_max_score_difference']:.1e}")
        else:
            print("  vLLM server: not measured (no vLLM here; run this in the verl_cpu "
                  "environment)")
    if labelling:
        print(f"labelling: {labelling['per_step_every']} completions per labelled step for "
              f"every prefix, {labelling['per_step_binary']} for binary search: "
              f"{labelling['ratio']}x fewer (target >= 3x); equal hard labels "
              f"{labelling['equal_hard_labels']} of {labelling['labelled_steps']}")
    if sampling:
        for part, what in (("labels", "label rollouts"), ("best_of_8", "best-of-8 samples")):
            print(f"sampling, {what}: transformers {sampling[f'transformers_{part}_per_s']} "
                  f"completions/s, vLLM {sampling[f'vllm_{part}_per_s']}/s "
                  f"({sampling[f'{part}_ratio']}x; prefix-cache hit rate "
                  f"{sampling[f'vllm_{part}_hit_rate']}), {sampling['max_new_tokens']} tokens "
                  f"at most, {sampling['threads']} threads")
    elif "sampling" in parts:
        print("sampling: not measured (no vLLM here; run this in the verl_cpu environment)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
