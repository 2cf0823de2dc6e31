"""Composing the verl config: verl 0.9.1's defaults, then the user's YAML, then overrides.

The defaults are composed with Hydra's compose API from the installed verl package's own config
directory (``verl/trainer/config``, config ``ppo_trainer``), exactly as ``verl.trainer.main_ppo``
would, once per process. User keys are checked against them: an unknown key fails with the key,
the file and the closest valid key; old keys are translated first (:mod:`.translate`).
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib.util
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rewardsql import section
from rewardsql.config import (
    ConfigError,
    OverrideKind,
    get_key,
    load_config,
    parse_override,
    require_verl,
    set_key,
    to_plain,
)
from rewardsql.training.launcher.translate import (
    Translation,
    translate,
    translate_key,
    translate_value,
)

#: Sections under which any key is accepted: their contents belong to someone else (a reward
#: function's kwargs, a rollout engine's kwargs) or to rewardsql itself (checked separately).
OPEN_SECTIONS: tuple[str, ...] = (
    section.MANAGER_SETTINGS_KEY,
    "reward.custom_reward_function.reward_kwargs",
    "reward.reward_kwargs",
    "ray_kwargs.ray_init",
)
#: Sections that take new keys beside verl's own: an advantage estimator reads its settings
#: (``weight_factor``, ``epsilon``) from verl's algorithm config. A new key too close to one of
#: verl's (a typo) is still an error.
EXTENSIBLE_SECTIONS: tuple[str, ...] = ("algorithm",)


def verl_config_dir() -> Path:
    """``verl/trainer/config`` of the installed verl, found without importing verl."""
    require_verl("rewardsql train (verl composes and checks its config, for either engine)")
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("verl is installed as a single module, not a package; reinstall "
                          "rewardsql[verl] (verl 0.9.1)")
    path = Path(next(iter(spec.submodule_search_locations))) / "trainer" / "config"
    if not (path / "ppo_trainer.yaml").is_file():
        raise ConfigError(f"no ppo_trainer.yaml in {path}; is verl 0.9.1 installed?")
    return path


@functools.lru_cache(maxsize=1)
def _defaults_cached() -> Any:
    config_dir = verl_config_dir()  # first: hydra comes with verl
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        config = compose(config_name="ppo_trainer")
    with open_dict(config):
        config[section.SECTION] = OmegaConf.create(section.defaults())
    return config


def verl_defaults() -> Any:
    """verl's default PPO trainer config plus an empty ``rewardsql`` section (a fresh copy)."""
    return copy.deepcopy(_defaults_cached())


# -- reading the user's file -------------------------------------------------------------------


