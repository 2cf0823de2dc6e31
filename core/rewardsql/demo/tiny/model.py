"""``build_tiny_model``: a tokenizer trained on the example's text and a small Qwen2 causal LM.

Nothing is downloaded: the BPE tokenizer is trained with the ``tokenizers`` library and the model
is a freshly initialised ``Qwen2ForCausalLM``. Both are saved in Hugging Face format, so every
command loads them with ``AutoTokenizer`` / ``AutoModelForCausalLM`` like any other model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from rewardsql.io import atomic_directory, atomic_write_json

#: Bump when the builder's output changes, so old caches are rebuilt.
BUILDER_VERSION = 2
#: The PRM's step tag (spec/cocte.md); it must encode to exactly one token.
STEP_TAG = " и "
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
#: Qwen2's ChatML template, without a default system message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: Model sizes: (hidden size, layers, attention heads, key/value heads, MLP size, vocabulary).
#: With the example's ~840-token vocabulary: micro ~0.1M parameters (tests only: fast, learns
#: little), mini ~0.7M, tiny ~1.7M (the default), small ~5M.
SIZES: dict[str, tuple[int, int, int, int, int, int]] = {
    "micro": (64, 2, 4, 2, 128, 2048),
    "mini": (128, 3, 4, 2, 384, 2048),
    "tiny": (192, 4, 6, 2, 512, 2048),
    "small": (256, 6, 8, 4, 768, 4096),
}
MAX_POSITIONS = 1024
_ROLES = "system\nuser\nassistant"


def _manifest(corpus_digest: str, seed: int, size: str) -> dict:
    return {"builder_version": BUILDER_VERSION, "corpus_sha256": corpus_digest, "seed": seed,
            "size": size, "sizes": list(SIZES[size])}


def build_tiny_model(out_dir: str | os.PathLike[str], corpus: Iterable[str], *, seed: int = 0,
                     size: str = "tiny") -> Path:
    """Train a tokenizer on ``corpus``, build a small Qwen2 model, save both to ``out_dir``.

    A no-op when ``out_dir`` already holds a build from the same corpus, seed and size. Returns
    ``out_dir``. The step tag " и " and the PRM's candidates "+" and "-" are single tokens.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    out = Path(out_dir)
    texts = [t for t in corpus if t]
    if not texts:
        raise ValueError("the corpus is empty: the tokenizer needs text to train on")
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()
    manifest = _manifest(digest, seed, size)
    marker = out / "rewardsql_tiny.json"
    try:
        if json.loads(marker.read_text(encoding="utf-8")) == manifest:
            return out
    except (OSError, ValueError):
        pass

    with atomic_directory(out) as tmp:
        # The chat template's role names are in every prompt: make each one token
        tokenizer = train_tokenizer(texts + [_ROLES] * 2, vocab_size=SIZES[size][5])
        model = _init_model(tokenizer, size, seed)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _name_tokenizer_class(tmp / "tokenizer_config.json")
        atomic_write_json(tmp / "rewardsql_tiny.json", manifest)
    return out


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer with Qwen2's text pipeline and ChatML special tokens.

    ``AutoTokenizer`` loads a ``qwen2`` model's tokenizer as ``Qwen2Tokenizer``, which rebuilds
    Qwen2's normalizer and pre-tokenizer around the saved vocabulary; training with that same
    pipeline makes the loaded tokenizer encode exactly as the trained one (digits one by one).
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                         special_tokens=list(SPECIAL_TOKENS),
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    # Not special: the tag is text the policy writes and the PRM reads, and it must survive
    # decode(skip_special_tokens=True).
    tok.add_tokens([AddedToken(STEP_TAG, normalized=False, special=False)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        model_max_length=MAX_POSITIONS)
    fast.chat_template = CHAT_TEMPLATE
    for text in (STEP_TAG, "+", "-"):
        ids = fast.encode(text, add_special_tokens=False)
        if len(ids) != 1:  # pragma: no cover - guards the tokenizer recipe above
            raise RuntimeError(f"{text!r} encodes to {len(ids)} tokens, expected 1")
    return fast


def _name_tokenizer_class(path: Path) -> None:
    """Record the class ``AutoTokenizer`` should build (transformers 4 and 5 both know it)."""
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "Qwen2Tokenizer"
    atomic_write_json(path, config)


def _init_model(tokenizer, size: str, seed: int):
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    hidden, layers, heads, kv_heads, mlp, _ = SIZES[size]
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=mlp,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=eos, pad_token_id=pad, torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad,
                                               bos_token_id=None)
    return model

