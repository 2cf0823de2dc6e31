"""The ``rewardsql:`` section of a training config: the one place its keys are spelt.

verl's config has no room for rewardsql's own settings, so they live in a section of their own
beside verl's (``rewardsql train`` adds it to verl's defaults; ``+rewardsql...`` is not needed).
The launcher, the local engine and the verl bridge all read it with :func:`read_section`.

.. code-block:: yaml

    rewardsql:
      reward_function: sql_execution      # a registered reward function (optional)
      reward_manager:                     # the reward manager's own settings
        db_root: data/databases
      reward_weights: {process: 0.0, outcome: 1.0}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rewardsql import schema
from rewardsql.errors import ConfigError
from rewardsql.schema import setting

#: The section's name in a training config.
SECTION = "rewardsql"


@dataclass(frozen=True)
class RewardWeights:
    """How the reward is composed (spec/cocte.md): process x step score + outcome x outcome."""

    process: float = setting(0.0, "Weight of the process reward (PRM step scores); the original "
                                  "RewardSQL config's reward_model.rm_coef.")
    outcome: float = setting(1.0, "Weight of the outcome reward (the reward manager's score); "
                                  "the original RewardSQL config's verifier.reward_coef.")

    def __post_init__(self) -> None:
        if self.process == 0 and self.outcome == 0:
            raise ConfigError("both the process and the outcome reward weights are 0: nothing "
                              "to learn from", key=WEIGHTS_KEY)


@dataclass(frozen=True)
class RewardSQLSection:
    """rewardsql's settings in a training config."""

    reward_function: str | None = setting(
        None, "A registered reward function (name or alias); sets verl's "
              "reward.custom_reward_function.path and .name.")
    reward_manager: dict[str, Any] = setting(
        {}, "The selected reward manager's own settings (reward.reward_manager.name selects it; "
            "`rewardsql plugins list` shows each manager's settings).")
    reward_weights: RewardWeights = setting(RewardWeights(), "The reward's composition.")


#: Dotted keys of the section, for messages and for translating older configs.
REWARD_FUNCTION_KEY = f"{SECTION}.reward_function"
MANAGER_SETTINGS_KEY = f"{SECTION}.reward_manager"
WEIGHTS_KEY = f"{SECTION}.reward_weights"
PROCESS_WEIGHT_KEY = f"{WEIGHTS_KEY}.process"
OUTCOME_WEIGHT_KEY = f"{WEIGHTS_KEY}.outcome"


def defaults() -> dict[str, Any]:
    """The section with every default, as a plain dict (what ``rewardsql train`` composes in)."""
    return schema.to_dict(RewardSQLSection())


def read_section(config: Any, *, source: Any = None) -> RewardSQLSection:
    """The section of a whole training config (a mapping or an omegaconf DictConfig), checked.

    An absent section is all defaults.
    """
    node = config.get(SECTION) if isinstance(config, Mapping) or hasattr(config, "get") else None
    return schema.parse(RewardSQLSection, _plain(node), source=source, prefix=f"{SECTION}.")


def _plain(node: Any) -> Any:
    """omegaconf containers as plain dicts and lists (interpolations resolved)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # omegaconf comes with verl; without it configs are plain already
        return node
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node
