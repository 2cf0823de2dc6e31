"""The ``rewardsql`` plugin: registers the five estimators under their names and aliases.

Kept free of any verl import: verl's plugin loader may import this while verl is half-initialised.
"""

from __future__ import annotations

import rewardsql
from rewardsql.hookspec import Register

from rewardsql_advantages import (
    compute_grpo_min_form_advantage,
    compute_grpo_process_advantage_avg_unique,
    compute_grpo_process_fallback_advantage,
    compute_token_wise_advantage,
    compute_weighted_grpo_advantage,
)

#: (name, function, summary); each function's own name is its alias.
ESTIMATORS = (
    (
        "grpo_process_avg_unique",
        compute_grpo_process_advantage_avg_unique,
        "Process GRPO: mean of distinct step rewards, spread over the steps",
    ),
    (
        "grpo_weighted",
        compute_weighted_grpo_advantage,
        "Outcome GRPO weighted towards the better responses of each group",
    ),
    (
        "grpo_token_wise",
        compute_token_wise_advantage,
        "GRPO normalised per (group, token position)",
    ),
    (
        "grpo_min_form",
        compute_grpo_min_form_advantage,
        "PURE's min-form credit: a token's return is the worst step reward from its step on",
    ),
    (
        "grpo_process_fallback",
        compute_grpo_process_fallback_advantage,
        "Outcome GRPO; min-form step credit only in groups whose outcomes tie",
    ),
)


@rewardsql.hookimpl
def rewardsql_advantage_estimators(register: Register) -> None:
    """Register ``grpo_process_avg_unique``, ``grpo_weighted``, ``grpo_token_wise``,
    ``grpo_min_form`` and ``grpo_process_fallback``."""
    for name, fn, summary in ESTIMATORS:
        register(name, fn, aliases=(fn.__name__,), summary=summary)
