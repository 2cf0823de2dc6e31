"""The local engine's PPO update on a real step (a tiny real Qwen2 model, verl's loss functions):
the loss is composed as verl's ppo_loss composes it, and the KL term pulls the policy towards
the reference (issue 27: a flipped KL sign passed every other test)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

from rewardsql.training.local.rollout import Rollout, batched_log_probs, positions
from rewardsql.training.local.settings import read_settings
from rewardsql.training.local.update import actor_config, ppo_update

PROMPT, RESPONSE = 3, 4


def _settings(entropy_coeff: float, kl_loss_coef: float):
    actor = {"ppo_mini_batch_size": 2, "use_kl_loss": True, "kl_loss_coef": kl_loss_coef,
             "kl_loss_type": "low_var_kl", "entropy_coeff": entropy_coeff}
    return read_settings({
        "data": {"train_files": "train.parquet", "train_batch_size": 2},
        "actor_rollout_ref": {"model": {"path": "unused"}, "actor": actor,
                              "rollout": {"n": 2}},
    })


def _model_and_reference() -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32))
    reference = copy.deepcopy(model)
    with torch.no_grad():  # a reference some way off the policy, so the KL is not zero
        for p in reference.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model, reference.eval()


def _rollout() -> Rollout:
    """Two groups of two responses; each group shares its prompt, as GRPO's do."""
    generator = torch.Generator().manual_seed(1)
    prompts = torch.randint(2, 16, (2, PROMPT), generator=generator).repeat_interleave(2, 0)
    responses = torch.randint(2, 16, (4, RESPONSE), generator=generator)
    input_ids = torch.cat([prompts, responses], 1)
    attention_mask = torch.ones_like(input_ids)
    response_mask = torch.ones_like(responses)
    response_mask[1, -1] = 0  # one response ended a token early
    return Rollout(input_ids, attention_mask, positions(attention_mask), responses,
                   response_mask, PROMPT)


def _mean_kl(model: torch.nn.Module, rollout: Rollout, ref: torch.Tensor) -> float:
    from verl.trainer.ppo.core_algos import kl_penalty

    log_probs = batched_log_probs(model, rollout, temperature=1.0, batch_size=None)
    kl = kl_penalty(logprob=log_probs, ref_logprob=ref, kl_penalty="low_var_kl")
    mask = rollout.response_mask.bool()
    return float(kl[mask].mean())


def _update(model, reference, *, entropy_coeff: float, kl_loss_coef: float, advantages,
            lr: float = 1e-3) -> tuple[dict[str, float], Rollout, torch.Tensor]:
    settings = _settings(entropy_coeff, kl_loss_coef)
    rollout = _rollout()
    ref = batched_log_probs(reference, rollout, temperature=1.0, batch_size=None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    metrics = ppo_update(model, optimizer, rollout, old_log_probs=None, ref_log_probs=ref,
                         advantages=advantages, config=actor_config(settings),
                         settings=settings, rng=np.random.default_rng(0))
    return metrics, rollout, ref


def test_loss_is_pg_minus_entropy_plus_kl_as_verl_composes_it() -> None:
    model, reference = _model_and_reference()
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])[:, None].expand(4, RESPONSE).clone()
    metrics, _, _ = _update(model, reference, entropy_coeff=0.01, kl_loss_coef=0.5,
                            advantages=advantages)
    pg, entropy, kl = metrics["actor/pg_loss"], metrics["actor/entropy"], metrics["actor/kl_loss"]
    assert kl > 0.01 and entropy > 0.1  # both terms matter at this size
    assert metrics["actor/loss"] == pytest.approx(pg - 0.01 * entropy + 0.5 * kl, rel=1e-5,
                                                  abs=1e-6)


def test_the_kl_term_pulls_the_policy_towards_the_reference() -> None:
    """No policy gradient (zero advantages) and no entropy bonus: only the KL term moves the
    weights, and each step must bring the policy closer to the reference."""
    model, reference = _model_and_reference()
    rollout = _rollout()
    ref = batched_log_probs(reference, rollout, temperature=1.0, batch_size=None)
    before = _mean_kl(model, rollout, ref)
    for _ in range(3):
        _update(model, reference, entropy_coeff=0.0, kl_loss_coef=1.0,
                advantages=torch.zeros(4, RESPONSE), lr=1e-2)
    after = _mean_kl(model, rollout, ref)
    assert before > 0.05
    assert after < 0.8 * before, (before, after)
