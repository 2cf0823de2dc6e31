"""The demo wing's plugin: registers ``rewardsql demo``."""

from __future__ import annotations

from rewardsql.demo.demo_command import demo
from rewardsql.hookspec import Register, hookimpl


@hookimpl
def rewardsql_commands(register: Register) -> None:
    register("demo", demo, summary="The whole method on the bundled example, end to end.")
