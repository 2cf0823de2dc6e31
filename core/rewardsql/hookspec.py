"""The hooks a rewardsql plugin implements.

A plugin is a module (or object) named by an entry point in the group ``rewardsql``. It implements
any of the hooks below with ``@rewardsql.hookimpl``; each hook receives a ``register`` callable and
calls it once per component::

    @rewardsql.hookimpl
    def rewardsql_reward_functions(register):
        register("my_reward", compute_score, aliases=("compute_score",), summary="...")

The core knows which distribution supplied every component because it calls each plugin's hooks
one plugin at a time, with a ``register`` bound to that plugin.
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

PROJECT_NAME = "rewardsql"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class Register(Protocol):
    """The ``register`` callable handed to every hook."""

    def __call__(
        self, name: str, obj: Any, aliases: tuple[str, ...] | list[str] = (), summary: str = ""
    ) -> None: ...


class RewardSQLSpecs:
    """Hook specifications. Every hook returns nothing; it registers through ``register``."""

    @hookspec
    def rewardsql_reward_functions(self, register: Register) -> None:
        """Register reward functions.

        A reward function has verl's signature
        ``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)``
        (sync or async) and returns a float or a dict with a ``"score"`` key.
        """

    @hookspec
    def rewardsql_reward_managers(self, register: Register) -> None:
        """Register reward managers: subclasses of :class:`rewardsql.RewardManager`.

        A reward manager scores a whole batch at once; the verl bridge wraps each one into
        verl's reward-loop registry and the local engine calls it directly.
        """

    @hookspec
    def rewardsql_advantage_estimators(self, register: Register) -> None:
        """Register advantage estimators with verl's calling convention.

        ``fn(token_level_rewards=..., response_mask=..., index=..., config=..., **kwargs)``
        returns ``(advantages, returns)``, both shaped like ``token_level_rewards``.
        """

    @hookspec
    def rewardsql_commands(self, register: Register) -> None:
        """Register CLI commands: ``register(name, command, summary=...)``.

        ``command`` is a ``typer.Typer`` (mounted as a command group, e.g. ``rewardsql sql
        score``) or a function typer can call (mounted as ``rewardsql NAME``). A name of
        two words, ``"rm label"``, adds the command to the group ``rm`` (another plugin's
        too). Import heavy libraries inside the command, so that ``rewardsql --help`` stays
        fast. rewardsql's own
        commands come through this hook too.
        """
