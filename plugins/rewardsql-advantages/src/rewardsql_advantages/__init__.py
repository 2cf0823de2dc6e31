"""RewardSQL's three GRPO advantage variants, PURE's min-form credit and an outcome-first
fallback to it, vectorized, with verl's calling convention.

Each function takes ``token_level_rewards``, ``response_mask`` (or ``eos_mask``), ``index`` and
``config`` as keywords and returns ``(advantages, returns)``. The ``rewardsql`` plugin in
:mod:`rewardsql_advantages.plugin` registers them as ``grpo_process_avg_unique``,
``grpo_weighted``, ``grpo_token_wise``, ``grpo_min_form`` and ``grpo_process_fallback``, with
these function names as aliases.
"""

from rewardsql_advantages._common import EPSILON_KEY, WEIGHT_FACTOR_KEY
from rewardsql_advantages.fallback import compute_grpo_process_fallback_advantage
from rewardsql_advantages.min_form import REWARD_LAYOUT, compute_grpo_min_form_advantage
from rewardsql_advantages.process import compute_grpo_process_advantage_avg_unique
from rewardsql_advantages.token_wise import compute_token_wise_advantage
from rewardsql_advantages.weighted import compute_weighted_grpo_advantage

__all__ = [
    "EPSILON_KEY",
    "REWARD_LAYOUT",
    "WEIGHT_FACTOR_KEY",
    "compute_grpo_min_form_advantage",
    "compute_grpo_process_advantage_avg_unique",
    "compute_grpo_process_fallback_advantage",
    "compute_token_wise_advantage",
    "compute_weighted_grpo_advantage",
]
