"""Typed settings: a frozen dataclass whose fields carry a default and a doc.

One mechanism for every settings block a user writes by hand: a reward manager's settings, the
``rewardsql:`` config section. :func:`parse` turns a plain mapping into an instance, failing with
a :class:`~rewardsql.errors.ConfigError` that names the key (unknown keys get the closest known
one); :func:`describe` lists the fields for help texts and docs::

    @dataclass(frozen=True)
    class MySettings:
        timeout: float = setting(30.0, "Seconds allowed per query.")
        mode: str = setting("bird", "How results are compared.", choices=("bird", "ordered"))
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from rewardsql.errors import ConfigError

_MISSING = dataclasses.MISSING


def setting(default: Any, doc: str, *, choices: Sequence[Any] | None = None) -> Any:
    """A dataclass field with a default (copied for lists and dicts), a doc and allowed values."""
    metadata = {"doc": doc, "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, (dict, list)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    if dataclasses.is_dataclass(default):
        made = default
        return dataclasses.field(default_factory=lambda: made, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One setting as help texts show it."""

    name: str
    type: str
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None


def describe(cls: type, prefix: str = "") -> list[FieldDoc]:
    """Every setting of ``cls`` (nested settings flattened to dotted names)."""
    hints = typing.get_type_hints(cls)
    out: list[FieldDoc] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        default = _default(f)
        if dataclasses.is_dataclass(hint):
            out.extend(describe(hint, f"{prefix}{f.name}."))  # type: ignore[arg-type]
            continue
        out.append(FieldDoc(f"{prefix}{f.name}", _type_name(hint), default,
                            f.metadata.get("doc", ""), f.metadata.get("choices")))
    return out


def parse(cls: type, values: Mapping[str, Any] | None, *, source: Any = None,
          prefix: str = "") -> Any:
    """An instance of the settings dataclass ``cls`` from ``values`` (defaults for what is absent).

    Raises:
        ConfigError: an unknown key, a value of the wrong type or not among the choices, or what
            the dataclass's ``__post_init__`` raised (ValueError/TypeError), naming the key.
    """
    values = {} if values is None else values
    if not isinstance(values, Mapping):
        raise ConfigError(f"expected a mapping, got {type(values).__name__} {values!r}",
                          source=source, key=prefix.rstrip(".") or None)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            raise unknown_key(str(key), list(fields), source=source, prefix=prefix)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in values:
            continue
        key = f"{prefix}{name}"
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = parse(hint, values[name], source=source,  # type: ignore[arg-type]
                                 prefix=f"{key}.")
            continue
        value = coerce(values[name], hint, key=key, source=source)
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"expected one of {', '.join(map(repr, choices))}, got {value!r}",
                              source=source, key=key)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise exc.at(source=source) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc), source=source, key=prefix.rstrip(".") or None) from None


def to_dict(settings: Any) -> dict[str, Any]:
    """The settings as a plain nested dict (what :func:`parse` reads back)."""
    return dataclasses.asdict(settings)


def unknown_key(key: str, known: Sequence[str], *, source: Any = None,
                prefix: str = "") -> ConfigError:
    """The error for an unknown key, with the closest known key or the list of known ones."""
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
    return ConfigError(f"unknown key{hint}", source=source, key=f"{prefix}{key}")


def coerce(value: Any, hint: Any, *, key: str, source: Any = None) -> Any:
    """``value`` checked against the type ``hint`` (ints are accepted for floats; bools are
    never numbers; None only where the hint allows it)."""
    options = _union_members(hint)
    if value is None:
        if type(None) in options or hint is Any:
            return None
        raise ConfigError(f"expected {_type_name(hint)}, got null", source=source, key=key)
    for option in options:
        ok, converted = _matches(value, option)
        if ok:
            return converted
    raise ConfigError(f"expected {_type_name(hint)}, got {type(value).__name__} {value!r}",
                      source=source, key=key)


def _matches(value: Any, option: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(option) or option
    if option is Any:
        return True, value
    if option is type(None):
        return False, None
    if origin is bool:
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, None
    if origin is float:
        return isinstance(value, (int, float)), float(value) if isinstance(
            value, (int, float)) else None
    if origin is int:
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return isinstance(value, int), value
    if origin is str:
        return isinstance(value, str), value
    if origin in (dict, Mapping):
        return isinstance(value, Mapping), dict(value) if isinstance(value, Mapping) else None
    if origin in (list, tuple, Sequence):
        if isinstance(value, (list, tuple)):
            return True, origin(value) if origin in (list, tuple) else list(value)
        return False, None
    return isinstance(value, origin), value


def _union_members(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _type_name(hint: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             dict: "a mapping", list: "a list", tuple: "a list", type(None): "null"}
    parts = []
    for option in _union_members(hint):
        origin = typing.get_origin(option) or option
        parts.append(names.get(origin, getattr(origin, "__name__", str(origin))))
    return " or ".join(parts)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return None
