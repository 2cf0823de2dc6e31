"""``describe_environment``: what a run computed on, recorded beside its results.

The same config gives other numbers with another torch, another thread count or other CPU
arithmetic (``rewardsql.training.cpu_math``), so the demo's report and the local engine's
``run.json``
record these next to the figures they produced.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import rewardsql
from rewardsql.training.cpu_math import cpu_model, describe_cpu_math


def describe_environment(device: str) -> dict[str, Any]:
    """Versions, machine, CPU model, device (``cpu`` or ``cuda``), torch threads, CPU math."""
    import torch
    import transformers

    return {
        "rewardsql": rewardsql.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_math": describe_cpu_math(),
    }
