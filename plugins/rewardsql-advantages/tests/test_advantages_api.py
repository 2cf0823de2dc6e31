"""Calling conventions, config handling, input forms, errors and plugin registration."""

from __future__ import annotations

import numpy as np
import pytest
import rewardsql
import rewardsql_advantages
import torch
from _advantages_batches import index_as, random_batch
from rewardsql_advantages import (
    compute_grpo_min_form_advantage,
    compute_grpo_process_advantage_avg_unique,
    compute_grpo_process_fallback_advantage,
    compute_token_wise_advantage,
    compute_weighted_grpo_advantage,
)
from rewardsql_advantages import plugin as advantages_plugin

VARIANTS = [
    compute_grpo_process_advantage_avg_unique,
    compute_weighted_grpo_advantage,
    compute_token_wise_advantage,
    compute_grpo_min_form_advantage,
    compute_grpo_process_fallback_advantage,
]
NAMES = {
    "grpo_process_avg_unique": compute_grpo_process_advantage_avg_unique,
    "grpo_weighted": compute_weighted_grpo_advantage,
    "grpo_token_wise": compute_token_wise_advantage,
    "grpo_min_form": compute_grpo_min_form_advantage,
    "grpo_process_fallback": compute_grpo_process_fallback_advantage,
}


@pytest.fixture
def batch():
    rng = np.random.default_rng(5)
    b = random_batch(rng, grouping="ragged", max_groups=4, max_size=5, max_width=10)
    while len(set(b.uids)) == len(b.uids):  # at least one group of two
        b = random_batch(rng, grouping="ragged", max_groups=4, max_size=5, max_width=10)
    return b


# -- registration ----------------------------------------------------------------------------


def test_hook_registers_every_name_with_its_function_name_as_alias() -> None:
    seen = {}

    def register(name, obj, aliases=(), summary=""):
        seen[name] = (obj, tuple(aliases), summary)

    advantages_plugin.rewardsql_advantage_estimators(register=register)
    assert {name: obj for name, (obj, _, _) in seen.items()} == NAMES
    for name, (obj, aliases, summary) in seen.items():
        assert aliases == (obj.__name__,), name
        assert summary


def test_rewardsql_finds_every_name_and_alias_through_the_entry_point() -> None:
    rewardsql.reset_registry()
    try:
        for name, fn in NAMES.items():
            assert rewardsql.get_advantage_estimator(name) is fn
            assert rewardsql.get_advantage_estimator(fn.__name__) is fn
            assert getattr(rewardsql_advantages, fn.__name__) is fn
    finally:
        rewardsql.reset_registry()


# -- calling conventions ---------------------------------------------------------------------


@pytest.mark.parametrize("fn", VARIANTS)
def test_verl_keywords_published_positionals_and_eos_mask_agree(fn, batch) -> None:
    by_keyword, returns = fn(
        token_level_rewards=batch.rewards, response_mask=batch.mask, index=batch.uids, config=None
    )
    assert returns is by_keyword
    positional, _ = fn(batch.rewards, batch.mask, batch.uids)
    published, _ = fn(token_level_rewards=batch.rewards, eos_mask=batch.mask, index=batch.uids)
    extra, _ = fn(
        token_level_rewards=batch.rewards,
        response_mask=batch.mask,
        index=batch.uids,
        config={},
        reward_baselines=torch.zeros(len(batch.uids)),
        norm_adv_by_std_in_grpo=True,
        something_new="ignored",
    )
    for other in (positional, published, extra):
        assert torch.equal(other, by_keyword)


@pytest.mark.parametrize("fn", VARIANTS)
@pytest.mark.parametrize("kind", ["list", "tensor", "int_list"])
def test_index_forms_give_the_same_result(fn, kind, batch) -> None:
    want, _ = fn(batch.rewards, batch.mask, batch.uids)
    got, _ = fn(batch.rewards, batch.mask, index_as(batch.uids, kind))
    assert torch.equal(got, want)


@pytest.mark.parametrize("fn", VARIANTS)
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int32, torch.float32])
def test_mask_dtypes_give_the_same_result(fn, mask_dtype, batch) -> None:
    want, _ = fn(batch.rewards, batch.mask, batch.uids)
    got, _ = fn(batch.rewards, batch.mask.to(mask_dtype), batch.uids)
    assert torch.equal(got, want)


