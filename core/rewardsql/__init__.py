"""rewardsql: process-supervised RL for text-to-SQL, with plugins for rewards and advantages."""

from importlib.metadata import PackageNotFoundError, version

from rewardsql.api import (
    get_advantage_estimator,
    get_reward_function,
    get_reward_manager,
    register_advantage_estimator,
    register_reward_function,
    register_reward_manager,
)
from rewardsql.components import Component, ComponentKind, PluginRecord
from rewardsql.errors import (
    ComponentConflictError,
    ConfigError,
    PluginError,
    RewardSQLError,
    UnknownComponentError,
)
from rewardsql.hookspec import hookimpl, hookspec
from rewardsql.registry import (  # *_plugin_manager: 0.1's names, deprecated
    get_plugin_manager,
    get_registry,
    reset_plugin_manager,
    reset_registry,
)
from rewardsql.rewards import RewardManager, RewardRequest, RewardResult

try:
    __version__ = version("rewardsql")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "Component",
    "ComponentConflictError",
    "ComponentKind",
    "ConfigError",
    "PluginError",
    "PluginRecord",
    "RewardManager",
    "RewardRequest",
    "RewardResult",
    "RewardSQLError",
    "UnknownComponentError",
    "__version__",
    "get_advantage_estimator",
    "get_plugin_manager",  # deprecated: get_registry
    "get_registry",
    "get_reward_function",
    "get_reward_manager",
    "hookimpl",
    "hookspec",
    "register_advantage_estimator",
    "register_reward_function",
    "register_reward_manager",
    "reset_plugin_manager",  # deprecated: reset_registry
    "reset_registry",
]
