"""The reward function the launcher names on verl's reward-model path, never called.

verl 0.9.1 calls a reward manager's ``run_single`` on its colocated reward-model path only when
``reward.custom_reward_function.path`` is non-null (spec/verl-cpu.md, "Dense rewards"); the
dense-reward path of ``rewardsql train`` names this module and :func:`reward_manager_only`. It
has no imports, because verl loads it by file path in every reward worker.
"""

#: The function's name, as the launcher writes it into ``reward.custom_reward_function.name``.
NAME = "reward_manager_only"


def reward_manager_only(*_: object, **__: object) -> float:
    """Never called: rewardsql's managers score the batch (the bridge does not hand it to them)."""
    raise RuntimeError("rewardsql's placeholder reward function was called: it is named in "
                       "reward.custom_reward_function only so that verl calls the reward manager")
