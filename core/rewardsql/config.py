"""Config files and command-line overrides: one loader, one dotted-key getter, one override
grammar, with errors that name the file and key at fault.

- :func:`load_config` reads YAML or JSON; numbers are numbers in both (``lr: 1e-5`` is a float,
  as in JSON and in OmegaConf, not the string YAML 1.1 would make of it).
- :func:`get_key` / :func:`set_key` read and write ``a.b.c`` in nested mappings.
- :func:`parse_override` reads one ``KEY=VALUE`` of the grammar every command shares (Hydra's
  spelling): ``key=value`` changes a key, ``+key=value`` adds one, ``++key=value`` sets one either
  way, ``~key`` deletes one; values are read as YAML flow values (numbers, booleans, null,
  ``[lists]``, ``{mappings}``, quoted strings).
"""

from __future__ import annotations

import difflib
import enum
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Re-exported: the config's errors are the ones every command reports.
from rewardsql.errors import ConfigError, MissingDependencyError, require_verl

__all__ = [
    "ConfigError",
    "MissingDependencyError",
    "Override",
    "check_known_keys",
    "get_key",
    "load_config",
    "load_yaml",
    "parse_override",
    "require_verl",
    "set_key",
    "to_plain",
]

_MISSING = object()


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-5`` as a float (YAML 1.1 wants ``1.0e-5``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text the way every rewardsql config is parsed."""
    return yaml.load(text, Loader=_Loader)


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
        data = json.loads(text) if file.suffix.lower() == ".json" else load_yaml(text)
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
    """``config["a"]["b"]`` for ``"a.b"``; an error when missing (and no default) or mistyped.

    ``config`` is a plain mapping or an omegaconf DictConfig (interpolations resolved; a
    mandatory ``???`` value counts as missing).
    """
    node: Any = config
    if _is_omegaconf(config):
        from omegaconf import OmegaConf

        node = OmegaConf.select(config, dotted,  # type: ignore[arg-type]
                                default=_MISSING, throw_on_missing=False)
        if isinstance(node, str) and node == "???":  # omegaconf's mandatory, unset value
            node = _MISSING
        if node is _MISSING:
            if default is _MISSING:
                raise ConfigError("required key is missing", source=source, key=dotted)
            return default
    else:
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


def set_key(tree: Any, dotted: str, value: Any, *, source: Any = None) -> None:
    """``tree["a"]["b"] = value`` for ``"a.b"``, creating mappings on the way (``tree``: a dict
    or an omegaconf DictConfig, whose struct flag does not stop it)."""
    if _is_omegaconf(tree):
        from omegaconf import OmegaConf, open_dict

        with open_dict(tree):
            OmegaConf.update(tree, dotted, value, merge=False, force_add=True)
        return
    *parents, last = dotted.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{part!r} is a value, not a section", source=source, key=dotted)
        node = child
    node[last] = value


def _is_omegaconf(config: Any) -> bool:
    module = type(config).__module__
    return module.startswith("omegaconf")


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


def to_plain(config: Any, *, resolve: bool = True) -> Any:
    """Plain nested dicts and lists from a mapping or an omegaconf container.

    ``resolve``: resolve omegaconf interpolations (``${...}``); off, they stay as text.
    """
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # omegaconf comes with verl; without it configs are plain already
        DictConfig = ListConfig = ()  # type: ignore[assignment,misc]
    if isinstance(config, (DictConfig, ListConfig)):
        return OmegaConf.to_container(config, resolve=resolve, throw_on_missing=False)
    if isinstance(config, Mapping):
        return {str(k): to_plain(v, resolve=resolve) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [to_plain(v, resolve=resolve) for v in config]
    return config


class OverrideKind(enum.Enum):
    """What an override does: change a key, add one, set one either way, delete one."""

    CHANGE = ""
    ADD = "+"
    FORCE = "++"
    DELETE = "~"


@dataclass(frozen=True)
class Override:
    """One parsed ``KEY=VALUE`` override."""

    kind: OverrideKind
    key: str
    value: Any = None
    text: str = ""


_KEY = re.compile(r"^[A-Za-z_][\w-]*(\.[A-Za-z_0-9][\w-]*)*$")


def parse_override(text: str) -> Override:
    """Parse one override of the shared grammar (see the module's doc)."""
    source = f"command-line override {text!r}"
    body = text.strip()
    if body.startswith("~"):
        key, _, _ = body[1:].partition("=")
        kind = OverrideKind.DELETE
        raw = None
    else:
        kind = next((k for k in (OverrideKind.FORCE, OverrideKind.ADD)
                     if body.startswith(k.value)), OverrideKind.CHANGE)
        key, sep, raw = body[len(kind.value):].partition("=")
        if not sep:
            raise ConfigError("not a KEY=VALUE override", source=source)
    key = key.strip()
    if not _KEY.match(key):
        raise ConfigError(f"{key!r} is not a dotted key", source=source)
    if raw is None:
        return Override(kind, key, None, text)
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"cannot read the value: {problem}", source=source) from None
    return Override(kind, key, value, text)
