"""Questions and a policy for the PRM commands (``rm label``, ``rerank``): Spider/BIRD JSON or
verl parquet questions, and sampling from a Hugging Face causal LM with transformers
(:class:`Policy`) or vLLM (:class:`~rewardsql_sql_reward.prm.vllm_policy.VLLMPolicy`), chosen
by ``--sampler`` (:func:`resolve_sampler`, :func:`open_sampler`)."""

from __future__ import annotations

import importlib.util
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from rewardsql.errors import ConfigError, MissingDependencyError, require

from rewardsql_sql_reward.data.prepare import GOLD_KEY, database_path
from rewardsql_sql_reward.data.prepare import load_questions as load_json_questions
from rewardsql_sql_reward.data.prompts import build_messages, schema_ddl


@dataclass(frozen=True)
class Question:
    """One question: its id, position, database, chat messages and gold SQL."""

    question_id: Any
    index: int
    db_id: str
    messages: list[dict[str, str]]
    gold: str


def _json_format(path: Path) -> str:
    import json

    try:
        first = json.loads(path.read_text(encoding="utf-8"))[0]
    except (ValueError, IndexError, KeyError, TypeError):
        return "spider"  # load_questions reports what is wrong
    return "bird" if isinstance(first, dict) and "SQL" in first else "spider"


def load_questions(path: Path, db_root: Path, *, sample_values: int = 3) -> list[Question]:
    """Questions of a Spider/BIRD JSON file (prompts built as ``rewardsql data prepare`` does)
    or of a verl parquet file (its prompts as they are)."""
    if not path.is_file():
        raise ConfigError("no such file", source=path)
    if path.suffix == ".parquet":
        require("pandas", "reading verl parquet questions", "data")
        import pandas as pd

        out = []
        for i, row in enumerate(pd.read_parquet(path).to_dict(orient="records")):
            try:
                info = row["extra_info"]
                messages = [dict(m) for m in row["prompt"]]
                out.append(Question(info.get("question_id", i), i, str(info["db_id"]), messages,
                                    str(row["reward_model"]["ground_truth"])))
            except (KeyError, TypeError) as exc:
                raise ConfigError(f"row {i}: not a verl RL row (prompt, reward_model."
                                  f"ground_truth, extra_info.db_id): missing {exc}",
                                  source=path) from None
        return out
    fmt = _json_format(path)
    schemas: dict[str, str] = {}
    out = []
    for i, item in enumerate(load_json_questions(path, fmt)):
        db_id = item["db_id"]
        if db_id not in schemas:
            db = database_path(db_root, db_id)
            if not db.is_file():
                raise ConfigError(f"question {i}: no database {db}", source=path)
            schemas[db_id] = schema_ddl(db, sample_values=sample_values)
        out.append(Question(item.get("question_id", i), i, db_id,
                            build_messages(schemas[db_id], item["question"],
                                           item.get("evidence")), item[GOLD_KEY[fmt]].strip()))
    return out


def stable_seed(*parts: Any) -> int:
    """A seed from values, the same in every process (``hash`` of a str is salted)."""
    return zlib.crc32(repr(parts).encode("utf-8"))


def _verl_checkpoint_hint(path: Path) -> str:
    """What to do when ``path`` is one of verl's checkpoints (a run's output directory,
    ``global_step_N`` or its ``actor/``): its FSDP shards are not a model directory."""
    if any((path / name).is_file() for name in (
            "latest_checkpointed_iteration.txt", "fsdp_config.json", "actor/fsdp_config.json")):
        return (f"; it is a verl checkpoint: `rewardsql export --checkpoint {path}` makes one "
                "(`rewardsql train` writes OUT/hf_model when it ends)")
    return ""


class Request(NamedTuple):
    """One generation: ``n`` continuations of ``text``, seeded by ``seed`` (sampled), or the
    greedy one ``n`` times. ``key`` says what it belongs to (a question): a sampler on several
    workers sends one key's requests to one worker, whose prefix cache holds their prompt."""

    text: str
    n: int
    seed: int
    greedy: bool = False
    key: Any = None


class Sampler(Protocol):
    """What ``rm label`` and ``rerank`` sample with: :class:`Policy` (transformers) or
    :class:`~rewardsql_sql_reward.prm.vllm_policy.VLLMPolicy` (vLLM). Temperature, top-p and
    the token budget are the sampler's; a seed makes a call reproducible on the same sampler
    (both samplers read the settings alike; they do not draw the same samples)."""

    name: str  # the model directory
    kind: str  # "transformers" or "vllm"

    def prompt_text(self, messages: Sequence[dict[str, str]]) -> str: ...

    def generate(self, text: str, n: int, *, seed: int, greedy: bool = False) -> list[str]: ...

    def generate_many(self, requests: Sequence[Request]) -> list[list[str]]: ...


#: ``--sampler`` values: ``auto`` is vLLM where it is installed and a GPU is present.
SAMPLERS = ("auto", "vllm", "transformers")
#: What ``--sampler vllm`` says where vLLM is missing.
VLLM_INSTALL = ("pip install vllm (on a GPU machine), or pip install 'rewardsql[verl-cpu]' for "
                "vLLM's CPU build")


