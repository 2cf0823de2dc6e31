"""Loading YAML and JSON configs, with errors that name the file and key at fault."""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

_MISSING = object()


class ConfigError(ValueError):
    """A config file is missing, malformed, or has a bad key or value."""

    def __init__(
        self, message: str, *, source: str | os.PathLike[str] | None = None, key: str | None = None
    ) -> None:
        self.source = str(source) if source is not None else None
        self.key = key
        where = ": ".join(p for p in (self.source, f"key {key!r}" if key else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class MissingDependencyError(ConfigError):
    """What was asked for needs an optional package that is not installed; the message says how
    to install it (a ConfigError, so every command reports it like a bad key, without a trace)."""


def require_verl(purpose: str) -> None:
    """Raise :class:`MissingDependencyError` naming ``purpose`` when verl is not installed."""
    if importlib.util.find_spec("verl") is None:
        raise MissingDependencyError(
            f"{purpose} needs verl, which is not installed here: pip install 'rewardsql[verl]' "
            "(from a checkout: pip install -c constraints.txt -e '.[verl]')")


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or JSON (``.json``) file whose top level is a mapping."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError("no such file" if not file.exists() else "not a file", source=file)
    if file.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise ConfigError("expected a .yaml, .yml or .json file", source=file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=file) from None
    try:
        data = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", source=file
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML{at}: {problem}", source=file) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level must be a mapping, got {type(data).__name__}", source=file
        )
    return data


def get_key(
    config: Mapping[str, Any],
    dotted: str,
    default: Any = _MISSING,
    *,
    expected: type | tuple[type, ...] | None = None,
    source: str | os.PathLike[str] | None = None,
) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; an error when missing (and no default) or mistyped."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is _MISSING:
                raise ConfigError("required key is missing", source=source, key=dotted)
            return default
        node = node[part]
    if expected is not None:
        types = expected if isinstance(expected, tuple) else (expected,)
        # bool is an int in Python, but `lr: true` is never meant as a number
        if not isinstance(node, types) or (isinstance(node, bool) and bool not in types):
            names = " or ".join(t.__name__ for t in types)
            raise ConfigError(
                f"expected {names}, got {type(node).__name__} {node!r}", source=source, key=dotted
            )
    return node


def check_known_keys(
    config: Mapping[str, Any],
    known: Iterable[str],
    *,
    source: str | os.PathLike[str] | None = None,
    prefix: str = "",
) -> None:
    """Fail on the first key of ``config`` not in ``known``, suggesting the closest known key."""
    known = list(known)
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else f"; known keys: {', '.join(sorted(known))}"
            )
            raise ConfigError(f"unknown key{hint}", source=source, key=f"{prefix}{key}")
