"""``ServedPRMScorer``: step scores from a PRM that vLLM serves, over HTTP.

vLLM's ``POST /generative_scoring`` (vLLM 0.24 and 0.31, a plain causal-LM checkpoint in
generation mode, no engine flags) returns, for a query and a list of items, the probability of
the first of ``label_token_ids`` as the next token after ``query + item``, softmaxed over the
labels alone. With the labels ("+", "-") and one item per step (the candidate's ids up to and
including that step's tag) that is exactly the in-process score: softmax over the two candidate
logits at the tag. Ids are built here by :func:`~rewardsql.training.prm.encode.encode` and sent
as ids, never as a joined string (the tag must stay one token). The candidates of one prompt
go in one request with the prompt as the query, so vLLM's prefix cache serves what they share.

The server is checked when the scorer opens: it must answer, and serve the PRM directory given
(its model path resolves to that directory, or its served name is the directory's fingerprint,
as ``rewardsql rm serve`` names it). A request that fails or times out is retried a bounded
number of times; then :class:`PRMServerError` says which server and why. There is no fallback
score.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rewardsql.errors import ConfigError, RewardSQLError
from rewardsql.training.prm.encode import Encoded
from rewardsql.training.prm.scorer import StepScorer, load_prm_tokenizer

#: Seconds one scoring request may take before it is retried.
DEFAULT_TIMEOUT = 120.0
#: Retries of a failed or timed-out request before the scoring call fails.
DEFAULT_RETRIES = 2
#: Step prefixes per request (a question's candidates are split into requests of at most this).
MAX_ITEMS_PER_REQUEST = 256
#: The endpoint (vLLM 0.24 and 0.31).
SCORING_PATH = "/generative_scoring"
_FINGERPRINT_FILES = ("config.json", "prm_config.json", "tokenizer.json", "tokenizer_config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_EDGE_BYTES = 1 << 20


class PRMServerError(RewardSQLError, RuntimeError):
    """A PRM server did not answer, answered with an error, or serves another model. The message
    is one line and names the URL."""


def normalize_url(url: str) -> str:
    """``http://host:port`` from ``host:port`` (verl's router address) or a full URL."""
    url = url.strip().rstrip("/")
    if not url:
        raise ConfigError("an empty PRM server URL", key="prm_url")
    return url if "://" in url else f"http://{url}"


def prm_fingerprint(prm_dir: str | os.PathLike[str]) -> str:
    """A name for the PRM in ``prm_dir`` that changes with its configs, tokenizer and weights:
    ``rm serve`` serves the PRM under it, so a client elsewhere can tell it is the same PRM.

    Weights are read at their first and last MiB only (a multi-GB file is not hashed whole).
    """
    path = Path(prm_dir)
    digest = hashlib.sha256()
    for name in _FINGERPRINT_FILES:
        if (path / name).is_file():
            digest.update(name.encode() + b"\0" + (path / name).read_bytes())
    for weights in sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES):
        size = weights.stat().st_size
        digest.update(f"{weights.name}\0{size}\0".encode())
        with weights.open("rb") as handle:
            digest.update(handle.read(_EDGE_BYTES))
            handle.seek(max(0, size - _EDGE_BYTES))
            digest.update(handle.read(_EDGE_BYTES))
    return f"rewardsql-prm-{digest.hexdigest()[:16]}"


