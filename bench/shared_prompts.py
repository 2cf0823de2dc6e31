"""Benchmark of the local engine's shared prompt passes against one pass per row.

    python bench/shared_prompts.py            # the full run (about a minute on 2 cores)
    python bench/shared_prompts.py --quick    # a smoke run in seconds

Workload: a GRPO step's batch of the bundled example (`rl.parquet`, the `tiny` model): 8
prompts (~150 tokens of schema and question) x 8 sampled responses, as `rewardsql demo` runs it.
Measured side by side, in seconds per call (best of --repeats), for
  (a) `generate` (sampling, up to 48 new tokens);
  (b) `forward_log_probs` with its backward pass (the PPO update of those 64 rows);
each with share_prompts=True (the prompt's KV cache computed once per distinct prompt) and
share_prompts=False (every row runs its full prompt). Targets: plain/shared >= 1.2 for (a)
(decoding, not the prompt, is most of its time) and >= 2 for (b); sampled tokens identical,
log-probs equal within 1e-4. The untrained model writes all 48 tokens; the SFT model's ~35-token
answers make (a)'s share of prompt work, and so its ratio, larger.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def best_of(repeats: int, fn: Callable[[], object]) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 prompts x 4 responses, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import torch
    from rewardsql.demo.pipeline import grpo_plan
    from rewardsql.demo.tiny import build_example, build_tiny_model
    from rewardsql.training.local.local import load_prompts, load_tokenizer
    from rewardsql.training.local.rollout import forward_log_probs, generate
    from rewardsql.training.local.settings import read_settings

    prompts_n, group_n = (4, 4) if args.quick else (8, 8)
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        example = build_example(Path(tmp) / "example", seed=0, scale="quick")
        model_dir = build_tiny_model(Path(tmp) / "model", example.corpus(), seed=0, size="tiny")
        plan = grpo_plan(example, model_dir, Path(tmp) / "grpo", quick=True, seed=0)
        settings = read_settings(plan.config)
        tokenizer = load_tokenizer(settings)
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        prompts = [p.input_ids for p in load_prompts(settings, tokenizer, val=False)[:prompts_n]]
        rows = [p for p in prompts for _ in range(group_n)]

        def sample(share: bool):
            torch.manual_seed(0)
            return generate(model, tokenizer, rows, max_new_tokens=48, do_sample=True,
                            temperature=1.0, top_p=1.0, top_k=-1, share_prompts=share)

        def update(rollout, share: bool):
            def run():
                model.zero_grad()
                log_probs, _ = forward_log_probs(model, rollout, temperature=1.0,
                                                 with_entropy=True, share_prompts=share)
                (log_probs * rollout.response_mask).sum().backward()
                return log_probs.detach()
            return run

        gen_plain, rollout = best_of(repeats, lambda: sample(False))
        gen_shared, rollout_shared = best_of(repeats, lambda: sample(True))
        model.train()
        upd_plain, lp_plain = best_of(repeats, update(rollout, False))
        upd_shared, lp_shared = best_of(repeats, update(rollout, True))

    same_tokens = torch.equal(rollout.responses, rollout_shared.responses)
    valid = rollout.response_mask.bool()
    lp_diff = (lp_plain - lp_shared)[valid].abs().max().item()
    prompt_len = sum(len(p) for p in prompts) / len(prompts)
    print(f"{prompts_n} prompts x {group_n} responses, prompt {prompt_len:.0f} tokens, "
          f"responses {rollout.response_mask.sum(-1).float().mean():.0f} tokens on average, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'':28}{'plain s':>9}{'shared s':>10}{'plain/shared':>14}")
    print(f"{'(a) generate':28}{gen_plain:>9.3f}{gen_shared:>10.3f}{gen_plain / gen_shared:>14.2f}")
    print(f"{'(b) log-probs + backward':28}{upd_plain:>9.3f}{upd_shared:>10.3f}"
          f"{upd_plain / upd_shared:>14.2f}")
    print(f"sampled tokens identical: {same_tokens}; log-prob max difference {lp_diff:.1e}")
    ok = same_tokens and lp_diff < 1e-4
    if not args.quick:
        ok = ok and gen_plain / gen_shared >= 1.2 and upd_plain / upd_shared >= 2
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
