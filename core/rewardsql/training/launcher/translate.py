"""Translating configs written for older verl (and the original RewardSQL) to verl 0.9.1 keys.

Three tables, each the one place for its kind of change (docs/training.md lists them):

- :data:`RENAMED`: a key (and everything under it) moved; the value is kept.
- :data:`OBSOLETE`: older verl or the original RewardSQL's fork had the key, 0.9.1 has nothing
  like it; a warning names it and it is dropped.
- :data:`RENAMED_VALUES`: a value that older verl accepted and 0.9.1 spells differently.

Rules match dotted key prefixes; the longest matching rule wins, so ``verifier.reward_coef`` can
go one way and the rest of ``verifier.*`` another.

One old *behaviour* is translated too, on the composed config of an old-shaped file
(:func:`translate_old_mini_batches`): a mini-batch larger than the batch.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from rewardsql.config import get_key, set_key
from rewardsql.errors import ConfigError
from rewardsql.section import MANAGER_SETTINGS_KEY, OUTCOME_WEIGHT_KEY, PROCESS_WEIGHT_KEY


@dataclass(frozen=True)
class Renamed:
    """``old`` (a dotted key prefix) now lives at ``new``."""

    old: str
    new: str
    why: str = ""
    #: True when the old key wins over a value the user also set at the new key (the original
    #: RewardSQL's ``algorithm.core_function`` is more specific than ``algorithm.adv_estimator``).
    overrides_new: bool = False


@dataclass(frozen=True)
class Obsolete:
    """``key`` (a dotted prefix) has no counterpart in verl 0.9.1."""

    key: str
    why: str


@dataclass(frozen=True)
class RenamedValue:
    """At ``key`` (after renaming), the value ``old`` is now spelled ``new``."""

    key: str
    old: Any
    new: Any
    why: str = ""


RENAMED: tuple[Renamed, ...] = (
    # verl 0.9.1 moved every reward setting under `reward:` (its reward loop); the old top-level
    # sections are still in the default config but the PPO trainer ignores them.
    Renamed("custom_reward_function", "reward.custom_reward_function",
            "reward functions moved under reward:"),
    Renamed("sandbox_fusion", "reward.sandbox_fusion", "moved under reward:"),
    Renamed("reward_model.reward_manager", "reward.reward_manager.name",
            "reward managers are chosen under reward.reward_manager"),
    Renamed("reward_model.reward_loop_source", "reward.reward_manager.source", "moved"),
    Renamed("reward_model.reward_loop_module_path", "reward.reward_manager.module.path", "moved"),
    Renamed("reward_model.reward_loop_class_name", "reward.reward_manager.module.name", "moved"),
    Renamed("reward_model.num_workers", "reward.num_workers", "moved"),
    Renamed("reward_model.reward_kwargs", "reward.reward_kwargs", "moved"),
    Renamed("reward_model.enable", "reward.reward_model.enable", "moved"),
    Renamed("reward_model.enable_resource_pool", "reward.reward_model.enable_resource_pool",
            "moved"),
    Renamed("reward_model.n_gpus_per_node", "reward.reward_model.n_gpus_per_node", "moved"),
    Renamed("reward_model.nnodes", "reward.reward_model.nnodes", "moved"),
    Renamed("reward_model.model.path", "reward.reward_model.model_path", "moved"),
    Renamed("reward_model.rollout", "reward.reward_model.rollout", "moved"),
    # The original RewardSQL's weights of the PRM (process) and the SQL verifier (outcome).
    Renamed("reward_model.rm_coef", PROCESS_WEIGHT_KEY, "the PRM weight"),
    Renamed("verifier.reward_coef", OUTCOME_WEIGHT_KEY, "the SQL verifier's weight"),
    # Any other verifier.* key is a setting of the in-process SQL verifier (timeout, mode, ...).
    Renamed("verifier", MANAGER_SETTINGS_KEY, "the SQL verifier runs inside the reward manager"),
    Renamed("algorithm.core_function", "algorithm.adv_estimator",
            "the original RewardSQL's estimator selection; resolved through rewardsql's registry",
            overrides_new=True),
    Renamed("trainer.val_generations_to_log_to_wandb", "trainer.log_val_generations",
            "renamed in verl"),
    Renamed("actor_rollout_ref.actor.optim.warmup_style",
            "actor_rollout_ref.actor.optim.lr_scheduler_type", "renamed in verl"),
    Renamed("critic.optim.warmup_style", "critic.optim.lr_scheduler_type", "renamed in verl"),
    Renamed("critic.model.fsdp_config", "critic.fsdp", "the critic's FSDP settings moved"),
)

#: Sections verl 0.9.1 still has in its default config but its PPO trainer ignores (verl keeps
#: them for an opt-in migration helper); what is not translated out of them is dropped.
LEGACY_SECTIONS: tuple[str, ...] = ("reward_model", "custom_reward_function", "sandbox_fusion")

OBSOLETE: tuple[Obsolete, ...] = (
    Obsolete("reward_model", "verl 0.9.1's PPO trainer ignores the old reward_model section"),
    Obsolete("data_logger",
             "the original RewardSQL fork's sample logger; use trainer.rollout_data_dir"),
    Obsolete("verifier.type", "the SQL verifier is the sql_verifier reward manager"),
    Obsolete("verifier.port", "the SQL verifier runs in-process; there is no service to reach"),
    Obsolete("reward_model.enable_EXreward", "the execution reward is set by verifier.reward_coef"),
    Obsolete("reward_model.step_tag_id",
             "token ids are derived from the tokenizer at run time, never hard-coded"),
    Obsolete("reward_model.candidate_tokens",
             "token ids are derived from the tokenizer at run time, never hard-coded"),
    Obsolete("reward_model.strategy", "reward models are served by the rollout engine in 0.9.1"),
    Obsolete("reward_model.model.input_tokenizer", "reward models use their own tokenizer"),
    Obsolete("reward_model.model.external_lib", "use VERL_USE_EXTERNAL_MODULES or --core-algos"),
    Obsolete("reward_model.model.use_remove_padding", "dropped with the FSDP reward worker"),
    Obsolete("reward_model.model.fsdp_config", "dropped with the FSDP reward worker"),
    Obsolete("reward_model.model.trust_remote_code", "dropped with the FSDP reward worker"),
    Obsolete("reward_model.micro_batch_size", "dropped with the FSDP reward worker"),
    Obsolete("reward_model.micro_batch_size_per_gpu", "dropped with the FSDP reward worker"),
    Obsolete("reward_model.max_length", "dropped with the FSDP reward worker"),
    Obsolete("reward_model.ulysses_sequence_parallel_size", "dropped with the FSDP reward worker"),
    Obsolete("reward_model.use_dynamic_bsz", "dropped with the FSDP reward worker"),
    Obsolete("reward_model.forward_max_token_len_per_gpu", "dropped with the FSDP reward worker"),
    Obsolete("actor_rollout_ref.rollout.use_fire_sampling", "removed from verl"),
    Obsolete("trainer.remove_previous_ckpt_in_save", "use trainer.max_actor_ckpt_to_keep"),
)

RENAMED_VALUES: tuple[RenamedValue, ...] = (
    RenamedValue("reward.reward_manager.name", "custom", "sql_verifier",
                 "the original RewardSQL's `custom` manager was its SQL-execution reward"),
    RenamedValue("actor_rollout_ref.rollout.load_format", "dummy_dtensor", "dummy",
                 "verl 0.9.1 has one dummy load format"),
    RenamedValue("actor_rollout_ref.rollout.load_format", "dummy_hf", "dummy",
                 "verl 0.9.1 has one dummy load format"),
    RenamedValue("actor_rollout_ref.rollout.load_format", "dummy_megatron", "dummy",
                 "verl 0.9.1 has one dummy load format"),
    RenamedValue("actor_rollout_ref.rollout.mode", "sync", "async",
                 "verl 0.9.1 only has async rollout"),
)


@dataclass
class Translation:
    """A translated config and what was done to it."""

    config: dict[str, Any]
    #: ``(old key, new key or None when dropped, reason)`` in the order met.
    changes: list[tuple[str, str | None, str]] = field(default_factory=list)
    #: New keys added where verl allows them (estimator settings under ``algorithm``).
    added: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """One line per dropped key."""
        return [f"{old}: obsolete in verl 0.9.1, dropped ({why})"
                for old, new, why in self.changes if new is None]

    def notes(self) -> list[str]:
        """One line per renamed key or value."""
        return [f"{old} -> {new} ({why})" for old, new, why in self.changes if new is not None] + [
            f"{key}: not a verl key; kept for the advantage estimator" for key in self.added]


def _longest(rules: tuple[Any, ...], key: str, attr: str) -> Any | None:
    best = None
    for rule in rules:
        prefix = getattr(rule, attr)
        if (key == prefix or key.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(getattr(best, attr))
        ):
            best = rule
    return best


def obsolete_rule(key: str) -> Obsolete | None:
    """The :data:`OBSOLETE` entry that drops ``key``, if any."""
    renamed = _longest(RENAMED, key, "old")
    obsolete = _longest(OBSOLETE, key, "key")
    if obsolete is not None and (renamed is None or len(obsolete.key) >= len(renamed.old)):
        return obsolete
    return None


def translate_key(key: str) -> tuple[str | None, str]:
    """Where the dotted ``key`` lives in verl 0.9.1: ``(new key, reason)``; ``(None, reason)`` when
    it is obsolete; ``(key, "")`` when unchanged."""
    obsolete = obsolete_rule(key)
    if obsolete is not None:
        return None, obsolete.why
    renamed = _longest(RENAMED, key, "old")
    if renamed is not None:
        return renamed.new + key[len(renamed.old):], renamed.why
    return key, ""


def translate_value(key: str, value: Any) -> tuple[Any, str]:
    """The 0.9.1 spelling of ``value`` at (translated) ``key``: ``(value, reason or "")``."""
    for rule in RENAMED_VALUES:
        if rule.key == key and isinstance(value, str) and value == rule.old:
            return rule.new, rule.why
    return value, ""


def _leaves(node: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` for every leaf; an empty mapping is a leaf."""
    out: list[tuple[str, Any]] = []
    for key, value in node.items():
        if not isinstance(key, str):
            raise ConfigError(f"keys must be strings, got {key!r}", key=f"{prefix}{key}")
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.extend(_leaves(value, dotted + "."))
        else:
            out.append((dotted, value))
    return out


