"""Reading a verl-shaped PPO config into the local engine's settings.

The local engine reads the keys of verl 0.9.1's PPO trainer config that it supports, with verl's
defaults and meanings. Keys verl does not know are an error (with the closest known key), and so
are settings the engine cannot honour in a way that would silently change results (a critic, LoRA,
KL in the reward, ...). Settings that only change speed or placement on a cluster (FSDP, vLLM,
micro-batch token budgets, profilers) are accepted and ignored.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from rewardsql import schema
from rewardsql.config import check_known_keys, get_key, to_plain
from rewardsql.errors import ConfigError, require_verl
from rewardsql.section import MANAGER_SETTINGS_KEY, PROCESS_WEIGHT_KEY, read_section

#: Sections whose keys are free-form (user keys such as ``+algorithm.weight_factor=0.7``, plugin
#: settings, keyword arguments handed through).
FREE_SECTIONS = (
    "algorithm",
    "rewardsql",
    "reward.custom_reward_function.reward_kwargs",
    "custom_reward_function.reward_kwargs",
    "actor_rollout_ref.model.override_config",
    "actor_rollout_ref.rollout.engine_kwargs",
    "data.apply_chat_template_kwargs",
    "data.mm_processor_kwargs",
    "ray_kwargs",
)

#: (dotted key, accepted values, why not). The key is an error when present with another value.
UNSUPPORTED: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("critic.enable", lambda v: not v, "the local engine trains no critic"),
    ("reward_model.enable", lambda v: not v, "reward models run only on the verl engine"),
    ("reward.reward_model.enable", lambda v: not v, "reward models run only on the verl engine"),
    ("reward.reward_manager.source", lambda v: v == "register",
     "the local engine finds reward managers by registered name only"),
    ("algorithm.use_kl_in_reward", lambda v: not v,
     "KL in the reward is not implemented locally; use actor_rollout_ref.actor.use_kl_loss"),
    ("algorithm.use_pf_ppo", lambda v: not v, "PF-PPO reweighting is not implemented locally"),
    ("algorithm.rollout_correction.rollout_is", lambda v: v is None,
     "rollout correction needs a separate rollout engine"),
    ("algorithm.rollout_correction.rollout_rs", lambda v: v is None,
     "rollout correction needs a separate rollout engine"),
    ("algorithm.rollout_correction.bypass_mode", lambda v: not v,
     "rollout correction needs a separate rollout engine"),
    ("actor_rollout_ref.model.lora_rank", lambda v: v == 0, "LoRA is not supported locally"),
    ("actor_rollout_ref.model.lora_adapter_path", lambda v: not v,
     "LoRA is not supported locally"),
    ("actor_rollout_ref.model.override_config", lambda v: not v,
     "model config overrides are not applied locally; edit the model's config.json"),
    ("actor_rollout_ref.model.external_lib", lambda v: not v,
     "external model libraries are not loaded locally"),
    ("actor_rollout_ref.actor.optim.optimizer", lambda v: str(v).lower() == "adamw",
     "the local engine uses torch AdamW"),
    ("actor_rollout_ref.actor.optim.override_optimizer_config", lambda v: not v,
     "optimizer overrides are not applied locally"),
    ("actor_rollout_ref.actor.policy_loss.loss_mode", lambda v: v != "bypass_mode",
     "bypass mode needs rollout log-probs from a separate rollout engine"),
    ("actor_rollout_ref.actor.calculate_sum_pi_squared", lambda v: not v,
     "sum of squared probabilities is not computed locally"),
    ("actor_rollout_ref.rollout.ignore_eos", lambda v: not v, "ignore_eos is not supported"),
    ("actor_rollout_ref.rollout.multi_turn.enable", lambda v: not v,
     "multi-turn rollouts are not supported locally"),
    ("actor_rollout_ref.rollout.over_sample_rate", lambda v: not v,
     "over-sampling is not supported locally"),
    ("actor_rollout_ref.rollout.val_kwargs.n", lambda v: v == 1,
     "the local engine validates with one response per prompt"),
    ("distillation.enabled", lambda v: not v, "distillation is not supported locally"),
    ("trainer.val_only", lambda v: not v, "use rewardsql's evaluation instead of val_only"),
    ("data.custom_cls.path", lambda v: not v, "custom dataset classes are not loaded locally"),
)

#: The estimator for process (dense) rewards when the config names none (the published pairing).
DENSE_ESTIMATOR = "grpo_process_avg_unique"

#: Advantage estimators of verl that need inputs the local engine does not produce.
UNSUPPORTED_ESTIMATORS = {
    "gae": "GAE needs a critic, which the local engine does not train",
    "remax": "ReMax needs greedy baseline rollouts",
    "gdpo": "GDPO needs per-dimension reward batches",
    "optimal_token_baseline": "needs sum_pi_squared from the actor",
    "tir_optimal_token_baseline": "needs sum_pi_squared from the actor",
}


def check_reward_layout(estimator: str, fn: Any, manager: str, manager_cls: Any,
                        manager_settings: Mapping[str, Any], *, kl_in_reward: bool = False,
                        source: str | None = None) -> None:
    """An estimator that reads its inputs back from the token rewards against the layout the
    reward manager writes them in.

    The estimator declares what it decodes as ``reward_layout`` (manager setting -> value, e.g.
    ``grpo_min_form``'s process_placement step_end and outcome_placement all_tokens); the
    manager says what its settings put in effect (:meth:`RewardManager.token_layout`, defaults
    resolved). A mismatch, a manager that declares no layout, or a KL penalty in the rewards
    (verl's ``algorithm.use_kl_in_reward``: it changes every token's reward) would train on
    misread rewards, so each is a ConfigError naming the key.
    """
    needed = getattr(fn, "reward_layout", None)
    if not needed:
        return
    wanted = ", ".join(f"{key}: {value}" for key, value in needed.items())
    why = f"{estimator} reads step scores back from token rewards laid out with {wanted}"
    if kl_in_reward:
        raise ConfigError(f"{why}, and a KL penalty in the rewards hides them; use "
                          "actor_rollout_ref.actor.use_kl_loss instead", source=source,
                          key="algorithm.use_kl_in_reward")
    layout: dict[str, Any] = {}
    if manager_cls is not None:
        try:
            layout = manager_cls.token_layout(manager_cls.parse_settings(manager_settings))
        except ConfigError:
            return  # settings the manager rejects: its own check names them
    for key, value in needed.items():
        if key not in layout:
            raise ConfigError(f"{why}, and reward manager {manager!r} declares no {key} "
                              "(sql_prm does)", source=source, key="reward.reward_manager.name")
        if layout[key] != value:
            raise ConfigError(f"{why}, and {manager} writes them with {key}: {layout[key]}",
                              source=source, key=f"{MANAGER_SETTINGS_KEY}.{key}")


@functools.lru_cache(maxsize=1)
def verl_reference_config() -> dict[str, Any]:
    """verl's flattened PPO trainer config (its key names and defaults), from the installed verl."""
    # The engine's first use of verl: fail here, with how to install it, not deep inside.
    require_verl("the local engine (its policy loss, KL and aggregation are verl's core_algos)")
    import verl

    path = Path(verl.__file__).parent / "trainer" / "config" / "_generated_ppo_trainer.yaml"
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def check_keys_known(config: Mapping[str, Any], reference: Mapping[str, Any], prefix: str = "",
                     *, source: str | None = None) -> None:
    """Every key of ``config`` must exist in verl's config, outside the free-form sections."""
    # model_engine: a selector of ppo_trainer.yaml that the flattened reference leaves out
    extra_top = {"rewardsql", "model_engine"} if not prefix else set()
    # a free section may be absent from verl's flattened reference (reward_kwargs is)
    free_here = {s[len(prefix):] for s in FREE_SECTIONS
                 if s.startswith(prefix) and "." not in s[len(prefix):]}
    check_known_keys(config, [*reference, *extra_top, *free_here], source=source, prefix=prefix)
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if dotted in FREE_SECTIONS or not isinstance(value, Mapping):
            continue
        ref = reference.get(key)
        if isinstance(ref, Mapping):
            check_keys_known(value, ref, f"{dotted}.", source=source)


def verl_key(keys: str | tuple[str, ...], default: Any, doc: str, *,
             choices: tuple[Any, ...] | None = None, positive: bool = False) -> Any:
    """A :class:`Settings` field read from verl's key(s) (the first one set wins)."""
    keys = (keys,) if isinstance(keys, str) else keys
    metadata = {"keys": keys, "default": default, "doc": doc, "choices": choices,
                "positive": positive}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


_A = "actor_rollout_ref.actor"
_R = "actor_rollout_ref.rollout"


@dataclass(frozen=True)
class Settings:
    """The local engine's settings: each field reads verl 0.9.1's key(s), with verl's default
    and meaning. The last fields are derived (the estimator's section, rewardsql's section)."""

    # -- data
    train_files: tuple[str, ...] = verl_key("data.train_files", (), "Training parquet files.")
    val_files: tuple[str, ...] = verl_key("data.val_files", (), "Validation parquet files.")
    train_batch_size: int = verl_key("data.train_batch_size", 1024, "Prompts per step.",
                                     positive=True)
    val_batch_size: int | None = verl_key("data.val_batch_size", None,
                                          "Prompts per validation generation batch.")
    max_prompt_length: int = verl_key("data.max_prompt_length", 512, "Prompt tokens at most.",
                                      positive=True)
    prompt_key: str = verl_key("data.prompt_key", "prompt", "The prompt column.")
    reward_fn_key: str = verl_key("data.reward_fn_key", "data_source", "The data-source column.")
    shuffle: bool = verl_key("data.shuffle", True, "Shuffle the training prompts each epoch.")
    seed: int = verl_key(("data.seed", f"{_A}.data_loader_seed"), 42, "Seed of the data order.")
    train_max_samples: int = verl_key("data.train_max_samples", -1,
                                      "Training prompts used at most (-1: all).")
    val_max_samples: int = verl_key("data.val_max_samples", -1,
                                    "Validation prompts used at most (-1: all).")
    filter_overlong_prompts: bool = verl_key("data.filter_overlong_prompts", False,
                                             "Drop prompts longer than max_prompt_length.")
    truncation: str = verl_key("data.truncation", "error", "What to do with a long prompt.",
                               choices=("error", "left", "right", "middle"))
    apply_chat_template_kwargs: dict[str, Any] = verl_key(
        "data.apply_chat_template_kwargs", {}, "Keyword arguments of the chat template.")
    # -- model
    model_path: str = verl_key("actor_rollout_ref.model.path", "", "The policy (HF directory).")
    tokenizer_path: str | None = verl_key("actor_rollout_ref.model.tokenizer_path", None,
                                          "Its tokenizer, when elsewhere.")
    custom_chat_template: str | None = verl_key("actor_rollout_ref.model.custom_chat_template",
                                                None, "A chat template replacing the model's.")
    trust_remote_code: bool = verl_key("actor_rollout_ref.model.trust_remote_code", False,
                                       "Let transformers run the model's own code.")
    # -- optimiser and loss
    lr: float = verl_key(f"{_A}.optim.lr", 1e-6, "Learning rate.", positive=True)
    weight_decay: float = verl_key(f"{_A}.optim.weight_decay", 0.01, "AdamW weight decay.")
    betas: tuple[float, ...] = verl_key(f"{_A}.optim.betas", (0.9, 0.999), "AdamW betas.")
    lr_warmup_steps: int = verl_key(f"{_A}.optim.lr_warmup_steps", -1,
                                    "Warm-up steps (-1: use lr_warmup_steps_ratio).")
    lr_warmup_steps_ratio: float = verl_key(f"{_A}.optim.lr_warmup_steps_ratio", 0.0,
                                            "Warm-up as a fraction of all steps.")
    lr_scheduler_type: str = verl_key(
        (f"{_A}.optim.lr_scheduler_type", f"{_A}.optim.warmup_style"), "constant",
        "Learning-rate schedule after warm-up.", choices=("constant", "cosine"))
    min_lr_ratio: float = verl_key(f"{_A}.optim.min_lr_ratio", 0.0, "Cosine floor.")
    num_cycles: float = verl_key(f"{_A}.optim.num_cycles", 0.5, "Cosine cycles.")
    grad_clip: float = verl_key((f"{_A}.optim.clip_grad", f"{_A}.grad_clip"), 1.0,
                                "Gradient norm clip.")
    ppo_mini_batch_size: int = verl_key(f"{_A}.ppo_mini_batch_size", 256,
                                        "Prompts per optimiser step.", positive=True)
    ppo_micro_batch_size: int | None = verl_key(
        (f"{_A}.ppo_micro_batch_size_per_gpu", f"{_A}.ppo_micro_batch_size"), None,
        "Sequences per forward pass (memory only).")
    ppo_epochs: int = verl_key(f"{_A}.ppo_epochs", 1, "Passes over each batch.", positive=True)
    actor_shuffle: bool = verl_key(f"{_A}.shuffle", False, "Shuffle mini-batches.")
    use_kl_loss: bool = verl_key(f"{_A}.use_kl_loss", False, "KL to the reference in the loss.")
    kl_loss_coef: float = verl_key(f"{_A}.kl_loss_coef", 0.001, "Its weight.")
    kl_loss_type: str = verl_key(f"{_A}.kl_loss_type", "low_var_kl", "The KL estimator.")
    entropy_coeff: float = verl_key(f"{_A}.entropy_coeff", 0.0, "Entropy bonus weight.")
    loss_agg_mode: str = verl_key(f"{_A}.loss_agg_mode", "token-mean",
                                  "How token losses are averaged.")
    actor_section: dict[str, Any] = verl_key(_A, {}, "The whole actor section (policy loss).")
    # -- rollout
    n: int = verl_key(f"{_R}.n", 1, "Responses per prompt (the group size).", positive=True)
    temperature: float = verl_key(f"{_R}.temperature", 1.0, "Sampling temperature.")
    top_p: float = verl_key(f"{_R}.top_p", 1.0, "Nucleus sampling.")
    top_k: int = verl_key(f"{_R}.top_k", -1, "Top-k sampling (-1: off).")
    do_sample: bool = verl_key(f"{_R}.do_sample", True, "Sample (else greedy).")
    response_length: int = verl_key((f"{_R}.response_length", "data.max_response_length"), 512,
                                    "Response tokens at most.", positive=True)
    rollout_seed: int = verl_key(f"{_R}.seed", 42, "Seed of sampling.")
    log_prob_micro_batch_size: int | None = verl_key(
        (f"{_R}.log_prob_micro_batch_size_per_gpu", f"{_R}.log_prob_micro_batch_size"), None,
        "Sequences per generation or log-prob pass (memory only).")
    val_temperature: float = verl_key(f"{_R}.val_kwargs.temperature", 0.0,
                                      "Validation temperature.")
    val_top_p: float = verl_key(f"{_R}.val_kwargs.top_p", 1.0, "Validation top_p.")
    val_top_k: int = verl_key(f"{_R}.val_kwargs.top_k", -1, "Validation top_k.")
    val_do_sample: bool = verl_key(f"{_R}.val_kwargs.do_sample", False,
                                   "Sample during validation.")
    # -- dynamic sampling
    filter_groups: bool = verl_key("algorithm.filter_groups.enable", False,
                                   "DAPO's dynamic sampling: keep groups whose rewards differ.")
    filter_groups_metric: str = verl_key("algorithm.filter_groups.metric", "reward",
                                         "What must differ within a kept group.")
    max_num_gen_batches: int = verl_key("algorithm.filter_groups.max_num_gen_batches", 0,
                                        "Generation batches per step at most (0: an epoch).")
    # -- reward
    reward_manager: str = verl_key("reward.reward_manager.name", "naive",
                                   "The reward manager (verl's default: naive).")
    reward_function_path: str | None = verl_key("reward.custom_reward_function.path", None,
                                                "A reward function's file or pkg:// module.")
    reward_function_name: str | None = verl_key("reward.custom_reward_function.name", None,
                                                "Its name there.")
    reward_kwargs: dict[str, Any] = verl_key("reward.custom_reward_function.reward_kwargs", {},
                                             "Keyword arguments every call gets.")
    # -- trainer
    total_epochs: int = verl_key("trainer.total_epochs", 30, "Epochs.", positive=True)
    total_training_steps: int | None = verl_key("trainer.total_training_steps", None,
                                                "Steps (overrides epochs).", positive=True)
    save_freq: int = verl_key("trainer.save_freq", -1, "Checkpoint every N steps (-1: at end).")
    test_freq: int = verl_key("trainer.test_freq", -1, "Validate every N steps (-1: at end).")
    resume_mode: str = verl_key("trainer.resume_mode", "auto", "Where to resume from.",
                                choices=("auto", "disable", "resume_path"))
    resume_from_path: str | None = verl_key("trainer.resume_from_path", None,
                                            "The checkpoint for resume_path.")
    val_before_train: bool = verl_key("trainer.val_before_train", True, "Validate at step 0.")
    max_ckpt_to_keep: int | None = verl_key("trainer.max_actor_ckpt_to_keep", None,
                                            "Checkpoints kept (null: all).")
    device: str = verl_key("trainer.device", "cuda", "cuda (when available) or cpu.")
    loggers: tuple[str, ...] = verl_key("trainer.logger", ("console",), "Metric loggers.")
    # -- derived: the estimator's section, and rewardsql's (rewardsql.section)
    adv_estimator: str = "grpo"
    algorithm: dict[str, Any] = field(default_factory=dict)
    reward_manager_settings: dict[str, Any] = field(default_factory=dict)
    registered_reward_function: str | None = None
    outcome_weight: float = 1.0
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


#: Keys whose verl default is 0 or "" for "not set": read as the field's default.
_UNSET_SPELLINGS = (0, "")


def _read_field(raw: Mapping[str, Any], f: Any, hint: Any, source: str | None) -> Any:
    keys = f.metadata["keys"]
    default = f.metadata["default"]
    value = next((v for v in (get_key(raw, k, None) for k in keys) if v is not None), None)
    if value is None or (default is None and value in _UNSET_SPELLINGS):
        return dict(default) if isinstance(default, dict) else default
    if isinstance(value, str) and typing.get_origin(hint) is tuple:
        value = [value]  # one path, one logger
    value = schema.coerce(value, hint, key=keys[0], source=source)
    if f.metadata["choices"] and value not in f.metadata["choices"]:
        choices = ", ".join(map(str, f.metadata["choices"]))
        raise ConfigError(f"expected one of {choices}, got {value!r}", source=source,
                          key=keys[0])
    if f.metadata["positive"] and value <= 0:
        raise ConfigError(f"must be positive, got {value}", source=source, key=keys[0])
    return value


def read_settings(config: Any, *, source: str | None = None) -> Settings:
    """Validate ``config`` (DictConfig or mapping, verl 0.9.1's PPO shape) into :class:`Settings`.

    Raises:
        ConfigError: naming the key at fault (unknown key, wrong type, unsupported setting).
    """
    raw = to_plain(config)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"the config must be a mapping, got {type(config).__name__}")
    check_keys_known(raw, verl_reference_config(), source=source)
    for dotted, ok, why in UNSUPPORTED:
        value = get_key(raw, dotted, None)
        if value is not None and not ok(value):
            raise ConfigError(f"{value!r} is not supported by the local engine: {why}",
                              source=source, key=dotted)
    for key in ("actor_rollout_ref.model.path", "data.train_files"):
        if not get_key(raw, key, None):
            raise ConfigError("required key is missing", source=source, key=key)
    if get_key(raw, "custom_reward_function.path", None):
        raise ConfigError("verl 0.9.1 ignores the top-level custom_reward_function; use "
                          "reward.custom_reward_function", source=source,
                          key="custom_reward_function.path")
    clip = [get_key(raw, f"{_A}.optim.clip_grad", None), get_key(raw, f"{_A}.grad_clip", None)]
    if None not in clip and float(clip[0]) != float(clip[1]):
        raise ConfigError(
            f"conflicts with {_A}.optim.clip_grad={clip[0]} (verl's engines read one or the "
            "other); set both to the same value", source=source, key=f"{_A}.grad_clip")

    hints = typing.get_type_hints(Settings)
    values = {f.name: _read_field(raw, f, hints[f.name], source)
              for f in fields(Settings) if "keys" in f.metadata}
    section = read_section(raw, source=source)
    algorithm = dict(get_key(raw, "algorithm", None) or {})
    # process rewards pair with the estimator the original RewardSQL used for them
    algorithm.setdefault("adv_estimator", DENSE_ESTIMATOR if section.reward_weights.process
                         else "grpo")
    adv_estimator = str(algorithm["adv_estimator"])
    if adv_estimator in UNSUPPORTED_ESTIMATORS:
        raise ConfigError(f"{adv_estimator!r} is not supported by the local engine: "
                          f"{UNSUPPORTED_ESTIMATORS[adv_estimator]}", source=source,
                          key="algorithm.adv_estimator")
    manager_settings, composes = _manager_settings(values, section, source)
    _check_estimator_layout(adv_estimator, values["reward_manager"], manager_settings, source)
    settings = Settings(
        **values,
        adv_estimator=adv_estimator,
        algorithm=algorithm,
        reward_manager_settings=manager_settings,
        registered_reward_function=section.reward_function,
        # a manager that composes the weights itself is not scaled again
        outcome_weight=1.0 if composes else section.reward_weights.outcome,
        raw=raw,
    )
    _check_values(settings, source)
    return settings


