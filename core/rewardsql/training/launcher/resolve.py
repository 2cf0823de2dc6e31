"""Resolving what a training config names: estimators, reward managers and functions, the
``--core-algos`` module, and the data files. Every failure names the key or file at fault and
lists what is available."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardsql.components import ComponentKind
from rewardsql.errors import ConfigError, PluginError, UnknownComponentError
from rewardsql.legacy import is_legacy_manager
from rewardsql.registry import get_registry
from rewardsql.section import MANAGER_SETTINGS_KEY, REWARD_FUNCTION_KEY

#: ``--algorithm`` spellings that are not estimator names.
ALGORITHM_ALIASES: dict[str, str] = {"ppo": "gae"}
#: ``--algorithm`` values that name no estimator of verl 0.9.1, and what to do instead.
NOT_AN_ESTIMATOR: dict[str, str] = {
    "prime": "PRIME is a separate verl recipe (recipe/prime in verl's repository), not part of "
             "verl 0.9.1's trainer that rewardsql drives; use --algorithm grpo (or rloo), "
             "or run verl's PRIME recipe itself",
}


def estimator_for_algorithm(algorithm: str) -> str:
    """The estimator suited to ``--algorithm`` (grpo -> grpo, ppo -> gae, rloo -> rloo, ...)."""
    if algorithm in NOT_AN_ESTIMATOR:
        raise ConfigError(NOT_AN_ESTIMATOR[algorithm], source="--algorithm")
    return ALGORITHM_ALIASES.get(algorithm, algorithm)


@dataclass(frozen=True)
class Resolved:
    """A name as the config gave it, what it resolved to, and who provides it."""

    given: str
    name: str
    provider: str
    obj: Any = None

    def describe(self) -> str:
        """E.g. ``grpo_weighted (alias compute_weighted_grpo_advantage; rewardsql-advantages)``."""
        alias = f"alias {self.given}; " if self.given != self.name else ""
        return f"{self.name} ({alias}{self.provider})"


# -- advantage estimators -------------------------------------------------------------------


def verl_builtin_estimators() -> list[str]:
    """verl's own estimator names (the ``AdvantageEstimator`` enum)."""
    from verl.trainer.ppo.core_algos import AdvantageEstimator

    return [e.value for e in AdvantageEstimator]


def resolve_estimator(name: str, *, key: str = "algorithm.adv_estimator") -> Resolved:
    """verl's estimator or a rewardsql plugin's (by name or alias, to its canonical name).

    A rewardsql estimator must also be in verl's registry (the verl bridge puts it there when
    verl is imported); if it is not, verl would fail with "unknown estimator" mid-launch.
    """
    from verl.trainer.ppo import core_algos

    given = name
    name = ALGORITHM_ALIASES.get(name, name)
    builtins = verl_builtin_estimators()
    if name in builtins:
        return Resolved(given, name, "verl")
    plugins = get_registry()
    try:
        component = plugins.get(ComponentKind.ADVANTAGE_ESTIMATOR, name)
    except UnknownComponentError:
        component = None
    except PluginError as exc:
        raise exc.at(key=key) from None
    if component is not None:
        if core_algos.ADV_ESTIMATOR_REGISTRY.get(component.name) is not component.obj:
            raise ConfigError(
                f"advantage estimator {component.name!r} is registered in rewardsql but not in "
                "verl's registry: the verl bridge did not install it (see the warnings above)",
                key=key)
        provider = f"{component.plugin} {component.version}".strip()
        return Resolved(given, component.name, provider, component.obj)
    if name in core_algos.ADV_ESTIMATOR_REGISTRY:  # registered with verl directly by a module
        return Resolved(given, name, "verl registry", core_algos.ADV_ESTIMATOR_REGISTRY[name])
    ours = plugins.names(ComponentKind.ADVANTAGE_ESTIMATOR)
    raise ConfigError(
        f"unknown advantage estimator {given!r}. Available from verl: {', '.join(builtins)}; "
        f"from rewardsql plugins: {', '.join(ours) or 'none (is rewardsql-advantages installed?)'}",
        key=key)


# -- --core-algos ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CoreAlgos:
    """An imported ``--core-algos`` module and how verl's processes import it too."""

    spec: str
    module: str
    #: The directory to put on PYTHONPATH when it was given as a .py file.
    directory: Path | None = None


