"""Benchmark of the process reward model's scoring and labelling, on the tiny example.

    python bench/prm.py --policy DIR             # the full run
    python bench/prm.py --policy DIR --quick     # a smoke run

(a) Scoring: candidates scored per second by ``PRMScorer.score_many`` (padded, length-sorted
    batches, LM head on the tag positions only) against the published design: a Flask-style
    HTTP service holding the same model, one request per candidate, which tokenizes the joined
    text, runs the model on it alone and returns the step scores. The service is a stdlib
    ``http.server`` on 127.0.0.1 in a subprocess (bounded request size, timeouts). Both score
    the same annotated candidates (the tiny dev questions' gold CoCTE steps and the policy's
    samples) with the same tiny PRM (the tiny model with a ``prm_config.json``), torch on the
    same thread count, measured in one run. Target: >= 20x.
(b) Labelling: completions generated per labelled step, OmegaPRM's binary search (with rollout
    reuse) against labelling every prefix (Math-Shepherd), on the same sampled responses of the
    tiny dev questions with the same seeded completions, so the labels can be compared: the
    share of equal hard labels is reported. Target: >= 3x fewer completions.
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


def candidates(example, policy, limit: int, n: int):
    """PRM inputs: gold steps and ``n`` policy samples per dev question, annotated."""
    from rewardsql_sql_reward.annotate import build_prm_inputs
    from rewardsql_sql_reward.policy import load_questions

    questions = load_questions(example.dev_json, example.db_root,
                               sample_values=example.sample_values)[:limit]
    items = []
    for q in questions:
        prompt = policy.prompt_text(q.messages)
        items.append((prompt, q.gold, q.db_id))
        items += [(prompt, r, q.db_id) for r in policy.generate(prompt, n, seed=q.index)]
    return questions, build_prm_inputs(items, example.db_root)


def bench_scoring(prm_dir: Path, inputs, threads: int, repeats: int) -> dict:
    from rewardsql.training.prm import PRMScorer

    torch.set_num_threads(threads)
    scorer = PRMScorer(prm_dir, device="cpu", batch_size=32)
    pairs = [(i.prompt, i.annotated_steps) for i in inputs]
    scorer.score_many(pairs[:8])  # warm-up
    ours = []
    for _ in range(repeats):
        start = time.perf_counter()
        batched = scorer.score_many(pairs)
        ours.append(time.perf_counter() - start)

    queue = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(str(prm_dir), queue, threads), daemon=True)
    server.start()
    try:
        port = queue.get(timeout=120)
        _post(port, inputs[0].text)  # warm-up
        theirs = []
        for _ in range(repeats):
            start = time.perf_counter()
            served = [_post(port, i.text) for i in inputs]
            theirs.append(time.perf_counter() - start)
    finally:
        server.kill()
        server.join()
    # the same scores where the joined text keeps every tag (the tiny tokenizer's tag is an
    # added token, so it does): the two designs compute the same thing
    diff = max(abs(a - b) for x, y in zip(batched, served, strict=True)
               for a, b in zip(x, y, strict=True))
    ours_rate = len(pairs) / statistics.median(ours)
    theirs_rate = len(pairs) / statistics.median(theirs)
    return {"candidates": len(pairs), "tokens_mean": round(statistics.mean(
        len(scorer.encode(p, s).input_ids) for p, s in pairs)),
        "prmscorer_per_s": round(ours_rate, 1), "http_service_per_s": round(theirs_rate, 1),
        "ratio": round(ours_rate / theirs_rate, 1), "max_score_difference": diff,
        "threads": threads}


def bench_labelling(example, policy, limit: int, n: int, m: int) -> dict:
    from rewardsql_sql_reward import SQLVerifier, extract_sql
    from rewardsql_sql_reward.annotate import build_prm_inputs
    from rewardsql_sql_reward.label import PrefixValues, label_response
    from rewardsql_sql_reward.policy import load_questions, stable_seed

    questions = load_questions(example.dev_json, example.db_root,
                               sample_values=example.sample_values)[:limit]
    generated: dict = {}
    totals = {"binary": 0, "every": 0}
    steps = equal = positive = responses_correct = responses = 0
    with SQLVerifier(example.db_root) as verifier:
        for q in questions:
            prompt = policy.prompt_text(q.messages)
            samples = policy.generate(prompt, n, seed=stable_seed(0, q.question_id))

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
            for search in totals:
                values = PrefixValues(complete, judge, m)
                labels[search] = [label_response(i.steps, i.failed, o, values, search)
                                  for i, o in zip(inputs, outcomes, strict=True)]
                totals[search] += values.generated
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
            "ratio": round(totals["every"] / max(totals["binary"], 1), 2), "n": n, "m": m}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, required=True,
                        help="a policy for the tiny example (e.g. rewardsql sft's output)")
    parser.add_argument("--prm", type=Path, help="the PRM (default: the tiny model as one)")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)

    from rewardsql.demo.tiny import build_example, build_tiny_model
    from rewardsql_sql_reward.policy import Policy

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
    policy = Policy(args.policy, device="cpu", temperature=1.0, max_new_tokens=128)
    limit, n = (4, 3) if args.quick else (20, 8)
    _, inputs = candidates(example, policy, limit, n)
    scoring = bench_scoring(prm, inputs, args.threads, 1 if args.quick else 3)
    print(json.dumps({"scoring": scoring}), flush=True)
    labelling = bench_labelling(example, policy, 4 if args.quick else 20, 4, 4)
    print(json.dumps({"labelling": labelling}), flush=True)
    print(f"scoring: PRMScorer {scoring['prmscorer_per_s']} candidates/s, HTTP service "
          f"{scoring['http_service_per_s']}/s: {scoring['ratio']}x (target >= 20x)")
    print(f"labelling: {labelling['per_step_every']} completions per labelled step for every "
          f"prefix, {labelling['per_step_binary']} for binary search: {labelling['ratio']}x "
          f"fewer (target >= 3x); equal hard labels {labelling['equal_hard_labels']} of "
          f"{labelling['labelled_steps']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