#: The original RewardSQL's PRM service port: its PRM server on this machine.
PRM_PORT_KEY = "reward_model.port"


def _translate_prm_port(port: Any, leaves: Mapping[str, Any],
                        source: str | os.PathLike[str] | None) -> tuple[str, str | None, str]:
    """The change for the seed's ``reward_model.port``: with a PRM weight (``rm_coef`` > 0) it
    is the URL of the PRM's server on this machine (``sql_prm``'s ``prm_url``, served by
    ``rewardsql rm serve --port PORT``); without one nothing scores a PRM and it is dropped."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"expected a port number, got {port!r}", source=source,
                          key=PRM_PORT_KEY)
    weight = leaves.get("reward_model.rm_coef", leaves.get(PROCESS_WEIGHT_KEY, 0)) or 0
    if isinstance(weight, (int, float)) and weight > 0:
        return (PRM_PORT_KEY, f"{MANAGER_SETTINGS_KEY}.prm_url=http://localhost:{port}",
                "the original RewardSQL's PRM service: now a vLLM server of the PRM, "
                f"`rewardsql rm serve --prm DIR --port {port}`")
    return (PRM_PORT_KEY, None, "no PRM weight (reward_model.rm_coef), so no PRM server to reach")


def translate(config: Mapping[str, Any],
              source: str | os.PathLike[str] | None = None) -> Translation:
    """Translate every key (and renamed value) of a user config to verl 0.9.1.

    A key set both under its old and its new name with different values is an error, except
    where the old key is the more specific one (see :attr:`Renamed.overrides_new`).
    """
    result = Translation(config={})
    placed: dict[str, tuple[str, bool]] = {}  # new key -> (where it came from, from a rename)
    leaves = _leaves(config)
    port = dict(leaves).get(PRM_PORT_KEY)
    if port is not None:
        leaves = [(k, v) for k, v in leaves if k != PRM_PORT_KEY]
        result.changes.append(_translate_prm_port(port, dict(leaves), source))
        if result.changes[-1][1] is not None:
            leaves.append((f"{MANAGER_SETTINGS_KEY}.prm_url", f"http://localhost:{port}"))
    for old_key, value in leaves:
        new_key, why = translate_key(old_key)
        if value is None and new_key != old_key:
            # null meant "not set" in older verl too; verl 0.9.1 still carries some old keys
            # with null values (so its own composed config reads back unchanged).
            continue
        if new_key is None:
            dropped = obsolete_rule(old_key)
            change = (dropped.key if dropped else old_key, None, why)
            if change not in result.changes:  # data_logger.a and data_logger.b: one warning
                result.changes.append(change)
            continue
        original = value
        value, value_why = translate_value(new_key, value)
        if value_why:
            result.changes.append((f"{new_key}={original}", f"{new_key}={value}", value_why))
        renamed = new_key != old_key
        if renamed:
            rule = _longest(RENAMED, old_key, "old")
            change = (rule.old, rule.new, why) if rule else (old_key, new_key, why)
            if change not in result.changes:  # a moved section: one note
                result.changes.append(change)
        if new_key in placed:
            other, other_renamed = placed[new_key]
            renamed_key = old_key if renamed else (other if other_renamed else None)
            rule = _longest(RENAMED, renamed_key, "old") if renamed_key else None
            if rule is not None and rule.overrides_new and renamed != other_renamed:
                if not renamed:  # the more specific old key was placed first: it stays
                    continue
            elif get_key(result.config, new_key, None) != value:
                raise ConfigError(
                    f"set twice with different values, as {other!r} and as {old_key!r} "
                    f"(both mean {new_key!r} in verl 0.9.1); keep one",
                    source=source, key=old_key)
        set_key(result.config, new_key, value)
        placed[new_key] = (old_key, renamed)
    return result



#: The mini-batch keys that older verl let exceed ``data.train_batch_size``.
OLD_MINI_BATCH_KEYS: tuple[str, ...] = (
    "actor_rollout_ref.actor.ppo_mini_batch_size",
    "critic.ppo_mini_batch_size",
)


def translate_old_mini_batches(config: Any, keep: Collection[str] = ()) -> list[str]:
    """Older verl's answer to a mini-batch larger than the batch, in verl 0.9.1's terms.

    Older verl (the original RewardSQL's fork among them) split each batch into mini-batches of
    ``ppo_mini_batch_size`` prompts, so a batch smaller than that was one mini-batch: one update
    per step. The fork's published config relies on it (48 prompts a batch, mini-batch 64);
    verl 0.9.1 refuses such a config. Call this for a config read from an old-shaped file (one
    with keys :func:`translate` renamed or dropped): each mini-batch of :data:`OLD_MINI_BATCH_KEYS`
    larger than ``data.train_batch_size`` becomes the batch, the same one update per step, except
    the ``keep`` keys (set on the command line: the user's own choice) and where dynamic batch
    sizes are on (verl checks nothing then). ``config`` is the composed one (an omegaconf
    DictConfig or a dict), changed in place; returns one note per change, naming both keys.
    """
    batch = get_key(config, "data.train_batch_size", None)
    if not isinstance(batch, int) or isinstance(batch, bool):
        return []
    notes = []
    for key in OLD_MINI_BATCH_KEYS:  # the actor's first: the critic's follows it by default
        section = key.rsplit(".", 1)[0]
        mini = get_key(config, key, None)
        if key in keep or get_key(config, f"{section}.use_dynamic_bsz", False):
            continue
        if isinstance(mini, int) and not isinstance(mini, bool) and mini > batch:
            set_key(config, key, batch)
            notes.append(f"{key} {mini} -> {batch} (= data.train_batch_size: older verl ran a "
                         "batch smaller than its mini-batch as one update per step; verl 0.9.1 "
                         "refuses a mini-batch larger than the batch)")
    return notes
