"""Sampling on several workers (``--workers N``): Ray actors, one sampler each (a vLLM engine,
or the model on transformers), on this machine or on a Ray cluster (``--ray-address``).

The driver keeps the work that must stay in one place (the label search, executions, the
output file); each round's requests go to the workers, split by question (a question's
requests stay on one worker, whose prefix cache holds its prompt), and come back in order. A
worker that dies stops the run with one line naming it; the output file is append-only and
resumable as without workers, so the same command goes on where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewardsql.errors import ConfigError, RewardSQLError, require

from rewardsql_sql_reward.prm.policy import Request, chat_prompt, check_model_dir, load_tokenizer


class WorkerDied(RewardSQLError):
    """A sampling worker died (killed, out of memory, its node lost)."""


class _Worker:
    """One sampler in a Ray actor (made remote by :func:`_remote_worker`)."""

    def __init__(self, kind: str, model: str, settings: dict[str, Any]) -> None:
        from rewardsql_sql_reward.prm.policy import open_sampler

        self.sampler = open_sampler(kind, model, **settings)

    def where(self) -> tuple[int, str]:
        import ray

        return os.getpid(), ray.util.get_node_ip_address()

    def generate_many(self, requests: Sequence[Request]) -> list[list[str]]:
        return self.sampler.generate_many(requests)


def _remote_worker(kind: str, tensor_parallel_size: int) -> Any:
    """The Ray actor class: a GPU per tensor-parallel rank where a GPU is asked for (vLLM on a
    GPU machine), else no resources (it runs on the CPUs it is given, as the driver does)."""
    import ray
    import torch

    gpus = tensor_parallel_size if torch.cuda.is_available() else 0
    # no restarts, no retries: a dead worker's engine state is gone, and rerunning the command
    # resumes exactly where the output file stops
    return ray.remote(num_cpus=0, num_gpus=gpus, max_restarts=0, max_task_retries=0)(_Worker)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """A ``host:port`` cluster must accept a connection: Ray in token mode waits for a cluster
    that is not there without end."""
    import socket

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # auto, ray://...: Ray finds or reports them itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"{address}: no Ray cluster to join ({exc})",
                          source="--ray-address") from None


def _present_auth_token() -> None:
    """Send the cluster's token when one is at hand. `ray start` turns Ray's token
    authentication on (Ray 2.60), but a client joining by ``host:port`` sends its token only
    with ``RAY_AUTH_MODE=token``; without it the cluster refuses it with a bare "failed to
    connect". A token-mode client joins a cluster without authentication too."""
    at_hand = (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
               or (Path.home() / ".ray" / "auth_token").is_file())
    if at_hand and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"


class ShardedSampler:
    """A :class:`~rewardsql_sql_reward.prm.policy.Sampler` over ``workers`` Ray actors, each
    with its own sampler of ``kind`` (``open_sampler``'s settings in ``settings``).

    ``address``: a Ray cluster to join (``ray.init``'s address: ``auto``, ``host:port``,
    ``ray://...``); without one a Ray instance of this process's own is started (never one
    that another process started). Close it (or use it as a context manager) to stop the
    workers.
    """

    def __init__(self, workers: int, kind: str, model: str | Path, *,
                 address: str | None = None, settings: dict[str, Any] | None = None) -> None:
        require("ray", "--workers", "verl")
        if address and address != "local":
            _check_reachable(address)
            _present_auth_token()  # before Ray is imported: it reads the mode then
        import ray

        if workers < 1:
            raise ConfigError(f"{workers}: must be positive", source="--workers")
        path = check_model_dir(model)
        self.tokenizer, _ = load_tokenizer(path)
        self.name, self.kind = str(path), kind
        settings = dict(settings or {})
        tensor_parallel = int((settings.get("engine_options") or {}).get(
            "tensor_parallel_size", 1))
        try:
            ray.init(address=address or "local", include_dashboard=False,
                     log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"{address}: no Ray cluster to join ({_first_line(exc)}; a "
                              "cluster with token authentication needs its token in "
                              "~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)",
                              source="--ray-address") from None
        actor = _remote_worker(kind, tensor_parallel)
        self.actors = [actor.remote(kind, str(path), settings) for _ in range(workers)]
        self.where: list[tuple[int, str] | None] = [None] * workers
        self.where = self._get([a.where.remote() for a in self.actors])  # waits for the starts
        self.assigned: dict[Any, int] = {}

    def describe(self) -> list[str]:
        """One line per worker: its number, process and node."""
        return [f"worker {i}: pid {pid} on {node}"
                for i, (pid, node) in enumerate(w for w in self.where if w is not None)]

    def prompt_text(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt as the policy reads it (its chat template, ready for the answer)."""
        return chat_prompt(self.tokenizer, messages)

    def generate(self, text: str, n: int, *, seed: int, greedy: bool = False) -> list[str]:
        """``n`` continuations of ``text`` (on one worker)."""
        return self.generate_many([Request(text, n, seed, greedy)])[0]

    def generate_many(self, requests: Sequence[Request]) -> list[list[str]]:
        """Every request's continuations, in order: each worker gets the requests of the keys
        (questions) it was given, all in one call, and the workers run at once. A key goes to
        the worker with the fewest keys when it is first seen."""
        shares: list[list[int]] = [[] for _ in self.actors]
        for i, r in enumerate(requests):
            key = r.text if r.key is None else r.key
            if key not in self.assigned:
                load = [0] * len(self.actors)
                for w in self.assigned.values():
                    load[w] += 1
                self.assigned[key] = load.index(min(load))
            shares[self.assigned[key]].append(i)
        busy = [w for w, share in enumerate(shares) if share]
        results = self._get([self.actors[w].generate_many.remote([requests[i] for i in shares[w]])
                             for w in busy], busy)
        out: list[list[str]] = [[] for _ in requests]
        for w, texts in zip(busy, results, strict=True):
            for i, text in zip(shares[w], texts, strict=True):
                out[i] = text
        return out

    def _get(self, futures: list[Any], workers: list[int] | None = None) -> list[Any]:
        """The futures' values; a worker that died (or failed to start) is one line naming
        it."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        workers = list(range(len(futures))) if workers is None else workers
        values = []
        for w, future in zip(workers, futures, strict=True):
            try:
                values.append(ray.get(future))
            except (RayActorError, RayTaskError) as exc:
                where = self.where[w]
                name = f"worker {w}" + (f" (pid {where[0]} on {where[1]})" if where else "")
                self.close()
                why = _first_line(exc).rstrip(".")
                raise WorkerDied(f"{name} died: {why}; run the same command again to go on "
                                 "(finished questions are kept)") from None
        return values

    def close(self) -> None:
        """Stop the workers (and the Ray instance this process started)."""
        import ray

        for actor in getattr(self, "actors", []):
            ray.kill(actor)
        self.actors = []
        ray.shutdown()

    def __enter__(self) -> ShardedSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    """The first line that says something of an exception's message (Ray's run to many)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


__all__ = ["ShardedSampler", "WorkerDied"]
