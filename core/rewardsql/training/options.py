"""Options shared by several commands (``--cpu-math``)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rewardsql.errors import ConfigError

CpuMath = Annotated[str, typer.Option(
    "--cpu-math",
    help="reproducible: the CPU's AVX-512 (else AVX2) kernels with MKL's reproducible mode and "
    "2 threads, so results are the same on every Intel CPU of that class (5-16% slower); "
    "native: this CPU's fastest kernels, whose results differ from CPU to CPU.")]


def cpu_math_or_exit(mode: str, threads: int = 0) -> int:
    """``rewardsql.training.cpu_math.apply_cpu_math``, with a bad value, or torch imported too
    early (by a plugin, or a caller that runs the CLI in its own process), a ConfigError (exit 2).

    Must run before the command imports torch. Returns the torch thread count (0: torch's default).
    """
    from rewardsql import cli
    from rewardsql.training.cpu_math import apply_cpu_math, restart_with_reproducible_cpu_math

    try:
        return apply_cpu_math(mode, threads)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except RuntimeError as exc:  # a plugin imported torch while the CLI loaded it
        if cli.running_as_program():
            restart_with_reproducible_cpu_math(sys.argv[1:])
        raise ConfigError(str(exc)) from None