def import_core_algos(spec: str) -> CoreAlgos:
    """Import a module path (``pkg.algos``) or a ``.py`` file, here and now.

    A file is imported by its stem, with its directory put first on ``sys.path`` (and, for verl's
    Ray processes, on ``PYTHONPATH``): so the stem must be a valid module name that no installed
    module already uses.
    """
    source = "--core-algos"
    looks_like_file = spec.endswith(".py") or os.sep in spec or "/" in spec
    if looks_like_file:
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"no such file: {path}", source=source)
        if path.suffix != ".py" or not path.stem.isidentifier():
            raise ConfigError(
                f"{path.name}: a --core-algos file must be a .py file whose name is a valid "
                "Python module name", source=source)
        module_name, directory = path.stem, path.parent
        loaded = sys.modules.get(module_name)
        if loaded is not None:
            if Path(getattr(loaded, "__file__", "") or "").resolve() != path:
                raise ConfigError(
                    f"{path}: the module name {module_name!r} is already taken by "
                    f"{getattr(loaded, '__file__', loaded)!r}; rename the file", source=source)
        else:
            found = importlib.util.find_spec(module_name)
            if found is not None and Path(found.origin or "").resolve() != path:
                raise ConfigError(
                    f"{path}: the module name {module_name!r} would shadow the installed "
                    f"module at {found.origin}; rename the file", source=source)
            if str(directory) not in sys.path:
                sys.path.insert(0, str(directory))
    else:
        module_name, directory = spec, None
    try:
        importlib.import_module(module_name)
    except Exception as exc:  # user code: report whatever it raised
        raise ConfigError(f"cannot import {spec!r}: {type(exc).__name__}: {exc}",
                          source=source) from None
    return CoreAlgos(spec, module_name, directory)


def find_core_function(name: str, core_algos: Sequence[CoreAlgos]) -> CoreAlgos | None:
    """The ``--core-algos`` module with a plain (undecorated) function called ``name``, as the
    original RewardSQL's ``--core_function`` finds it (None when no module has one)."""
    for algos in core_algos:
        if callable(getattr(sys.modules.get(algos.module), name, None)):
            return algos
    return None


def runtime_env_vars(core_algos: Sequence[CoreAlgos]) -> dict[str, str]:
    """Environment variables that make verl's Ray processes import the ``--core-algos`` modules.

    ``VERL_USE_EXTERNAL_MODULES`` is read by ``import verl`` in every process; a file's
    directory goes on ``PYTHONPATH`` ahead of the launching process's own. Plugins installed as
    packages need nothing: verl's ``verl.plugins`` entry point loads the bridge everywhere.
    """
    env: dict[str, str] = {}
    if not core_algos:
        return env
    modules = [m for m in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m]
    modules += [c.module for c in core_algos if c.module not in modules]
    env["VERL_USE_EXTERNAL_MODULES"] = ",".join(modules)
    dirs = [str(c.directory) for c in core_algos if c.directory is not None]
    if dirs:
        existing = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(dirs + existing))
    return env


# -- reward managers and functions ----------------------------------------------------------


def resolve_reward_manager(source: str, name: str, module_path: str | None = None) -> Resolved:
    """The reward manager ``reward.reward_manager`` selects: a rewardsql plugin's, verl's own,
    or (``source: importlib``) a class loaded from ``module.path``."""
    key = "reward.reward_manager.name"
    if source == "importlib":
        if not module_path:
            raise ConfigError("source importlib needs reward.reward_manager.module.path",
                              key="reward.reward_manager.module.path")
        from verl.utils.import_utils import load_extern_object

        try:
            obj = load_extern_object(module_path=module_path, object_name=name)
        except Exception as exc:
            raise ConfigError(f"cannot load {name!r} from {module_path!r}: {exc}",
                              key="reward.reward_manager.module.path") from None
        if is_legacy_manager(obj):  # verl's reward loop would call it with other arguments
            raise ConfigError(
                f"{name!r} in {module_path!r} is a reward manager of verl's legacy shape "
                "(tokenizer, num_examine, ...), which verl 0.9.1's reward loop cannot load by "
                "path: register it with @rewardsql.register_reward_manager (or the "
                "rewardsql_reward_managers hook) and set reward.reward_manager.source=register "
                "and reward.reward_manager.name to its name", key="reward.reward_manager.source")
        return Resolved(name, name, module_path, obj)
    if source != "register":
        raise ConfigError(f"expected 'register' or 'importlib', got {source!r}",
                          key="reward.reward_manager.source")
    plugins = get_registry()
    try:
        component = plugins.get(ComponentKind.REWARD_MANAGER, name)
    except UnknownComponentError:
        component = None
    except PluginError as exc:
        raise exc.at(key=key) from None
    from verl.experimental.reward_loop.reward_manager import registry

    if component is not None:
        if component.name not in registry.REWARD_MANAGER:
            raise ConfigError(
                f"reward manager {component.name!r} is registered in rewardsql but not in verl's "
                "reward loop: the verl bridge did not install it (see the warnings above)", key=key)
        provider = f"{component.plugin} {component.version}".strip()
        return Resolved(name, component.name, provider, component.obj)
    if name in registry.REWARD_MANAGER:
        return Resolved(name, name, "verl", registry.REWARD_MANAGER[name])
    ours = plugins.names(ComponentKind.REWARD_MANAGER)
    theirs = sorted(set(registry.REWARD_MANAGER) - set(ours))
    raise ConfigError(
        f"unknown reward manager {name!r}. Available from verl: {', '.join(theirs)}; from "
        f"rewardsql plugins: {', '.join(ours) or 'none (is rewardsql-sql-reward installed?)'}",
        key=key)


