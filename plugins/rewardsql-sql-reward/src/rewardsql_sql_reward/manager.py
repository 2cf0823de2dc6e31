"""The reward manager ``sql_verifier``: a whole batch of responses scored with one verifier call."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rewardsql import RewardManager, RewardRequest, RewardResult
from rewardsql.config import ConfigError, check_known_keys

from rewardsql_sql_reward.extract import extract_sql
from rewardsql_sql_reward.reward_fn import database_path, gold_sql
from rewardsql_sql_reward.verifier import MODES, STATUSES, SQLVerifier, Verdict

#: The config keys and their defaults.
DEFAULTS: dict[str, Any] = {
    "db_root": None,
    "mode": "bird",
    "timeout": 30.0,
    "workers": None,
    "placement": "last_token",
    "max_infra_error_fraction": 0.05,
    "max_rows": 100_000,
}
PLACEMENTS = ("last_token", "all_tokens")
_SOURCE = "reward manager 'sql_verifier' config"


class InfraErrorRateExceeded(RuntimeError):
    """Too many infrastructure errors in one batch to train on it."""


def _check(config: Mapping[str, Any]) -> dict[str, Any]:
    check_known_keys(config, DEFAULTS, source=_SOURCE)
    merged = {**DEFAULTS, **config}

    def bad(key: str, expected: str) -> ConfigError:
        return ConfigError(f"expected {expected}, got {merged[key]!r}", source=_SOURCE, key=key)

    if merged["db_root"] is not None and not isinstance(merged["db_root"], str):
        raise bad("db_root", "a directory path or null")
    if merged["mode"] not in MODES:
        raise bad("mode", " or ".join(MODES))
    if merged["placement"] not in PLACEMENTS:
        raise bad("placement", " or ".join(PLACEMENTS))
    for key, kind in (("timeout", (int, float)), ("max_infra_error_fraction", (int, float)),
                      ("max_rows", int), ("workers", (int, type(None)))):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise bad(key, "an integer" if kind is int else "a number")
    if merged["timeout"] <= 0:
        raise bad("timeout", "a positive number of seconds")
    if not 0 <= merged["max_infra_error_fraction"] <= 1:
        raise bad("max_infra_error_fraction", "a fraction between 0 and 1")
    if merged["max_rows"] < 1 or (merged["workers"] is not None and merged["workers"] < 1):
        raise bad("max_rows" if merged["max_rows"] < 1 else "workers", "a positive integer")
    return merged


class SQLVerifierManager(RewardManager):
    """Outcome reward from SQL execution: 1.0 when the response's SQL returns the gold result.

    Config keys (unknown keys are a ``ConfigError``): ``db_root`` (None: each sample's
    ``extra_info["db_root"]``, else ``$REWARDSQL_DB_ROOT``), ``mode`` (``bird``), ``timeout``
    (30.0 s per query), ``workers`` (None: ``$REWARDSQL_SQL_WORKERS``, else CPU count),
    ``placement`` (``last_token``: the score sits on the last response token; ``all_tokens``: on
    every response token, the published behaviour when a PRM weight is set),
    ``max_infra_error_fraction`` (0.05), ``max_rows``.

    ``extra`` has, for every sample: ``acc`` (the score), ``status``, ``sql_seconds`` and a 0/1
    ``status_<name>`` for each status, so their sums are the batch's counts. A batch whose
    infra errors exceed ``max_infra_error_fraction`` raises :class:`InfraErrorRateExceeded`.
    Responses go through :func:`~rewardsql_sql_reward.extract_sql`; ``ground_truth`` is the gold
    SQL. ``tokenizer`` and ``compute_score`` are accepted (the manager contract) and not used.
    """

    def __init__(self, config: Mapping[str, Any] | None = None, *, tokenizer: Any = None,
                 compute_score: Any = None) -> None:
        super().__init__(config, tokenizer=tokenizer, compute_score=compute_score)
        self.settings = _check(self.config)
        self.verifier = SQLVerifier(
            self.settings["db_root"], timeout=float(self.settings["timeout"]),
            workers=self.settings["workers"], max_rows=self.settings["max_rows"],
            mode=self.settings["mode"],
        )

    def score_batch(self, requests: Sequence[RewardRequest]) -> list[RewardResult]:
        verdicts: list[Verdict | None] = [None] * len(requests)
        items, where = [], []
        for i, request in enumerate(requests):
            try:
                path = database_path(request.extra_info, self.settings["db_root"])
                gold = gold_sql(request.ground_truth)
            except ValueError as exc:
                verdicts[i] = Verdict(False, "infra_error", f"sample {i}: {exc}")
                continue
            items.append((path, extract_sql(request.response), gold))
            where.append(i)
        for i, verdict in zip(where, self.verifier.verify_batch(items), strict=True):
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
        if self.settings["placement"] == "all_tokens":
            tokens = [score] * len(request.response_token_ids)
        return RewardResult(score=score, token_rewards=tokens, extra=extra)

    def _check_infra_errors(self, verdicts: Sequence[Verdict]) -> None:
        errors = [v.error or "unknown" for v in verdicts if v.status == "infra_error"]
        limit = self.settings["max_infra_error_fraction"]
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
