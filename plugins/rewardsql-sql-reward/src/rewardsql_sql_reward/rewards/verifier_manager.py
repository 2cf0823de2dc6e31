"""The reward manager ``sql_verifier``: a whole batch of responses scored with one verifier call."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewardsql import RewardManager, RewardRequest, RewardResult
from rewardsql.errors import ConfigError
from rewardsql.schema import setting

from rewardsql_sql_reward.rewards.reward_fn import database_path, gold_sql
from rewardsql_sql_reward.verifier import MODES, STATUSES, SQLVerifier, Verdict
from rewardsql_sql_reward.verifier.budget import Budget
from rewardsql_sql_reward.verifier.extract import extract_sql

PLACEMENTS = ("last_token", "all_tokens")


class InfraErrorRateExceeded(RuntimeError):
    """Too many infrastructure errors in one batch to train on it."""


@dataclass(frozen=True)
class SQLVerifierSettings:
    """The settings of ``sql_verifier`` (``rewardsql.reward_manager`` in a training config)."""

    db_root: str | None = setting(
        None, "Databases as DB_ROOT/<db_id>/<db_id>.sqlite; null: each sample's "
              "extra_info.db_root, else $REWARDSQL_DB_ROOT.")
    mode: str = setting("bird", "How results are compared: bird (sets of rows), multiset "
                                "(bags), ordered (lists when the gold query has ORDER BY).",
                        choices=MODES)
    timeout: float = setting(30.0, "Seconds allowed per query (the most any query may run).")
    budget: bool = setting(True, "Training-time budget: each prediction may run for "
                                 "max(budget_floor, budget_factor x its gold query's time), at "
                                 "most timeout, and a batch ends at batch_timeout; false: every "
                                 "query gets the full timeout (the official evaluation rule).")
    budget_floor: float = setting(1.0, "Seconds a prediction may always run under the budget.")
    budget_factor: float = setting(10.0, "A prediction may run this many times its gold "
                                         "query's measured time under the budget.")
    batch_timeout: float | None = setting(
        None, "Seconds one batch's verification may take under the budget; queries unfinished "
              "then are timeouts. null: 2 x timeout.")
    workers: int | None = setting(None, "SQL worker processes; null: $REWARDSQL_SQL_WORKERS, "
                                        "else the CPU count.")
    placement: str = setting("last_token", "Where the score goes: last_token (the last response "
                                           "token) or all_tokens (every response token, the "
                                           "original RewardSQL behaviour beside a PRM).",
                             choices=PLACEMENTS)
    max_infra_error_fraction: float = setting(
        0.05, "A batch with more infrastructure errors than this fraction is not trained on.")
    max_rows: int = setting(100_000, "Rows fetched per query before it counts as too large.")

    def __post_init__(self) -> None:
        for key, bad, expected in (
            ("timeout", self.timeout <= 0, "a positive number of seconds"),
            ("budget_floor", self.budget_floor <= 0, "a positive number of seconds"),
            ("budget_factor", self.budget_factor <= 0, "a positive number"),
            ("batch_timeout", self.batch_timeout is not None and self.batch_timeout <= 0,
             "a positive number of seconds or null"),
            ("max_infra_error_fraction", not 0 <= self.max_infra_error_fraction <= 1,
             "a fraction between 0 and 1"),
            ("max_rows", self.max_rows < 1, "a positive integer"),
            ("workers", self.workers is not None and self.workers < 1, "a positive integer"),
        ):
            if bad:
                raise ConfigError(f"expected {expected}, got {getattr(self, key)!r}", key=key)


class SQLVerifierManager(RewardManager):
    """Outcome reward from SQL execution: 1.0 when the response's SQL returns the gold result.

    Settings: :class:`SQLVerifierSettings`.

    ``extra`` has, for every sample: ``acc`` (the score), ``status``, ``sql_seconds`` and a 0/1
    ``status_<name>`` for each status, so their sums are the batch's counts. A batch whose
    infra errors exceed ``max_infra_error_fraction`` raises :class:`InfraErrorRateExceeded`.
    Responses go through :func:`~rewardsql_sql_reward.extract_sql`; ``ground_truth`` is the gold
    SQL. ``tokenizer`` and ``compute_score`` are accepted (the manager contract) and not used.
    """

    Settings = SQLVerifierSettings
    settings: SQLVerifierSettings

    @classmethod
    def settings_for_weights(cls, config: Mapping[str, Any], weights: Any) -> dict[str, Any]:
        """Beside a PRM (process weight > 0) the outcome reward goes on every token, as the
        original RewardSQL does; alone, on the last token (spec/cocte.md)."""
        out = dict(config)
        out.setdefault("placement", "last_token" if weights.process == 0 else "all_tokens")
        return out

    def __init__(self, config: Mapping[str, Any] | None = None, *, tokenizer: Any = None,
                 compute_score: Any = None) -> None:
        super().__init__(config, tokenizer=tokenizer, compute_score=compute_score)
        self.verifier = SQLVerifier(
            self.settings.db_root, timeout=self.settings.timeout, workers=self.settings.workers,
            max_rows=self.settings.max_rows, mode=self.settings.mode,
        )
        self.budget = Budget(self.settings.budget_floor, self.settings.budget_factor,
                             self.settings.batch_timeout) if self.settings.budget else None

    def score_batch(self, requests: Sequence[RewardRequest]) -> list[RewardResult]:
        verdicts: list[Verdict | None] = [None] * len(requests)
        items, where = [], []
        for i, request in enumerate(requests):
            try:
                path = database_path(request.extra_info, self.settings.db_root)
                gold = gold_sql(request.ground_truth)
            except ValueError as exc:
                verdicts[i] = Verdict(False, "infra_error", f"sample {i}: {exc}")
                continue
            items.append((path, extract_sql(request.response), gold))
            where.append(i)
        batch = self.verifier.verify_batch(items, budget=self.budget)
        for i, verdict in zip(where, batch, strict=True):
            verdicts[i] = verdict
        self._check_infra_errors(verdicts)  # type: ignore[arg-type]
        return [self._result(request, verdict)  # type: ignore[arg-type]
                for request, verdict in zip(requests, verdicts, strict=True)]

    def _result(self, request: RewardRequest, verdict: Verdict) -> RewardResult:
        score = 1.0 if verdict.correct else 0.0
        extra: dict[str, Any] = {"acc": score, "status": verdict.status,
                                 "sql_seconds": verdict.seconds}
        extra.update({f"status_{name}": int(verdict.status == name) for name in STATUSES})
        tokens = None
        if self.settings.placement == "all_tokens":
            tokens = [score] * len(request.response_token_ids)
        return RewardResult(score=score, token_rewards=tokens, extra=extra)

    def _check_infra_errors(self, verdicts: Sequence[Verdict]) -> None:
        errors = [v.error or "unknown" for v in verdicts if v.status == "infra_error"]
        limit = self.settings.max_infra_error_fraction
        if errors and len(errors) > limit * len(verdicts):
            reasons = Counter(errors).most_common(5)
            listing = "; ".join(f"{n}x {reason}" for reason, n in reasons)
            raise InfraErrorRateExceeded(
                f"{len(errors)} of {len(verdicts)} samples had infrastructure errors (more than "
                f"max_infra_error_fraction={limit:g}); not training on this batch. Reasons: "
                f"{listing}"
            )

    def close(self) -> None:
        self.verifier.close()
