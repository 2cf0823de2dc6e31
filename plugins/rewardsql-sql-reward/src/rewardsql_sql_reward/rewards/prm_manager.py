"""The reward manager ``sql_prm``: process rewards from a PRM plus the SQL outcome, per token.

Per batch (spec/cocte.md, "Reward composition inside RL"): every response is verified once
(``sql_verifier``'s one ``verify_batch``), its steps are executed and annotated with the one
builder (:func:`~rewardsql_sql_reward.rewards.annotate.build_prm_inputs`), every step of every
response is scored by the PRM in padded batches, and the token rewards are composed:

- process: ``process_weight x step score`` on the policy token that ends each step
  (``step_end``), or on every token of the step (``fill``, the published behaviour);
- outcome: ``outcome_weight x outcome`` on every token (``all_tokens``, published beside a PRM)
  or on the last one (``last_token``).

Step ends are found in the text the policy's own tokens decode to and mapped to those tokens by
prefix decoding, so the PRM's tokenizer may differ from the policy's and a token that spans a
step boundary (a BPE merge) is the step's last token. A response whose steps cannot be annotated
or located is not scored by the PRM and says so in ``extra`` (``prm_status_*``); nothing is
silently scored on other text, and there is no fallback reward.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewardsql import RewardManager, RewardRequest, RewardResult
from rewardsql.errors import ConfigError
from rewardsql.schema import setting, to_dict
from rewardsql.section import MANAGER_SETTINGS_KEY

# names only: torch loads when a PRM is loaded
from rewardsql.training.prm import DEFAULT_RETRIES, DEFAULT_TIMEOUT, SCORING, models_loaded

from rewardsql_sql_reward.rewards.annotate import Annotation, PRMInput, build_prm_inputs
from rewardsql_sql_reward.rewards.reward_fn import database_path
from rewardsql_sql_reward.rewards.verifier_manager import SQLVerifierManager, SQLVerifierSettings

PROCESS_PLACEMENTS = ("step_end", "fill")
OUTCOME_PLACEMENTS = ("all_tokens", "last_token")
#: Why a response got no process reward (``ok``: it got one).
PRM_STATUSES = ("ok", "no_steps", "no_database", "unmapped", "off")


@dataclass(frozen=True)
class SQLPRMSettings:
    """The settings of ``sql_prm`` (``rewardsql.reward_manager`` in a training config)."""

    prm_path: str | None = setting(
        None, "The PRM: a Hugging Face model directory; its tokenizer and prm_config.json (the "
              "step tag, the candidates, the annotation it was trained with) build its input "
              "wherever it is scored. Required with a process weight.")
    prm_url: str | None = setting(
        None, "A vLLM server of the PRM that you run (`rewardsql rm serve`), http://host:port; "
              "it must serve prm_path. null: on verl, verl's own reward-model server; on the "
              "local engine, the PRM in process.")
    prm_scoring: str = setting(
        "auto", "Where the PRM is scored: server (prm_url, else verl's reward-model server), "
                "in_process (transformers in the reward worker: the weights load there), auto "
                "(a server when one is known, else in process).", choices=SCORING)
    prm_timeout: float = setting(DEFAULT_TIMEOUT, "Seconds one scoring request to the PRM "
                                                  "server may take before it is retried.")
    prm_retries: int = setting(DEFAULT_RETRIES, "Retries of a failed or timed-out scoring "
                                                "request; then the step fails, naming the "
                                                "server (no fallback reward).")
    device: str = setting("auto", "In process only: where the PRM runs, auto (a GPU when there "
                                  "is one), cpu, cuda or cuda:N. The local engine sets cpu "
                                  "under trainer.device=cpu.")
    batch_size: int = setting(16, "In process only: responses per PRM forward pass.")
    max_length: int | None = setting(None, "Longest PRM input in tokens (later steps are not "
                                           "scored); null: prm_config.json's, else no limit.")
    process_placement: str = setting(
        "step_end", "Where a step's score goes: step_end (the policy token ending the step) or "
                    "fill (every token of the step, the published behaviour).",
        choices=PROCESS_PLACEMENTS)
    outcome_placement: str | None = setting(
        None, "Where the outcome goes: all_tokens (every token, published beside a PRM) or "
              "last_token; null: all_tokens when the process weight is > 0, else last_token.",
        choices=(None, *OUTCOME_PLACEMENTS))
    process_weight: float = setting(0.0, "The process weight (filled from the reward "
                                              "weights' process).")
    outcome_weight: float = setting(1.0, "The outcome weight (filled from the reward "
                                              "weights' outcome).")
    verifier: SQLVerifierSettings = setting(
        SQLVerifierSettings(), "The SQL verifier (sql_verifier's settings; its placement is "
                               "not used: outcome_placement says where the outcome goes).")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"expected a positive integer, got {self.batch_size!r}",
                              key="batch_size")
        if self.process_weight < 0 or self.outcome_weight < 0:
            raise ConfigError("reward weights must not be negative", key="process_weight")
        if self.prm_timeout <= 0 or self.prm_retries < 0:
            raise ConfigError("expected prm_timeout > 0 and prm_retries >= 0",
                              key="prm_timeout" if self.prm_timeout <= 0 else "prm_retries")
        if self.process_weight > 0 and not self.prm_path:
            raise ConfigError("the process weight is > 0 and no PRM is named: set "
                              f"{MANAGER_SETTINGS_KEY}.prm_path", key="prm_path")


def outcome_placement_of(settings: SQLPRMSettings) -> str:
    """The outcome placement in effect: the setting, else all_tokens beside a PRM (a process
    weight > 0), else last_token."""
    return settings.outcome_placement or (
        "all_tokens" if settings.process_weight > 0 else "last_token")


def step_end_tokens(tokenizer: Any, token_ids: Sequence[int], steps: Sequence[str]
                    ) -> list[int] | None:
    """The index of the policy token that ends each step, or None when a step is not found.

    Steps are located in order in the text ``token_ids`` decode to; the token ending a step is
    the first k whose prefix ``token_ids[:k+1]`` decodes to at least the step's end (checked
    exactly, so a token spanning the step's end and the separator is that step's last token).
    """
    def decoded(k: int) -> str:
        return str(tokenizer.decode(list(token_ids[:k]), skip_special_tokens=True))

    text = decoded(len(token_ids))
    ends: list[int] = []
    cursor = 0
    for step in steps:
        at = text.find(step, cursor)
        if at < 0:
            return None
        cursor = at + len(step)
        lo, hi = max(1, ends[-1] + 1 if ends else 1), len(token_ids)
        while lo < hi:  # smallest prefix length whose text reaches the step's end
            mid = (lo + hi) // 2
            if len(decoded(mid)) >= cursor:
                hi = mid
            else:
                lo = mid + 1
        if decoded(lo)[:cursor] != text[:cursor]:
            return None
        ends.append(lo - 1)
    return ends


def compose(length: int, ends: Sequence[int], scores: Sequence[float], outcome: float,
            settings: SQLPRMSettings, outcome_placement: str) -> list[float]:
    """The token rewards of one response of ``length`` tokens (spec/cocte.md).

    ``scores[k]`` belongs to the step ending at token ``ends[k]`` (steps the PRM did not score,
    e.g. cut by ``max_length``, have no score and get none).
    """
    rewards = [0.0] * length
    start = 0
    for end, score in zip(ends, scores, strict=False):
        value = settings.process_weight * score
        if settings.process_placement == "fill":
            for t in range(start, end + 1):
                rewards[t] = value
        else:
            rewards[end] = value
        start = end + 1
    if length and outcome_placement == "all_tokens":
        rewards = [r + settings.outcome_weight * outcome for r in rewards]
    elif length:
        rewards[-1] += settings.outcome_weight * outcome
    return rewards


class SQLPRMManager(RewardManager):
    """Process (PRM) plus outcome (SQL execution) rewards, one value per response token.

    Settings: :class:`SQLPRMSettings`; the weights come from ``rewardsql.reward_weights``
    (:meth:`settings_for_weights`), and the manager applies them itself (``composes_weights``).
    ``extra`` (numeric, per response; their batch means are the metrics): ``acc``,
    ``sql_seconds``, ``status_<verifier status>``, ``prm_step_score`` (mean step score),
    ``prm_steps`` (steps scored), ``prm_reward_tokens`` (tokens given a process reward),
    ``prm_seconds`` (the batch's PRM time), ``prm_models_loaded`` (PRM models loaded in this
    process: 0 when a server scores it), ``prm_status_<s>``
    for each of :data:`PRM_STATUSES`. ``score`` is ``outcome_weight x outcome +
    process_weight x mean step score``. Needs the policy's ``tokenizer``.

    The PRM is scored on a vLLM server (``prm_url``, else ``reward_model_url``: verl's
    reward-model server) or in this process (``prm_scoring``).
    """

    Settings = SQLPRMSettings
    settings: SQLPRMSettings
    composes_weights = True
    reward_model_setting = "prm_path"
    reward_model_url_setting = "prm_url"
    needs_tokenizer = True  # `rewardsql plugins check` then hands it a real tokenizer

    @classmethod
    def token_layout(cls, settings: SQLPRMSettings) -> dict[str, Any]:
        """The placements in effect (an estimator such as ``grpo_min_form`` that reads step
        scores back from the token rewards needs to know them)."""
        return {"process_placement": settings.process_placement,
                "outcome_placement": outcome_placement_of(settings)}

    @classmethod
    def settings_for_weights(cls, config: Mapping[str, Any], weights: Any) -> dict[str, Any]:
        """The weights as settings; the outcome on every token beside a PRM, else on the last."""
        out = dict(config)
        out.setdefault("process_weight", float(weights.process))
        out.setdefault("outcome_weight", float(weights.outcome))
        return out

    def __init__(self, config: Mapping[str, Any] | None = None, *, tokenizer: Any = None,
                 compute_score: Any = None, reward_model_url: str | None = None) -> None:
        super().__init__(config, tokenizer=tokenizer, compute_score=compute_score,
                         reward_model_url=reward_model_url)
        if tokenizer is None:
            raise ConfigError("sql_prm places rewards on the policy's tokens and needs the "
                              "policy's tokenizer", key="tokenizer")
        s = self.settings
        self.outcome_placement = outcome_placement_of(s)
        self.scorer = None
        self.annotation = Annotation()
        if s.process_weight > 0:
            from rewardsql.training.prm import open_scorer

            self.scorer = open_scorer(s.prm_path, url=s.prm_url or reward_model_url,
                                      scoring=s.prm_scoring, device=s.device,
                                      batch_size=s.batch_size, max_length=s.max_length,
                                      timeout=s.prm_timeout, retries=s.prm_retries)
            self.annotation = Annotation.from_prm_config(self.scorer.settings)
        self.outcome = SQLVerifierManager({**to_dict(s.verifier), "placement": "last_token"})

    def score_batch(self, requests: Sequence[RewardRequest]) -> list[RewardResult]:
        outcomes = self.outcome.score_batch(requests)  # one verify_batch; infra-error limit
        n = len(requests)
        status = ["off" if self.scorer is None else "ok"] * n
        steps_scores: list[list[float]] = [[] for _ in range(n)]
        ends: list[list[int]] = [[] for _ in range(n)]
        seconds = 0.0
        if self.scorer is not None:
            seconds = self._score_steps(requests, status, steps_scores, ends)
        return [self._result(req, out, status[i], steps_scores[i], ends[i], seconds)
                for i, (req, out) in enumerate(zip(requests, outcomes, strict=True))]

    def _score_steps(self, requests: Sequence[RewardRequest], status: list[str],
                     scores: list[list[float]], ends: list[list[int]]) -> float:
        """Annotate, locate and score every response's steps; fill ``status``, ``scores``,
        ``ends`` in place; return the PRM's seconds."""
        assert self.scorer is not None
        items, where = [], []
        for i, request in enumerate(requests):
            try:
                db = database_path(request.extra_info, self.settings.verifier.db_root)
            except ValueError:
                status[i] = "no_database"
                continue
            items.append((request.prompt, request.response, db))
            where.append(i)
        inputs: list[PRMInput] = build_prm_inputs(
            items, self.outcome.verifier, self.annotation,
            timeout=self.settings.verifier.timeout) if items else []
        todo = []
        for i, item in zip(where, inputs, strict=True):
            if not item.steps:
                status[i] = "no_steps"
                continue
            located = step_end_tokens(self.tokenizer, requests[i].response_token_ids,
                                      item.steps)
            if located is None:
                status[i] = "unmapped"
                continue
            ends[i] = located
            todo.append((i, item))
        t0 = time.perf_counter()
        found = self.scorer.score_many([(item.prompt, item.annotated_steps) for _, item in todo])
        for (i, _), step_scores in zip(todo, found, strict=True):
            scores[i] = list(step_scores)
        return time.perf_counter() - t0

    def _result(self, request: RewardRequest, outcome: RewardResult, status: str,
                scores: list[float], ends: list[int], seconds: float) -> RewardResult:
        s = self.settings
        correct = float(outcome.score)
        tokens = compose(len(request.response_token_ids), ends, scores, correct, s,
                         self.outcome_placement)
        mean = sum(scores) / len(scores) if scores else 0.0
        # fill covers every token up to the last scored step's end; step_end one per step
        covered = len(scores)
        if scores and s.process_placement == "fill":
            covered = ends[len(scores) - 1] + 1
        extra: dict[str, Any] = {k: v for k, v in outcome.extra.items() if k != "status"}
        extra.update({"prm_step_score": mean, "prm_steps": len(scores),
                      "prm_reward_tokens": covered, "prm_seconds": seconds,
                      "prm_models_loaded": models_loaded() if self.scorer else 0})
        extra.update({f"prm_status_{name}": int(status == name) for name in PRM_STATUSES})
        return RewardResult(score=s.outcome_weight * correct + s.process_weight * mean,
                            token_rewards=tokens, extra=extra)

    def close(self) -> None:
        self.outcome.close()


__all__ = ["OUTCOME_PLACEMENTS", "PRM_STATUSES", "PROCESS_PLACEMENTS", "SQLPRMManager",
           "SQLPRMSettings", "compose", "step_end_tokens"]
