"""Loading a model or tokenizer by a config value, with a one-line error when it is not there.

``from_pretrained`` takes a local directory or a Hugging Face Hub id. A name that is neither a
directory here nor reachable on the Hub (a typo, a path on another machine, no network, or
``HF_HUB_OFFLINE=1``) fails inside the Hub client with a long ``OSError``; a training run should
instead say which config key holds the value and what it must be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rewardsql.errors import ConfigError


def from_pretrained(loader: Any, name: str | Path, *, key: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(name, **kwargs)``; a missing model is a :class:`ConfigError`
    naming ``key`` and ``name``."""
    try:
        return loader.from_pretrained(str(name), **kwargs)
    except (OSError, ValueError) as exc:  # ValueError: no model type, or an invalid hub id
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if Path(name).is_dir():  # there, but not a usable model directory
            raise ConfigError(f"{str(name)!r} cannot be loaded: {reason}", key=key) from None
        raise ConfigError(
            f"{str(name)!r} is not a local directory and could not be fetched from the Hugging "
            f"Face Hub (no network, HF_HUB_OFFLINE, or no such model id): it must be a local "
            f"directory or a reachable hub id ({reason})", key=key) from None
