"""The local engine: GRPO in one process (CPU or one GPU) with verl's config keys and losses.

Import :func:`run_local` from :mod:`rewardsql.training.local.local`; this package imports nothing
heavy.
"""

from __future__ import annotations

__all__ = ["LocalRunResult", "evaluate_model", "run_local"]


def __getattr__(name: str):  # lazy: torch and transformers load only when used
    if name in __all__:
        from rewardsql.training.local import local

        return getattr(local, name)
    raise AttributeError(name)
