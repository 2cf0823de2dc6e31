"""PRM token ids and ``PRMScorer`` on the tiny model: single-token checks, segment-built ids
(BPE merges around the tag), batched scores equal to an unbatched reference, aggregations."""

from __future__ import annotations

import math

import pytest
import torch
from _tiny_helpers import tiny_model
from rewardsql.errors import ConfigError
from rewardsql.training.prm import PRMScorer, aggregate, encode, split_tagged, tag_tokens
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT = "<|im_start|>user\nHow many shops? и count them<|im_end|>\n<|im_start|>assistant\n"
CANDIDATES = [
    ["WITH a AS (SELECT id FROM shop)", "SELECT COUNT(*) FROM a;"],
    ["SELECT COUNT(*) FROM shop;"],
    ["WITH a AS (SELECT id, name FROM shop WHERE id > 3)", "b AS (SELECT id FROM a)",
     "SELECT COUNT(*) FROM b;"],
    ["WITH x AS (SELECT 1)", "SELECT * FROM x"],
    ["SELECT name FROM shop ORDER BY name DESC LIMIT 4;"],
]


@pytest.fixture(scope="module")
def prm(tmp_path_factory):
    """The tiny model as an (untrained) PRM: any causal LM has the form of one."""
    path = tiny_model(tmp_path_factory)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _reference(model, tokenizer, prompt, steps, tag=" и ", candidates=("+", "-")):
    """One candidate at a time, the full LM head, ids from the segments: the spec's formula."""
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    tag_id = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(tag))[0]
    good, bad = (tokenizer.encode(c, add_special_tokens=False)[0] for c in candidates)
    positions = []
    for step in steps:
        ids += tokenizer.encode(step, add_special_tokens=False)
        positions.append(len(ids))
        ids.append(tag_id)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return [torch.softmax(logits[p, [good, bad]], -1)[0].item() for p in positions]


def test_tag_and_candidates_must_be_single_tokens(prm):
    _, tokenizer = prm
    tokens = tag_tokens(tokenizer)
    assert tokens.tag_id == tokenizer.encode(" и ", add_special_tokens=False)[0]
    with pytest.raises(ConfigError, match="exactly one token") as info:
        tag_tokens(tokenizer, tag="и")  # two byte-level tokens in this tokenizer
    assert info.value.key == "step_tag"
    with pytest.raises(ConfigError, match="exactly one token") as info:
        tag_tokens(tokenizer, candidates=(" +", "-"))
    assert info.value.key == "candidate_tokens"
    with pytest.raises(ConfigError, match="two candidate tokens"):
        tag_tokens(tokenizer, candidates=("+",))


def test_batched_scores_equal_the_unbatched_reference(prm):
    model, tokenizer = prm
    scorer = PRMScorer(model, tokenizer, batch_size=2)
    batched = scorer.score_many([(PROMPT, steps) for steps in CANDIDATES])
    for steps, scores in zip(CANDIDATES, batched, strict=True):
        reference = _reference(model, tokenizer, PROMPT, steps)
        assert len(scores) == len(steps)
        assert scores == pytest.approx(reference, abs=1e-5)
    assert scorer.score_steps(PROMPT, CANDIDATES[2]) == pytest.approx(batched[2], abs=1e-5)


def test_tags_in_the_prompt_are_not_steps(prm):
    _, tokenizer = prm
    tag_id = tag_tokens(tokenizer).tag_id
    encoded = encode(tokenizer, PROMPT, CANDIDATES[0], tag_id)
    assert tag_id in encoded.input_ids[:encoded.prompt_length]  # the prompt has " и "
    assert len(encoded.tag_positions) == 2
    assert all(p >= encoded.prompt_length for p in encoded.tag_positions)


