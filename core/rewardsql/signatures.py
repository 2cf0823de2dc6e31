"""Calling a reward function of any shape the way verl calls one: binding by parameter name.

verl calls ``compute_score(data_source=, solution_str=, ground_truth=, extra_info=)`` and merges
``reward.custom_reward_function.reward_kwargs`` into the keywords. The original RewardSQL README
shows ``sql_reward_function(port, db_id, question_id, solution_str, ground_truth, extra_info)``.
:func:`bind_reward_function` turns either into one callable with verl's signature: each parameter
is taken from the call's keywords, else from a key of ``extra_info``, else from ``reward_kwargs``,
else its default (a function of verl's shape keeps verl's rules for its optional parameters: they
never come from ``extra_info``). A parameter that nothing binds is found before training by
:func:`unbound_parameters` (``rewardsql plugins check``, ``rewardsql train --dry-run``).

verl imports its reward function by path in every process, so a function that needs binding is
named to verl as :func:`compute_score` (or :func:`compute_score_async`) of this module, with the
real function's path in the reward keyword :data:`TARGET_KEY`; see :func:`dispatch_kwargs`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The keywords verl passes to every reward function call.
CALL_KEYWORDS = ("data_source", "solution_str", "ground_truth", "extra_info")
#: Where verl's reward keywords live in a training config.
REWARD_KWARGS_KEY = "reward.custom_reward_function.reward_kwargs"
#: The reward keyword that tells :func:`compute_score` which function to call.
TARGET_KEY = "rewardsql_target"


class UnboundParameterError(TypeError):
    """A reward function parameter that no call keyword, extra_info key or reward kwarg binds."""


@dataclass(frozen=True)
class _Shape:
    """What binding needs to know of a function's signature (computed once per function)."""

    named: tuple[inspect.Parameter, ...]
    var_keyword: bool
    is_async: bool

    @property
    def verl_shaped(self) -> bool:
        """Takes every verl call keyword by name: its optional parameters are left to verl's
        rules (call keywords and reward_kwargs), never filled from extra_info."""
        return set(CALL_KEYWORDS) <= {p.name for p in self.named}


