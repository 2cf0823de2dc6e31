"""The reward-manager contract, independent of any trainer.

A reward manager scores a whole batch of decoded responses in one call, so that expensive work
(executing SQL, running a PRM) can be batched. The verl bridge adapts every registered manager to
verl's reward loop; the local engine and ``rewardsql plugins check`` call :meth:`score_batch`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rewardsql import schema


@dataclass(frozen=True)
class RewardRequest:
    """One response to score.

    ``response_token_ids`` are the valid (unpadded) response tokens; token-level rewards are laid
    out over exactly these positions.
    """

    response: str
    ground_truth: Any = None
    data_source: str = ""
    extra_info: Mapping[str, Any] = field(default_factory=dict)
    prompt: str = ""
    response_token_ids: tuple[int, ...] = ()


@dataclass
class RewardResult:
    """The reward for one response.

    ``score`` is the sequence-level reward. ``token_rewards``, when given, holds one value per
    valid response token (dense or step-level rewards); when it is None the score is placed on the
    last valid response token. ``extra`` holds metrics; a manager returns the same keys for every
    response of a batch.
    """

    score: float
    token_rewards: Sequence[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class RewardManager(ABC):
    """Base class of reward managers.

    A manager declares what it takes and needs as class attributes:

    - ``Settings``: a frozen dataclass of its settings, each field made with
      :func:`rewardsql.schema.setting` (a default and a doc). The user writes them under
      ``rewardsql.reward_manager`` in a training config; they are checked (unknown keys, types,
      choices, the dataclass's ``__post_init__``) before any training starts, and the instance
      is ``self.settings``. None (the default): the settings are not checked here; the manager
      reads ``self.config`` itself.
    - ``needs_ground_truth``: whether ``RewardRequest.ground_truth`` must be filled (verl's v1
      trainer does not send it, so the launcher picks the trainer that does).
    - ``composes_weights``: True when the manager applies ``rewardsql.reward_weights`` itself
      (it gets them through :meth:`settings_for_weights`) and can give dense process rewards:
      the engines then neither scale its rewards nor refuse a process weight.
    - ``reward_model_setting``: the name of the setting holding the path of a reward model the
      manager scores with (the launcher gives it to verl as ``reward.reward_model.model_path``,
      and verl serves it). Such a manager also takes ``reward_model_url``.
    - ``reward_model_url_setting``: the name of the setting holding the URL of a server of that
      reward model that the user runs; the launcher checks it answers and serves the model.

    An advantage estimator that reads its inputs back from the token rewards (e.g. step scores)
    declares the layout it needs as a ``reward_layout`` attribute (setting name -> value); the
    trainers check it against :meth:`token_layout` before training starts.

    Args:
        config: the manager's settings as the user wrote them (a plain mapping).
        tokenizer: the policy's tokenizer, for managers that look at tokens (may be None).
        compute_score: a reward function selected by the user, for managers that delegate to one.
        reward_model_url: where the reward model is served (``http://host:port``; on verl, its
            reward-model server), given only to managers that declare ``reward_model_setting``;
            None where nothing serves it.

    Raises:
        rewardsql.errors.ConfigError: the settings are not valid, naming the key.
    """

    Settings: ClassVar[type | None] = None
    needs_ground_truth: ClassVar[bool] = True
    composes_weights: ClassVar[bool] = False
    reward_model_setting: ClassVar[str | None] = None
    reward_model_url_setting: ClassVar[str | None] = None

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        tokenizer: Any = None,
        compute_score: Callable[..., Any] | None = None,
        reward_model_url: str | None = None,
    ) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self.settings: Any = self.parse_settings(self.config)
        self.tokenizer = tokenizer
        self.compute_score = compute_score
        self.reward_model_url = reward_model_url

    @classmethod
    def settings_for_weights(cls, config: Mapping[str, Any], weights: Any) -> dict[str, Any]:
        """The settings to use under ``weights`` (``rewardsql.section.RewardWeights``): ``config``
        with what the weights imply filled in where the user left it out (a launcher writes the
        result into the config it runs). By default ``config`` unchanged."""
        return dict(config)

    @classmethod
    def token_layout(cls, settings: Any) -> dict[str, Any]:
        """Where the manager puts its token rewards under ``settings`` (as
        :meth:`parse_settings` returns them): setting names to the values in effect, defaults
        resolved. By default empty: the manager declares no layout."""
        return {}

    @classmethod
    def parse_settings(cls, config: Mapping[str, Any] | None, *, source: Any = None) -> Any:
        """``config`` checked against :attr:`Settings` (None when the manager has none)."""
        if cls.Settings is None:
            return None
        return schema.parse(cls.Settings, config, source=source)

    @abstractmethod
    def score_batch(self, requests: Sequence[RewardRequest]) -> list[RewardResult]:
        """Score every request; return one result per request, in input order.

        Calls on one instance never overlap: the trainers call it from one thread at a time.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release resources (worker processes, connections). Safe to call twice."""

    def __enter__(self) -> RewardManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def score_of(value: Any, *, source: str = "reward function") -> float:
    """The float score of a reward function's return value (a number or a dict with "score")."""
    raw: Any = value.get("score") if isinstance(value, Mapping) else value
    if isinstance(value, Mapping) and "score" not in value:
        raise TypeError(f"{source} returned a dict without a 'score' key: keys {sorted(value)}")
    try:
        score = float(raw)
    except (TypeError, ValueError):
        raise TypeError(
            f"{source} must return a float or a dict with 'score', got {type(raw).__name__}"
        ) from None
    if not math.isfinite(score):
        raise ValueError(f"{source} returned a non-finite score: {score}")
    return score


def validate_results(
    results: Any, requests: Sequence[RewardRequest], *, source: str = "reward manager"
) -> list[RewardResult]:
    """Check a ``score_batch`` answer against the contract; raise naming the point that fails."""
    if not isinstance(results, list) or len(results) != len(requests):
        got = len(results) if isinstance(results, list) else type(results).__name__
        raise ValueError(
            f"{source}: score_batch must return a list of {len(requests)} RewardResult, got {got}"
        )
    keys: set[str] | None = None
    for i, (result, request) in enumerate(zip(results, requests, strict=True)):
        if not isinstance(result, RewardResult):
            raise TypeError(
                f"{source}: result {i} is a {type(result).__name__}, not a RewardResult"
            )
        if not math.isfinite(float(result.score)):
            raise ValueError(f"{source}: result {i} has a non-finite score {result.score}")
        if result.token_rewards is not None and len(result.token_rewards) != len(
            request.response_token_ids
        ):
            raise ValueError(
                f"{source}: result {i}: token_rewards must have one value per response token "
                f"({len(request.response_token_ids)}), got {len(result.token_rewards)}"
            )
        if keys is not None and set(result.extra) != keys:
            raise ValueError(
                f"{source}: every result of a batch must have the same extra keys: "
                f"{sorted(keys)} vs {sorted(result.extra)} (result {i})"
            )
        keys = set(result.extra)
    return results