def _manager_settings(values: Mapping[str, Any], section: Any, source: str | None
                      ) -> tuple[dict[str, Any], bool]:
    """The reward manager's settings under the reward weights (its ``settings_for_weights``),
    and whether it composes the weights itself. A process weight needs such a manager; its
    ``device`` follows ``trainer.device=cpu`` unless set."""
    from rewardsql.api import get_reward_manager
    from rewardsql.errors import UnknownComponentError

    weights = section.reward_weights
    name = values["reward_manager"]
    cls: Any
    try:
        cls = get_reward_manager(name) if name != "naive" else None
    except UnknownComponentError:
        cls = None  # named again, with the error, when the engine loads it
    composes = bool(getattr(cls, "composes_weights", False))
    if weights.process != 0.0 and not composes:
        raise ConfigError(f"{weights.process:g} needs a reward manager that gives dense process "
                          f"rewards (e.g. sql_prm), and {name!r} does not", source=source,
                          key=PROCESS_WEIGHT_KEY)
    if cls is None:
        return dict(section.reward_manager), composes
    out = cls.settings_for_weights(section.reward_manager, weights)
    known = {f.name for f in fields(cls.Settings)} if cls.Settings is not None else set()
    if "device" in known and values["device"] == "cpu":
        out.setdefault("device", "cpu")
    return out, composes