def _request(url: str, body: dict[str, Any] | None, timeout: float) -> Any:
    """One HTTP call: GET without ``body``, POST of JSON with it; the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def _reason(exc: BaseException) -> str:
    """A short cause: the server's own error message for an HTTP error, else the exception."""
    if isinstance(exc, urllib.error.HTTPError):
        try:
            detail = json.loads(exc.read() or b"{}")
            message = (detail.get("error") or {}).get("message") or detail.get("message")
        except (ValueError, AttributeError):
            message = None
        return f"HTTP {exc.code}" + (f": {message}" if message else "")
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def served_models(url: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The models a vLLM server at ``url`` serves (its ``/v1/models``); PRMServerError when it
    does not answer."""
    try:
        answer = _request(f"{url}/v1/models", None, timeout)
        return list(answer["data"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PRMServerError(f"the PRM server at {url} does not answer: {_reason(exc)}") from None


def pick_served_model(models: Sequence[dict[str, Any]], prm_dir: str | os.PathLike[str],
                      url: str) -> dict[str, Any]:
    """The entry of ``models`` that is the PRM in ``prm_dir``; PRMServerError naming what the
    server serves when none is."""
    wanted = Path(prm_dir).expanduser().resolve()
    name = prm_fingerprint(wanted)
    for model in models:
        root = model.get("root") or model.get("id") or ""
        if model.get("id") == name or (root and Path(root).expanduser().resolve() == wanted):
            return model
    served = ", ".join(str(m.get("root") or m.get("id")) for m in models) or "nothing"
    raise PRMServerError(f"the server at {url} serves {served}, not the PRM at {wanted} "
                         f"(serve it with `rewardsql rm serve --prm {wanted}`)")


def check_server(url: str, model_dir: Any, *, key: str = "prm_url") -> str:
    """Check that the server at ``url`` answers and serves the model in ``model_dir``; the
    normalized URL. A ConfigError naming ``key`` and the URL when not (``train --dry-run``)."""
    try:
        normalized = normalize_url(str(url))
        pick_served_model(served_models(normalized), model_dir, normalized)
    except PRMServerError as exc:
        raise ConfigError(str(exc), key=key) from None
    return normalized


class ServedPRMScorer(StepScorer):
    """Score candidates' steps on a vLLM server that serves the PRM in ``prm_dir``.

    Args:
        prm_dir: the PRM's directory on this machine: its tokenizer and ``prm_config.json``
            (tag, candidates) build the ids; the weights are not loaded.
        url: the server, ``http://host:port`` or ``host:port``.
        timeout: seconds per request before it is retried.
        retries: retries of a failed request before :meth:`score_encoded` raises.
        concurrency: requests in flight at once.
        max_length: longest input in tokens (trailing steps that do not fit are not scored);
            never more than the server's ``max_model_len`` - 1.
    """

    def __init__(self, prm_dir: str | os.PathLike[str], url: str, *,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                 concurrency: int = 8, max_length: int | None = None) -> None:
        if timeout <= 0 or retries < 0 or concurrency < 1:
            raise ConfigError("expected timeout > 0, retries >= 0 and concurrency >= 1, got "
                              f"{timeout}, {retries}, {concurrency}", key="prm_timeout")
        tokenizer, settings = load_prm_tokenizer(prm_dir)
        super().__init__(tokenizer, settings, max_length=max_length)
        self.url = normalize_url(url)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.concurrency = int(concurrency)
        model = pick_served_model(served_models(self.url), prm_dir, self.url)
        self.model_name = str(model.get("id"))
        served_limit = model.get("max_model_len")
        if served_limit:  # vLLM cuts longer prompts silently: cut whole steps here instead
            limit = int(served_limit) - 1
            self.max_length = min(self.max_length or limit, limit)
        #: requests sent, retried; prompt tokens sent (vLLM's usage counts)
        self.requests = self.retried = self.prompt_tokens = 0
        self._counting = threading.Lock()  # requests run in a thread pool

    def score_encoded(self, encoded: Sequence[Encoded]) -> list[list[float]]:
        """P("+") at every tag of every input: one request per prompt (chunked), in parallel."""
        out: list[list[float]] = [[] for _ in encoded]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, e in enumerate(encoded):
            if e.tag_positions:
                groups.setdefault(tuple(e.input_ids[:e.prompt_length]), []).append(i)
        jobs: list[tuple[list[int], list[tuple[int, int]], list[list[int]]]] = []
        for prompt, members in groups.items():
            slots, items = [], []
            for i in members:
                e = encoded[i]
                for k, position in enumerate(e.tag_positions):
                    slots.append((i, k))
                    items.append(e.input_ids[e.prompt_length:position + 1])
            for start in range(0, len(items), MAX_ITEMS_PER_REQUEST):
                end = start + MAX_ITEMS_PER_REQUEST
                jobs.append((list(prompt), slots[start:end], items[start:end]))
        for i, e in enumerate(encoded):
            out[i] = [0.0] * len(e.tag_positions)
        if not jobs:
            return out
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs))) as pool:
            answers = list(pool.map(lambda job: self._score_items(job[0], job[2]), jobs))
        for (_, slots, _), scores in zip(jobs, answers, strict=True):
            for (i, k), score in zip(slots, scores, strict=True):
                out[i][k] = score
        return out

    def _count(self, requests: int = 0, retried: int = 0, prompt_tokens: int = 0) -> None:
        with self._counting:
            self.requests += requests
            self.retried += retried
            self.prompt_tokens += prompt_tokens

    def _score_items(self, query: list[int], items: list[list[int]]) -> list[float]:
        body = {"model": self.model_name, "query": query, "items": items,
                "label_token_ids": [self.tokens.good_id, self.tokens.bad_id],
                "apply_softmax": True, "item_first": False, "add_special_tokens": False}
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._count(retried=1)
                time.sleep(min(2.0 ** attempt, 10.0))
            try:
                self._count(requests=1)
                answer = _request(f"{self.url}{SCORING_PATH}", body, self.timeout)
            except urllib.error.HTTPError as exc:
                last = _reason(exc)
                if 400 <= exc.code < 500:  # the request itself is wrong: retrying cannot help
                    break
                continue
            except (OSError, ValueError) as exc:
                last = _reason(exc)
                continue
            data = sorted(answer.get("data") or [], key=lambda d: d["index"])
            if len(data) != len(items):
                last = f"{len(data)} scores for {len(items)} items"
                continue
            self._count(prompt_tokens=int((answer.get("usage") or {}).get("prompt_tokens", 0)))
            return [float(d["score"]) for d in data]
        raise PRMServerError(f"the PRM server at {self.url} failed to score {len(items)} steps "
                             f"({attempt + 1} tries, timeout "
                             f"{self.timeout:g} s): {last}")


__all__ = ["DEFAULT_RETRIES", "DEFAULT_TIMEOUT", "PRMServerError", "ServedPRMScorer",
           "check_server", "normalize_url", "pick_served_model", "prm_fingerprint", "served_models"]