def load_user_config(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON config (numbers read as verl reads them: ``lr: 1e-6`` is a float)."""
    return load_config(path)


# -- checking keys ---------------------------------------------------------------------------


def _is_open(dotted: str) -> bool:
    return any(dotted == s or dotted.startswith(s + ".") for s in OPEN_SECTIONS)


def _all_keys(node: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in node.items():
        out.append(f"{prefix}{key}")
        if isinstance(value, Mapping):
            out.extend(_all_keys(value, f"{prefix}{key}."))
    return out


def closest_key(dotted: str, defaults: Mapping[str, Any]) -> str | None:
    """The valid key closest to an unknown ``dotted`` one: a sibling first, then anywhere."""
    *parents, last = dotted.split(".")
    node: Any = defaults
    for part in parents:
        node = node.get(part) if isinstance(node, Mapping) else None
    prefix = ".".join(parents) + "." if parents else ""
    if isinstance(node, Mapping):
        near = difflib.get_close_matches(last, [str(k) for k in node], n=1, cutoff=0.7)
        if near:
            return prefix + near[0]
    everywhere = _all_keys(defaults)
    same_leaf = [k for k in everywhere if k.rsplit(".", 1)[-1] == last]
    if same_leaf:
        return difflib.get_close_matches(dotted, same_leaf, n=1, cutoff=0.0)[0]
    leaves = {k.rsplit(".", 1)[-1]: k for k in everywhere}
    near = difflib.get_close_matches(last, list(leaves), n=1, cutoff=0.75)
    if near:
        return leaves[near[0]]
    near = difflib.get_close_matches(dotted, everywhere, n=1, cutoff=0.6)
    return near[0] if near else None


def extension_allowed(dotted: str, defaults: Mapping[str, Any]) -> bool:
    """Whether ``dotted`` is a new key directly under an extensible section, not a typo."""
    parent, _, last = dotted.rpartition(".")
    if parent not in EXTENSIBLE_SECTIONS:
        return False
    node: Any = defaults
    for part in parent.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    siblings = [str(k) for k in node] if isinstance(node, Mapping) else []
    return not difflib.get_close_matches(last, siblings, n=1, cutoff=0.8)


def unknown_key_error(dotted: str, defaults: Mapping[str, Any], source: str | None,
                      extra: str = "") -> ConfigError:
    """The error for a key verl 0.9.1 does not have, with the closest valid key."""
    near = closest_key(dotted, defaults)
    hint = f"; did you mean {near!r}?" if near and near != dotted else ""
    return ConfigError(f"unknown key{hint}{extra}", source=source, key=dotted)


# -- composing --------------------------------------------------------------------------------


def merge_user_config(config: Any, user: Mapping[str, Any], source: str | None) -> Translation:
    """Translate ``user``, check its keys and merge it onto ``config`` (in place)."""
    from omegaconf import open_dict

    translation = translate(user, source)
    defaults = to_plain(config, resolve=False)
    translation.added = _check_all(translation.config, defaults, source)
    with open_dict(config):  # keys were checked above; open for the free-form sections
        config.merge_with(translation.config)
    return translation


def _check_all(user: Mapping[str, Any], defaults: Mapping[str, Any],
               source: str | None) -> list[str]:
    """Fail on the first key of ``user`` that ``defaults`` does not have; return the new keys
    accepted under :data:`EXTENSIBLE_SECTIONS`.

    Below a key whose default is an empty mapping or null (``override_config: {}``,
    ``engine_kwargs: null``) anything goes: those are free-form by design.
    """
    def walk(node: Mapping[str, Any], default: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if _is_open(dotted):
                continue
            if not isinstance(default, Mapping) or key not in default:
                if extension_allowed(dotted, defaults):
                    added.append(dotted)
                    continue
                raise unknown_key_error(dotted, defaults, source)
            child = default[key]
            if isinstance(value, Mapping) and child is not None and not isinstance(child, Mapping) \
                    and not (isinstance(child, str) and child.startswith("${")):
                raise ConfigError(f"expected a single value (default {child!r}), got a section",
                                  source=source, key=dotted)
            if isinstance(value, Mapping) and isinstance(child, Mapping) and child:
                walk(value, child, dotted + ".")

    added: list[str] = []
    walk(user, defaults, "")
    return added


def _exists(config: Any, key: str) -> bool:
    """Whether ``config`` has ``key``, set or a mandatory value still unset (``???``, e.g.
    ``actor_rollout_ref.rollout.name``): Hydra sets such a key with a plain ``KEY=VALUE``."""
    if get_key(config, key, _ABSENT) is not _ABSENT:
        return True
    parent, _, last = key.rpartition(".")
    node = get_key(config, parent, None) if parent else config
    if node is None or not hasattr(node, "_get_node"):  # not an omegaconf mapping
        return False
    from omegaconf import OmegaConf

    return bool(OmegaConf.is_missing(node, last))


def apply_overrides(config: Any, overrides: Iterable[str]) -> Translation:
    """Apply ``KEY=VALUE`` overrides (:func:`rewardsql.config.parse_override`) to ``config`` (in
    place). Old keys are translated as in config files; a new key needs ``+`` (below a free-form
    or extensible section it does not).
    """
    result = Translation(config={})
    for text in overrides:
        override = parse_override(text)
        source = f"command-line override {text!r}"
        old_key = override.key
        key, why = translate_key(old_key)
        if key is None:
            result.changes.append((old_key, None, why))
            continue
        if key != old_key:
            result.changes.append((old_key, key, why))
        exists = _exists(config, key)
        if override.kind is OverrideKind.DELETE:
            if not exists:
                raise ConfigError("cannot delete a key that is not there", source=source, key=key)
            parent, _, last = key.rpartition(".")
            from omegaconf import open_dict

            with open_dict(config):
                node = get_key(config, parent) if parent else config
                del node[last]
            continue
        value, value_why = translate_value(key, override.value)
        if value_why:
            result.changes.append((f"{key}={override.value}", f"{key}={value}", value_why))
        if override.kind is OverrideKind.CHANGE and not exists and not _is_open(key):
            plain = to_plain(config, resolve=False)
            if not extension_allowed(key, plain):
                raise unknown_key_error(key, plain, source, f" (to add a new key write +{key}=...)")
            result.added.append(key)
        if override.kind is OverrideKind.ADD and exists and key == old_key:
            # (an old key's "+" is fine where verl 0.9.1 has the key it moved to)
            raise ConfigError(f"already set; to change it write {key}=... without '+'",
                              source=source, key=key)
        set_key(config, key, value)
    return result


_ABSENT = object()
