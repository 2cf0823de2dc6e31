"""Greedy dev-set evaluation: decode each dev prompt once and score it with the reward plugin."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rewardsql.rewards import RewardRequest, RewardResult
from rewardsql.training.local.data import Prompt
from rewardsql.training.local.rollout import generate
from rewardsql.training.local.scoring import RewardSource


@dataclass
class EvalResult:
    """``accuracy``: mean of the results' ``acc`` (execution accuracy for the SQL verifier), or
    of the scores when the reward reports no ``acc``."""

    accuracy: float
    reward_mean: float
    count: int
    statuses: dict[str, int] = field(default_factory=dict)
    #: Each prompt's ``acc`` (else its score), in the prompts' order.
    per_prompt: list[float] = field(default_factory=list)


def accuracy_of(results: Sequence[RewardResult]) -> float | None:
    """Mean ``acc`` of the results, or None when not every result reports one."""
    accs = [r.extra.get("acc") for r in results]
    if not results or any(a is None for a in accs):
        return None
    return sum(float(a) for a in accs) / len(accs)  # type: ignore[arg-type]


def status_counts(results: Sequence[RewardResult]) -> dict[str, int]:
    return dict(Counter(str(r.extra["status"]) for r in results if "status" in r.extra))


def extra_means(results: Sequence[RewardResult]) -> dict[str, float]:
    """The mean of each numeric key of the results' ``extra`` that every result reports, by its
    own name: e.g. ``sql_prm``'s ``prm_steps``, ``prm_reward_tokens`` and the 0/1
    ``prm_status_<status>`` (the fraction of responses with that status). verl hands the same
    ``extra`` on as ``reward_extra_info`` under these names, so both engines show one name for
    one number."""
    if not results:
        return {}
    means: dict[str, float] = {}
    for key in results[0].extra:
        values = [r.extra.get(key) for r in results]
        # bool is an int, and a 0/1 flag is what statuses are; strings (``status``) are counted
        # by status_counts instead
        if all(isinstance(v, (int, float)) for v in values):
            means[key] = sum(float(v) for v in values) / len(values)  # type: ignore[arg-type]
    return means


def requests_for(prompts: Sequence[Prompt], responses: Sequence[Sequence[int]],
                 tokenizer: Any) -> list[RewardRequest]:
    texts = tokenizer.batch_decode([list(r) for r in responses], skip_special_tokens=True)
    return [
        RewardRequest(response=text, ground_truth=p.ground_truth, data_source=p.data_source,
                      extra_info=p.extra_info, prompt=p.text, response_token_ids=tuple(resp))
        for p, text, resp in zip(prompts, texts, responses, strict=True)
    ]


def valid_responses(rollout: Any) -> list[list[int]]:
    lengths = rollout.response_mask.sum(-1).tolist()
    return [rollout.responses[i, :int(n)].tolist() for i, n in enumerate(lengths)]


def evaluate(model: Any, tokenizer: Any, prompts: Sequence[Prompt], reward: RewardSource, *,
             max_new_tokens: int, batch_size: int | None, do_sample: bool = False,
             temperature: float = 0.0, top_p: float = 1.0, top_k: int = -1) -> EvalResult:
    """Decode every prompt (greedy by default, verl's val_kwargs) and score the responses."""
    if not prompts:
        raise ValueError("no dev prompts to evaluate")
    rollout = generate(model, tokenizer, [p.input_ids for p in prompts],
                       max_new_tokens=max_new_tokens, do_sample=do_sample and temperature > 0,
                       temperature=temperature, top_p=top_p, top_k=top_k, batch_size=batch_size)
    results = reward.score(requests_for(prompts, valid_responses(rollout), tokenizer))
    acc = accuracy_of(results)
    mean = sum(r.score for r in results) / len(results)
    per_prompt = [float(r.extra.get("acc", r.score)) for r in results]
    return EvalResult(accuracy=mean if acc is None else acc, reward_mean=mean,
                      count=len(results), statuses=status_counts(results), per_prompt=per_prompt)
