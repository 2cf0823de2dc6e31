"""Fixtures of the tests of verl's real trainer on the CPU (``nox -s verl_cpu``).

They need vLLM's CPU build (``rewardsql[verl-cpu]``), which the main ``tests`` session does not
install: there, every test here is skipped (each module's ``pytestmark``).
"""