def _check_estimator_layout(estimator: str, manager: str, manager_settings: Mapping[str, Any],
                            source: str | None) -> None:
    """:func:`check_reward_layout` for a rewardsql estimator (verl's declare no layout)."""
    from rewardsql.api import get_advantage_estimator, get_reward_manager
    from rewardsql.errors import UnknownComponentError

    try:
        fn = get_advantage_estimator(estimator)
    except UnknownComponentError:
        return  # one of verl's, or unknown: named when the engine resolves it
    try:
        cls = get_reward_manager(manager) if manager != "naive" else None
    except UnknownComponentError:
        cls = None
    check_reward_layout(estimator, fn, manager, cls, manager_settings, source=source)


def _check_values(s: Settings, source: str | None) -> None:
    actor = "actor_rollout_ref.actor"
    if s.ppo_mini_batch_size > s.train_batch_size:
        raise ConfigError(f"{s.ppo_mini_batch_size} is larger than data.train_batch_size "
                          f"({s.train_batch_size})", source=source,
                          key=f"{actor}.ppo_mini_batch_size")
    if s.train_batch_size % s.ppo_mini_batch_size:
        raise ConfigError(f"data.train_batch_size ({s.train_batch_size}) must be a multiple of it",
                          source=source, key=f"{actor}.ppo_mini_batch_size")
    if s.filter_groups and s.n < 2:
        raise ConfigError(f"algorithm.filter_groups keeps groups whose rewards differ; a group of "
                          f"{s.n} response cannot differ", source=source,
                          key="actor_rollout_ref.rollout.n")
    if s.temperature <= 0 and s.do_sample:
        raise ConfigError("must be positive when sampling", source=source,
                          key="actor_rollout_ref.rollout.temperature")
    if not 0 < s.top_p <= 1:
        raise ConfigError(f"must be in (0, 1], got {s.top_p}", source=source,
                          key="actor_rollout_ref.rollout.top_p")
    from verl.trainer.ppo import core_algos

    if s.kl_loss_type.rstrip("+") not in ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3"):
        raise ConfigError(f"unknown KL estimator {s.kl_loss_type!r}", source=source,
                          key=f"{actor}.kl_loss_type")
    loss_mode = (s.actor_section.get("policy_loss") or {}).get("loss_mode", "vanilla")
    if loss_mode not in core_algos.POLICY_LOSS_REGISTRY:
        raise ConfigError(f"unknown policy loss {loss_mode!r}; verl has "
                          f"{', '.join(sorted(core_algos.POLICY_LOSS_REGISTRY))}",
                          source=source, key=f"{actor}.policy_loss.loss_mode")
