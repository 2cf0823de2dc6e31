"""``rewardsql train``: compose a verl 0.9.1 config from old or new keys, check it, and launch.

- :mod:`.translate`: the tables of renamed and obsolete keys (listed in docs/training.md).
- :mod:`.compose`: verl's defaults via Hydra, the user's YAML and ``KEY=VALUE`` overrides.
- :mod:`.resolve`: estimators, reward managers and functions, ``--core-algos``, data files.
- :mod:`.plan`: options to one checked config (:func:`build_plan`).
- :mod:`.launch`: dry run, verl on Ray, or the local engine.
"""

from rewardsql.training.launcher.launch import dry_run, run_local, run_verl, summary
from rewardsql.training.launcher.plan import TrainOptions, TrainPlan, build_plan

__all__ = [
    "TrainOptions",
    "TrainPlan",
    "build_plan",
    "dry_run",
    "run_local",
    "run_verl",
    "summary",
]