@functools.lru_cache(maxsize=256)
def _shape(fn: Callable[..., Any]) -> _Shape:
    try:
        params = tuple(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: pass verl's keywords
        return _Shape((), True, inspect.iscoroutinefunction(fn))
    named = tuple(p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
    var_keyword = any(p.kind is p.VAR_KEYWORD for p in params)
    return _Shape(named, var_keyword, inspect.iscoroutinefunction(fn))


def _label(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def unbound_parameters(fn: Callable[..., Any], *, extra_info_keys: Iterable[str],
                       reward_kwargs: Mapping[str, Any]) -> list[str]:
    """The required parameters of ``fn`` that neither verl's call keywords, nor ``extra_info``
    keys, nor ``reward_kwargs`` provide (empty when every call will bind)."""
    known = set(CALL_KEYWORDS) | set(extra_info_keys) | set(reward_kwargs)
    return [p.name for p in _shape(fn).named
            if p.default is inspect.Parameter.empty and p.name not in known]


def describe_unbound(fn: Callable[..., Any], name: str, *, extra_info_keys: Iterable[str],
                     reward_kwargs: Mapping[str, Any]) -> str:
    """Why ``name`` is not bound and where it could come from, in one sentence."""
    keys = sorted(extra_info_keys)
    given = sorted(k for k in reward_kwargs if k != TARGET_KEY)
    return (f"reward function {_label(fn)}: nothing binds parameter {name!r}: it is not one of "
            f"verl's call keywords ({', '.join(CALL_KEYWORDS)}), not a key of extra_info "
            f"({', '.join(keys) or 'none'}) and not in {REWARD_KWARGS_KEY} "
            f"({', '.join(given) or 'none'}); set {REWARD_KWARGS_KEY}.{name} or add "
            f"extra_info.{name} to the data")


def needs_binding(fn: Callable[..., Any], reward_kwargs: Mapping[str, Any]) -> bool:
    """Whether verl's own call (its keywords plus ``reward_kwargs``) would not reach ``fn`` as
    meant: a parameter outside those, or one of verl's keywords it cannot take."""
    shape = _shape(fn)
    names = {p.name for p in shape.named}
    offered = set(CALL_KEYWORDS) | set(reward_kwargs)
    if not shape.verl_shaped or (not shape.var_keyword and not offered <= names):
        return True
    return any(p.name not in offered and p.default is inspect.Parameter.empty
               for p in shape.named)


def bind_reward_function(fn: Callable[..., Any], reward_kwargs: Mapping[str, Any] | None = None
                         ) -> Callable[..., Any]:
    """``fn`` as a callable of verl's signature; async when ``fn`` is.

    Raises (at call time) :class:`UnboundParameterError` naming a parameter nothing binds.
    """
    defaults = dict(reward_kwargs or {})
    shape = _shape(fn)

    def arguments(call: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        extra = call.get("extra_info")
        extra = extra if isinstance(extra, Mapping) else {}
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for param in shape.named:
            optional = param.default is not inspect.Parameter.empty
            sources = (call, defaults) if optional and shape.verl_shaped else (
                call, extra, defaults)
            for source in sources:
                if param.name in source:
                    value = source[param.name]
                    break
            else:
                if not optional:
                    raise UnboundParameterError(describe_unbound(
                        fn, param.name, extra_info_keys=extra, reward_kwargs=defaults))
                continue
            if param.kind is param.POSITIONAL_ONLY:
                args.append(value)
            else:
                kwargs[param.name] = value
        if shape.var_keyword:  # as verl would: every call keyword and reward kwarg
            for source in (defaults, call):
                kwargs.update({k: v for k, v in source.items()
                               if k not in kwargs and not any(p.name == k for p in shape.named)})
        return args, kwargs

    if shape.is_async:
        async def bound_async(data_source: Any = None, solution_str: Any = None,
                              ground_truth: Any = None, extra_info: Any = None,
                              **kwargs: Any) -> Any:
            args, kw = arguments({"data_source": data_source, "solution_str": solution_str,
                                  "ground_truth": ground_truth, "extra_info": extra_info,
                                  **kwargs})
            return await fn(*args, **kw)

        # not __wrapped__: inspect.signature must see verl's signature when it is bound again
        bound_async.__rewardsql_bound__ = fn  # type: ignore[attr-defined]
        return bound_async

    def bound(data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
              extra_info: Any = None, **kwargs: Any) -> Any:
        args, kw = arguments({"data_source": data_source, "solution_str": solution_str,
                              "ground_truth": ground_truth, "extra_info": extra_info, **kwargs})
        return fn(*args, **kw)

    bound.__rewardsql_bound__ = fn  # type: ignore[attr-defined]
    return bound


# -- what verl imports -------------------------------------------------------------------------


def dispatch_kwargs(path: str, name: str, reward_kwargs: Mapping[str, Any],
                    label: str = "") -> tuple[str, dict[str, Any]]:
    """``(name, reward_kwargs)`` to configure verl with so that it calls the function ``name``
    at ``path`` through :func:`compute_score`: the user's reward kwargs stay as they are, and
    :data:`TARGET_KEY` says what to call and which keywords are reward kwargs."""
    from verl.utils.import_utils import load_extern_object

    fn = load_extern_object(module_path=path, object_name=name)
    entry = "compute_score_async" if _shape(fn).is_async else "compute_score"
    target = {"path": path, "name": name, "label": label or name,
              "reward_kwargs": sorted(k for k in reward_kwargs if k != TARGET_KEY)}
    return entry, {**reward_kwargs, TARGET_KEY: target}


@functools.lru_cache(maxsize=32)
def _load(path: str, name: str) -> Callable[..., Any]:
    from verl.utils.import_utils import load_extern_object

    fn = load_extern_object(module_path=path, object_name=name)
    if not callable(fn):
        raise TypeError(f"{name!r} in {path!r} is not callable")
    return fn


def _prepare(kwargs: dict[str, Any]) -> tuple[Callable[..., Any], str]:
    target = kwargs.pop(TARGET_KEY)
    fn = _load(str(target["path"]), str(target["name"]))
    reward_kwargs = {k: kwargs.pop(k) for k in list(target.get("reward_kwargs") or ())
                     if k in kwargs}
    return bind_reward_function(fn, reward_kwargs), str(target.get("label") or target["name"])


def _failed(label: str, exc: Exception) -> Exception:
    if isinstance(exc, UnboundParameterError):
        return exc
    return RuntimeError(f"reward function {label} raised {type(exc).__name__}: {exc}")


def compute_score(data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
                  extra_info: Any = None, **kwargs: Any) -> Any:
    """What verl calls for a function that needs binding (see :func:`dispatch_kwargs`)."""
    fn, label = _prepare(kwargs)
    try:
        return fn(data_source=data_source, solution_str=solution_str, ground_truth=ground_truth,
                  extra_info=extra_info, **kwargs)
    except Exception as exc:  # name the plugin's function: verl's worker traceback does not
        raise _failed(label, exc) from exc


async def compute_score_async(data_source: Any = None, solution_str: Any = None,
                              ground_truth: Any = None, extra_info: Any = None,
                              **kwargs: Any) -> Any:
    """The async twin of :func:`compute_score`, for async reward functions."""
    fn, label = _prepare(kwargs)
    try:
        return await fn(data_source=data_source, solution_str=solution_str,
                        ground_truth=ground_truth, extra_info=extra_info, **kwargs)
    except Exception as exc:
        raise _failed(label, exc) from exc
