"""The ``rewardsql`` plugin: registers the four estimators under their names and aliases.

Kept free of any verl import: verl's plugin loader may import this while verl is half-initialised.
"""

from __future__ import annotations

import rewardsql
from rewardsql.hookspec import Register

from rewardsql_advantages import (
    compute_grpo_min_form_advantage,
    compute_grpo_process_advantage_avg_unique,
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
)


@rewardsql.hookimpl
def rewardsql_advantage_estimators(register: Register) -> None:
    """Register ``grpo_process_avg_unique``, ``grpo_weighted``, ``grpo_token_wise`` and
    ``grpo_min_form``."""
    for name, fn, summary in ESTIMATORS:
        register(name, fn, aliases=(fn.__name__,), summary=summary)
