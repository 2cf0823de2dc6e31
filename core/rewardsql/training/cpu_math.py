"""Reproducible CPU arithmetic: the same training, bit for bit, per CPU class and vendor.

On a CPU, torch picks its kernels by the CPU it finds (ATen's vectorised kernels, MKL's matrix
products, oneDNN), and they add up floats in different orders, so a short, sensitive run such as
the demo's SFT ends elsewhere on another machine or thread count. ``reproducible_env`` pins all
three to one instruction-set class (AVX-512 where the CPU has it, else AVX2) and turns on MKL's
strict conditional numerical reproducibility; with ``REPRODUCIBLE_THREADS`` threads, results then
depend only on the class and the CPU's vendor, which the report records. The variables are read
when torch first computes, so ``apply_cpu_math`` sets them before torch is imported: ``rewardsql
demo`` by default, ``rewardsql sft`` and ``train --engine local`` with ``--cpu-math reproducible``
(their default is ``native``). What it costs and what it fixes: docs/results.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Per instruction-set class, the settings that pin ATen, MKL and oneDNN to it.
CLASS_ENV: dict[str, dict[str, str]] = {
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512,STRICT",
               "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT",
             "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
#: What ``torch.backends.cpu.get_cpu_capability()`` says when a class's kernels run.
CLASS_CAPABILITY = {"avx512": "AVX512", "avx2": "AVX2"}
#: CPU flags each class needs (AVX-512: the Skylake-SP set that ATen's and MKL's AVX-512 code use).
CLASS_FLAGS = {"avx512": {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"},
               "avx2": {"avx2", "fma"}}
#: Threads of a reproducible run. MKL's reproducibility holds for a fixed count; measured here,
#: SFT gave the same weights with 1, 2 and 4 threads and other weights with 3.
REPRODUCIBLE_THREADS = 2
#: ``--cpu-math`` values.
MODES = ("reproducible", "native")
#: Short names of ``/proc/cpuinfo``'s vendor ids, for labels.
_VENDOR_NAMES = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}
#: Every variable ``CLASS_ENV`` sets (each class sets the same three).
VARIABLES = tuple(CLASS_ENV["avx512"])


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux); empty where ``cpuinfo`` cannot be read."""
    return set(_cpuinfo_field("flags", cpuinfo).split())


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's model name (Linux), e.g. ``AMD EPYC``; None where ``cpuinfo`` has none. MKL's
    reproducible branches are documented for Intel CPUs, so a report names the vendor too."""
    return _cpuinfo_field("model name", cpuinfo) or None


def cpu_vendor(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's vendor (``GenuineIntel``, ``AuthenticAMD``); None where ``cpuinfo`` has none.
    A class's bits hold per vendor: the same seed's SFT differed between an Intel and an AMD
    CPU of class ``avx2`` (round 12, examples/tiny/README.md)."""
    return _cpuinfo_field("vendor_id", cpuinfo) or None


def _cpuinfo_field(name: str, cpuinfo: Path) -> str:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ""
    line = next((x for x in text.splitlines() if x.split(":")[0].strip() == name), "")
    return line.partition(":")[2].strip()


def cpu_class(flags: set[str]) -> str | None:
    """The widest class whose flags are all in ``flags``: ``avx512``, ``avx2`` or None."""
    return next((name for name, needed in CLASS_FLAGS.items() if needed <= flags), None)


def reproducible_env(flags: set[str]) -> dict[str, str]:
    """The settings that make a CPU with ``flags`` compute reproducibly ({} when none do)."""
    name = cpu_class(flags)
    return dict(CLASS_ENV[name]) if name else {}


def use_reproducible_cpu_math() -> str | None:
    """Put this CPU's ``reproducible_env`` in ``os.environ``; return its class (None: no class
    applies, nothing set).

    Raises ``RuntimeError`` when torch is already imported into this process: it may have read
    the variables already, and a run that only looked reproducible would be worse than none.
    """
    flags = cpu_flags()
    wanted = reproducible_env(flags)
    if "torch" in sys.modules:
        if all(os.environ.get(k) == v for k, v in wanted.items()):
            return cpu_class(flags)  # set before this process started, so torch read them
        raise RuntimeError("reproducible CPU math must be set before torch is imported "
                           "(export the variables of rewardsql.training.cpu_math.CLASS_ENV "
                           "instead)")
    os.environ.update(wanted)
    return cpu_class(flags)


def restart_with_reproducible_cpu_math(argv: list[str]) -> None:
    """Replace this process by ``python -m rewardsql *argv`` with the reproducible variables in
    its environment: for the CLI, when a plugin imported torch before the command could set
    them. Does not return."""
    os.environ.update(reproducible_env(cpu_flags()))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "rewardsql", *argv])


def apply_cpu_math(mode: str, threads: int = 0) -> int:
    """Set this process up for ``--cpu-math mode`` (``MODES``); call it before torch is imported.

    Returns the torch thread count to use: ``threads`` when given (> 0), else
    ``REPRODUCIBLE_THREADS`` for ``reproducible`` (the count its results are the same for) and 0
    (torch's default) for ``native``. Raises ``ValueError`` naming the choices for an unknown
    mode, and ``RuntimeError`` as ``use_reproducible_cpu_math`` does.
    """
    if mode not in MODES:
        raise ValueError(f"--cpu-math must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "native":
        return threads
    use_reproducible_cpu_math()
    return threads or REPRODUCIBLE_THREADS


def describe_cpu_math() -> dict[str, Any]:
    """What this process computes with, for a report: ``mode`` is ``reproducible`` when the
    variables of one class are all set and ATen really runs that class's kernels."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    settings = {name: os.environ.get(name) for name in VARIABLES}
    pinned = next((name for name, env in CLASS_ENV.items()
                   if settings == env and capability == CLASS_CAPABILITY[name]), None)
    return {
        "mode": "reproducible" if pinned else "native",
        "class": pinned,
        "vendor": cpu_vendor(),
        "aten_cpu_capability": capability,
        **settings,
    }


def cpu_math_label(described: Mapping[str, Any]) -> str:
    """A short label of ``describe_cpu_math()``'s answer: ``reproducible avx512 (Intel)``,
    ``native``. Reproducible figures compare within one label."""
    label = f"{described.get('mode', '?')} {described.get('class') or ''}".strip()
    vendor = _VENDOR_NAMES.get(described.get("vendor") or "", described.get("vendor"))
    return f"{label} ({vendor})" if described.get("class") and vendor else label