def is_rewardsql_manager(manager: Resolved) -> bool:
    """Whether a rewardsql plugin's manager (run in verl through the bridge's adapter)."""
    from rewardsql.rewards import RewardManager

    return isinstance(manager.obj, type) and issubclass(manager.obj, RewardManager)


def needs_ground_truth(manager: Resolved) -> bool:
    """Whether the manager reads ground truth (``RewardManager.needs_ground_truth``), so verl
    must send it the full batch."""
    return is_rewardsql_manager(manager) and manager.obj.needs_ground_truth


def check_manager_settings(manager: Resolved, settings: dict[str, Any]) -> None:
    """A rewardsql manager's settings (``rewardsql.reward_manager``) against its ``Settings``.

    A manager without a ``Settings`` schema is built once and closed, so that it can judge them
    itself (the SQL verifier starts its workers lazily, so this is cheap).
    """
    if not is_rewardsql_manager(manager):
        return
    cls = manager.obj
    try:
        if cls.Settings is not None:
            cls.parse_settings(settings)
        else:
            cls(settings).close()
    except ConfigError as exc:
        raise ConfigError(f"reward manager {manager.name!r} rejects its settings: "
                          f"{exc.message}", key=_settings_key(exc)) from None
    except Exception as exc:  # the manager's own validation, whatever it raises
        raise ConfigError(f"reward manager {manager.name!r} rejects its settings: "
                          f"{type(exc).__name__}: {exc}", key=MANAGER_SETTINGS_KEY) from None


def _settings_key(exc: ConfigError) -> str:
    return f"{MANAGER_SETTINGS_KEY}.{exc.key}" if exc.key else MANAGER_SETTINGS_KEY


def reward_function_target(name: str) -> tuple[str, str]:
    """``(path, name)`` for ``reward.custom_reward_function`` of a registered reward function."""
    try:
        component = get_registry().get(ComponentKind.REWARD_FUNCTION, name)
    except PluginError as exc:
        raise exc.at(key=REWARD_FUNCTION_KEY) from None
    obj = component.obj
    module, attr = getattr(obj, "__module__", None), getattr(obj, "__name__", None)
    if not module or not attr or getattr(sys.modules.get(module), attr, None) is not obj:
        raise ConfigError(
            f"reward function {name!r} is not a module-level function, so verl cannot import "
            "it by path; set reward.custom_reward_function.path and .name instead",
            key=REWARD_FUNCTION_KEY)
    return f"pkg://{module}", attr


def resolve_reward_function(path: str | None, name: str | None) -> Resolved | None:
    """Load ``reward.custom_reward_function`` the way verl will (None when unset)."""
    if not path:
        return None
    from verl.utils.import_utils import load_extern_object

    key = "reward.custom_reward_function.path"
    if not name:
        raise ConfigError("a reward function path needs a name",
                          key="reward.custom_reward_function.name")
    try:
        obj = load_extern_object(module_path=path, object_name=name)
    except Exception as exc:
        raise ConfigError(f"cannot load {name!r} from {path!r}: {type(exc).__name__}: {exc}",
                          key=key) from None
    if not callable(obj):
        raise ConfigError(f"{name!r} in {path!r} is not callable", key=key)
    label = name
    for component in get_registry().components(ComponentKind.REWARD_FUNCTION):
        if component.obj is obj:
            label = f"{component.name}, {component.plugin}"
    return Resolved(f"{path}:{name}", f"{path}:{name}", label, obj)


