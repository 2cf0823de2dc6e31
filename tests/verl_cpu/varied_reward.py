"""A reward whose value varies from response to response (for tests/verl_cpu): a checksum of the
text, so that every GRPO group has advantages to learn from even with an untrained model."""

from __future__ import annotations

import zlib
from typing import Any


def score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None) -> float:
    return (zlib.crc32(solution_str.encode("utf-8")) % 1000) / 999.0