def test_bpe_merges_around_the_tag(prm):
    # A newline tag after a step that ends in a newline: one joined string merges the two into
    # "\n\n" and the tag is gone; ids built from segments keep it
    model, tokenizer = prm
    steps = ["WITH a AS (SELECT id FROM shop)\n", "SELECT COUNT(*) FROM a\n"]
    newline = tokenizer.encode("\n", add_special_tokens=False)[0]
    joined = tokenizer.encode(PROMPT + "".join(s + "\n" for s in steps), add_special_tokens=False)
    prompt_length = len(tokenizer.encode(PROMPT, add_special_tokens=False))
    assert joined[prompt_length:].count(newline) < len(steps)
    encoded = encode(tokenizer, PROMPT, steps, newline)
    # the steps' own trailing newlines are text, not tags
    first = prompt_length + len(tokenizer.encode(steps[0], add_special_tokens=False))
    assert encoded.tag_positions == [first, len(encoded.input_ids) - 1]
    assert encoded.input_ids[first - 1] == encoded.input_ids[first] == newline
    scorer = PRMScorer(model, tokenizer, tag="\n")
    assert scorer.score_steps(PROMPT, steps) == pytest.approx(
        _reference(model, tokenizer, PROMPT, steps, tag="\n"), abs=1e-5)


def test_max_length_drops_whole_trailing_steps(prm):
    model, tokenizer = prm
    full = encode(tokenizer, PROMPT, CANDIDATES[2], tag_tokens(tokenizer).tag_id)
    cut = PRMScorer(model, tokenizer, max_length=full.tag_positions[1] + 1)
    scores = cut.score_steps(PROMPT, CANDIDATES[2])
    assert len(scores) == 2
    assert scores == pytest.approx(_reference(model, tokenizer, PROMPT, CANDIDATES[2])[:2],
                                   abs=1e-5)


def test_untagged_text_is_one_step_and_aggregations(prm):
    model, tokenizer = prm
    assert split_tagged("SELECT 1") == ["SELECT 1"]
    assert split_tagged("WITH a AS (SELECT 1) и SELECT * FROM a и ") == [
        "WITH a AS (SELECT 1)", "SELECT * FROM a"]
    scorer = PRMScorer(model, tokenizer)
    assert len(scorer.score_text(PROMPT, "SELECT COUNT(*) FROM shop")) == 1
    scores = [0.9, 0.5, 0.8]
    assert aggregate(scores, "min") == 0.5
    assert aggregate(scores, "product") == pytest.approx(0.36)
    assert aggregate(scores, "last_step") == 0.8
    assert aggregate(scores, "average") == pytest.approx(2.2 / 3)
    assert all(aggregate([], how) == 0.0 for how in ("min", "product", "last_step", "average"))
    with pytest.raises(ConfigError, match="unknown aggregation"):
        aggregate(scores, "max")
    assert not math.isnan(aggregate([0.0], "product"))


def test_shared_prompts_and_duplicates_score_like_the_reference(prm):
    from rewardsql.training.prm.scorer import step_probabilities

    model, tokenizer = prm
    other = "<|im_start|>user\nList the shops.<|im_end|>\n<|im_start|>assistant\n"
    items = [(PROMPT, CANDIDATES[0]), (other, CANDIDATES[1]), (PROMPT, CANDIDATES[2]),
             (PROMPT, CANDIDATES[0]), (other, CANDIDATES[3]), (PROMPT, CANDIDATES[4])]
    tokens = tag_tokens(tokenizer)
    encoded = [encode(tokenizer, p, s, tokens.tag_id) for p, s in items]
    shared = step_probabilities(model, encoded, tokens, batch_size=2, share_prompts=True)
    alone = step_probabilities(model, encoded, tokens, batch_size=2, share_prompts=False)
    assert shared[0] == shared[3]
    for (prompt, steps), a, b in zip(items, shared, alone, strict=True):
        reference = _reference(model, tokenizer, prompt, steps)
        assert a == pytest.approx(reference, abs=1e-5)
        assert b == pytest.approx(reference, abs=1e-5)