def check_reward_function_binding(function: Resolved, extra_info_keys: Sequence[str],
                                  reward_kwargs: dict[str, Any]) -> None:
    """Every parameter of the reward function is bound by verl's call keywords, a key of the
    data's extra_info, or reward_kwargs; else a ConfigError naming it and where it could come
    from (it would be a TypeError on every call inside training)."""
    from rewardsql.signatures import REWARD_KWARGS_KEY, describe_unbound, unbound_parameters

    unbound = unbound_parameters(function.obj, extra_info_keys=extra_info_keys,
                                 reward_kwargs=reward_kwargs)
    if unbound:
        raise ConfigError(describe_unbound(function.obj, unbound[0],
                                           extra_info_keys=extra_info_keys,
                                           reward_kwargs=reward_kwargs), key=REWARD_KWARGS_KEY)


# -- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFile:
    """A checked parquet file."""

    path: Path
    rows: int
    #: The fields of its ``extra_info`` struct column (what a reward function can bind).
    extra_info_keys: tuple[str, ...] = ()


def required_columns(prompt_key: str, data_source_key: str) -> tuple[str, ...]:
    """The columns verl's RL dataset and the SQL reward need (dotted: a field of a struct)."""
    return (prompt_key, data_source_key, "reward_model.ground_truth", "extra_info.db_id")


def check_data_file(path: str | os.PathLike[str], columns: Sequence[str], key: str) -> DataFile:
    """Check that a parquet file exists and has ``columns``; read only its schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = Path(os.path.expanduser(str(path)))
    if not file.is_file():
        raise ConfigError(f"data file not found: {file}", key=key)
    if file.suffix != ".parquet":
        raise ConfigError(f"{file}: verl reads parquet files (write one with "
                          "`rewardsql data prepare`)", key=key)
    try:
        parquet = pq.ParquetFile(file)
    except Exception as exc:  # not parquet, truncated
        raise ConfigError(f"{file}: not a readable parquet file: {exc}", key=key) from None
    schema = parquet.schema_arrow
    for column in columns:
        top, _, sub = column.partition(".")
        index = schema.get_field_index(top)
        if index < 0:
            raise ConfigError(f"{file}: missing column {column!r} (has: "
                              f"{', '.join(schema.names)})", key=key)
        if sub:
            kind = schema.field(index).type
            if not pa.types.is_struct(kind) or kind.get_field_index(sub) < 0:
                raise ConfigError(f"{file}: missing column {column!r} (column {top!r} is {kind})",
                                  key=key)
    index = schema.get_field_index("extra_info")
    kind = schema.field(index).type if index >= 0 else None
    keys = tuple(kind.field(i).name for i in range(kind.num_fields)) if (
        kind is not None and pa.types.is_struct(kind)) else ()
    return DataFile(file, parquet.metadata.num_rows, keys)


def data_files(value: Any) -> list[str]:
    """``data.train_files`` as a list (verl accepts one path or a list)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def files_for_data_path(data_path: Path) -> tuple[str, str, str | None]:
    """``(train, val, note)`` for ``--data-path``.

    A directory holds ``train.parquet`` and ``val.parquet`` (or ``test.parquet``/``dev.parquet``),
    as ``rewardsql data prepare --output DIR/train.parquet --val-fraction F`` writes them. A file
    is the training set; ``val.parquet`` beside it is the validation set when there is one,
    otherwise the file itself is (and the note says so).
    """
    path = data_path.expanduser().resolve()
    if path.is_dir():
        train = path / "train.parquet"
        if not train.is_file():
            raise ConfigError(f"no train.parquet in {path}", source="--data-path")
        for name in ("val.parquet", "test.parquet", "dev.parquet"):
            if (path / name).is_file():
                return str(train), str(path / name), None
        raise ConfigError(f"no val.parquet, test.parquet or dev.parquet in {path}",
                          source="--data-path")
    if not path.is_file():
        raise ConfigError(f"no such file or directory: {path}", source="--data-path")
    val = path.with_name("val.parquet")
    if val.is_file() and val != path:
        return str(path), str(val), None
    return str(path), str(path), f"no val.parquet beside {path.name}: validating on it too"