def load_tokenizer(path: Path) -> tuple[Any, list[int]]:
    """The policy's tokenizer (left padding, a pad token) and the ids that end an answer (its
    end-of-sequence token and ``<|im_end|>``), the same for both samplers."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    ends = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    stop = sorted({e for e in ends if isinstance(e, int) and e >= 0
                   and e != tokenizer.unk_token_id})
    return tokenizer, stop


def chat_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """The prompt as a policy reads it: its chat template, ready for the answer (every
    sampler's ``prompt_text``)."""
    return str(tokenizer.apply_chat_template(list(messages), tokenize=False,
                                             add_generation_prompt=True))


def check_model_dir(path: str | Path) -> Path:
    """``path`` when it is a Hugging Face model directory, else a one-line error."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} is not a Hugging Face model directory (no config.json)"
                          + _verl_checkpoint_hint(path), source="--policy")
    return path


class Policy:
    """A Hugging Face causal LM that samples SQL responses (transformers, CPU or GPU).

    Every call is seeded, so the same question, prefix and seed give the same text in a later
    run (a resumed ``rm label`` repeats nothing and changes nothing).
    """

    kind = "transformers"

    def __init__(self, model_dir: str | Path, *, device: str = "auto", temperature: float = 1.0,
                 top_p: float = 1.0, max_new_tokens: int = 256, batch_size: int = 16) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        path = check_model_dir(model_dir)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer, self.stop = load_tokenizer(path)
        dtype = "auto" if device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        self.device = device
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.name = str(path)

    def prompt_text(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt as the policy reads it (its chat template, ready for the answer)."""
        return chat_prompt(self.tokenizer, messages)

    def generate(self, text: str, n: int, *, seed: int, greedy: bool = False) -> list[str]:
        """``n`` continuations of ``text`` (sampled at ``temperature`` and ``top_p``, or
        greedy)."""
        import torch

        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")
        out: list[str] = []
        for start in range(0, n, self.batch_size):
            count = min(self.batch_size, n - start)
            torch.manual_seed(seed + start)
            with torch.inference_mode():
                tokens = self.model.generate(
                    input_ids=ids["input_ids"].to(self.device),
                    attention_mask=ids["attention_mask"].to(self.device),
                    do_sample=not greedy, temperature=None if greedy else self.temperature,
                    top_p=None if greedy or self.top_p >= 1.0 else self.top_p, top_k=None,
                    num_return_sequences=count, max_new_tokens=self.max_new_tokens,
                    eos_token_id=self.stop or None, pad_token_id=self.tokenizer.pad_token_id)
            width = ids["input_ids"].shape[1]
            out += self.tokenizer.batch_decode(tokens[:, width:], skip_special_tokens=True)
        return out

    def generate_many(self, requests: Sequence[Request]) -> list[list[str]]:
        """Every request's continuations, in order (one after another: transformers gains
        nothing from a shared call here, and each stays seeded as when called alone)."""
        return [self.generate(r.text, r.n, seed=r.seed, greedy=r.greedy) for r in requests]


def vllm_installed() -> bool:
    """Whether vLLM can be imported here (its CUDA or CPU build)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def resolve_sampler(sampler: str) -> tuple[str, str]:
    """The sampler ``--sampler`` names (``vllm`` or ``transformers``) and why: ``auto`` is vLLM
    where it is installed and a GPU is present (vLLM's CPU build is slower than transformers for
    small models, and only ``--sampler vllm`` asks for it)."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"{sampler!r}: choose one of {', '.join(SAMPLERS)}", source="--sampler")
    if sampler != "auto":
        return sampler, "asked for"
    import torch

    if not torch.cuda.is_available():
        return "transformers", "auto: no GPU"
    if not vllm_installed():
        return "transformers", "auto: vLLM is not installed"
    return "vllm", "auto: vLLM and a GPU"


def open_sampler(sampler: str, model: str | Path, *, device: str = "auto",
                 temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 256,
                 engine_options: dict[str, Any] | None = None) -> Sampler:
    """The policy as a :class:`Sampler` of the kind ``sampler`` (``vllm`` or ``transformers``,
    see :func:`resolve_sampler`). ``engine_options`` go to vLLM's engine (``dtype``,
    ``tensor_parallel_size``, ...); ``device`` is the transformers sampler's."""
    path = check_model_dir(model)
    if sampler == "vllm":
        if not vllm_installed():
            raise MissingDependencyError(f"vLLM is not installed here: {VLLM_INSTALL}",
                                         source="--sampler vllm")
        from rewardsql_sql_reward.prm.vllm_policy import VLLMPolicy

        return VLLMPolicy(path, temperature=temperature, top_p=top_p,
                          max_new_tokens=max_new_tokens, engine_options=engine_options)
    if sampler != "transformers":
        raise ConfigError(f"{sampler!r}: choose vllm or transformers", source="--sampler")
    if engine_options:
        raise ConfigError(f"vLLM engine options ({', '.join(sorted(engine_options))}) need "
                          "--sampler vllm", source="--sampler transformers")
    return Policy(path, device=device, temperature=temperature, top_p=top_p,
                  max_new_tokens=max_new_tokens)


__all__ = ["SAMPLERS", "VLLM_INSTALL", "Policy", "Question", "Request", "Sampler",
           "check_model_dir", "load_questions", "load_tokenizer", "open_sampler",
           "resolve_sampler", "stable_seed", "vllm_installed"]