@pytest.mark.parametrize("fn", VARIANTS)
def test_no_autograd_graph_and_input_untouched(fn, batch) -> None:
    rewards = batch.rewards.clone().requires_grad_(True)
    before = rewards.detach().clone()
    adv, _ = fn(rewards, batch.mask, batch.uids)
    assert not adv.requires_grad and adv.grad_fn is None
    assert torch.equal(rewards.detach(), before)


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", VARIANTS)
def test_epsilon_from_config_and_explicit_argument_wins(fn, batch) -> None:
    omegaconf = pytest.importorskip("omegaconf")
    default, _ = fn(batch.rewards, batch.mask, batch.uids)
    explicit, _ = fn(batch.rewards, batch.mask, batch.uids, epsilon=0.5)
    assert not torch.allclose(default, explicit)
    for config in ({"epsilon": 0.5}, omegaconf.OmegaConf.create({"epsilon": 0.5})):
        from_config, _ = fn(batch.rewards, batch.mask, batch.uids, config=config)
        assert torch.equal(from_config, explicit)
    winner, _ = fn(batch.rewards, batch.mask, batch.uids, epsilon=0.5, config={"epsilon": 9.0})
    assert torch.equal(winner, explicit)
    unset, _ = fn(batch.rewards, batch.mask, batch.uids, config={"epsilon": None, "gamma": 1.0})
    assert torch.equal(unset, default)


def test_weight_factor_from_config_and_explicit_argument_wins(batch) -> None:
    fn = compute_weighted_grpo_advantage
    default, _ = fn(batch.rewards, batch.mask, batch.uids)
    explicit, _ = fn(batch.rewards, batch.mask, batch.uids, weight_factor=0.1)
    assert not torch.allclose(default, explicit)
    positional, _ = fn(batch.rewards, batch.mask, batch.uids, 0.1)  # published order
    from_config, _ = fn(batch.rewards, batch.mask, batch.uids, config={"weight_factor": 0.1})
    assert torch.equal(positional, explicit) and torch.equal(from_config, explicit)
    winner, _ = fn(
        batch.rewards, batch.mask, batch.uids, weight_factor=0.1, config={"weight_factor": 0.9}
    )
    assert torch.equal(winner, explicit)


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", VARIANTS)
def test_bad_inputs_are_named(fn, batch) -> None:
    r, m, uids = batch.rewards, batch.mask, batch.uids
    with pytest.raises(ValueError, match=r"'epsilon'.*'tiny'"):
        fn(r, m, uids, config={"epsilon": "tiny"})
    with pytest.raises(TypeError, match="config must be a mapping"):
        fn(r, m, uids, config=0.5)
    with pytest.raises(ValueError, match="index has 1 entries but the batch has"):
        fn(r, m, uids[:1])
    with pytest.raises(ValueError, match=r"index .* is required"):
        fn(r, m, None)
    with pytest.raises(ValueError, match="must be 2-D"):
        fn(r[0], m[0], uids)
    with pytest.raises(TypeError, match="floating point"):
        fn(r.long(), m, uids)
    if fn is not compute_grpo_process_advantage_avg_unique:  # the process variant ignores masks
        with pytest.raises(ValueError, match="response_mask has shape"):
            fn(r, m[:, :1], uids)
        with pytest.raises(ValueError, match=r"response_mask .* is required"):
            fn(token_level_rewards=r, index=uids)


@pytest.mark.parametrize("fn", VARIANTS)
@pytest.mark.parametrize("shape", [(0, 4), (3, 0)])
def test_empty_batches(fn, shape) -> None:
    rewards = torch.zeros(shape)
    adv, ret = fn(rewards, torch.ones(shape), [f"u{i % 2}" for i in range(shape[0])])
    assert adv.shape == shape and ret is adv


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fn", VARIANTS)
def test_cuda_matches_cpu(fn, batch) -> None:
    cpu, _ = fn(batch.rewards, batch.mask, batch.uids)
    gpu, _ = fn(batch.rewards.cuda(), batch.mask.cuda(), batch.uids)
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn", VARIANTS)
def test_non_contiguous_inputs(fn, batch) -> None:
    """verl's response_mask is a column slice of the attention mask; rewards may be views too."""
    width = batch.rewards.shape[1]
    wide_mask = torch.cat([torch.ones_like(batch.mask), batch.mask], dim=1)[:, width:]
    wide_rewards = torch.cat([batch.rewards, batch.rewards], dim=1)[:, width:]
    transposed = batch.rewards.t().contiguous().t()
    assert not wide_mask.is_contiguous() and not transposed.is_contiguous()
    want, _ = fn(batch.rewards, batch.mask, batch.uids)
    for rewards, mask in ((wide_rewards, wide_mask), (transposed, batch.mask.t().contiguous().t())):
        got, _ = fn(rewards, mask, batch.uids)
        assert torch.equal(got, want)
