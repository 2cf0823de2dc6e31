"""The demo wing: the bundled tiny example (:mod:`rewardsql.demo.tiny`) and ``rewardsql demo``,
the whole method end to end on one machine (:mod:`rewardsql.demo.pipeline`)."""

from __future__ import annotations

from typing import Any

__all__ = ["GRPO_CONFIG", "SFT_CONFIG", "run_demo"]


def __getattr__(name: str) -> Any:  # lazy: the pipeline imports the training wing
    if name in __all__:
        from rewardsql.demo import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
