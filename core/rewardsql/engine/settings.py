"""Reading a verl-shaped PPO config into the local engine's settings.

The local engine reads the keys of verl 0.9.1's PPO trainer config that it supports, with verl's
defaults and meanings. Keys verl does not know are an error (with the closest known key), and so
are settings the engine cannot honour in a way that would silently change results (a critic, LoRA,
KL in the reward, ...). Settings that only change speed or placement on a cluster (FSDP, vLLM,
micro-batch token budgets, profilers) are accepted and ignored.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rewardsql.config import ConfigError, check_known_keys, require_verl

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

#: Reward managers of verl that are not rewardsql plugins and need a running verl reward loop.
DEFAULT_REWARD_MANAGER = "sql_verifier"


def _unsupported(value: Any, ok: Callable[[Any], bool]) -> bool:
    return value is not None and not ok(value)


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

#: Advantage estimators of verl that need inputs the local engine does not produce.
UNSUPPORTED_ESTIMATORS = {
    "gae": "GAE needs a critic, which the local engine does not train",
    "remax": "ReMax needs greedy baseline rollouts",
    "gdpo": "GDPO needs per-dimension reward batches",
    "optimal_token_baseline": "needs sum_pi_squared from the actor",
    "tir_optimal_token_baseline": "needs sum_pi_squared from the actor",
}


@dataclass(frozen=True)
class Settings:
    """The local engine's settings, read from a verl-shaped config (verl's defaults)."""

    train_files: tuple[str, ...]
    val_files: tuple[str, ...]
    train_batch_size: int
    val_batch_size: int | None
    max_prompt_length: int
    prompt_key: str
    reward_fn_key: str
    shuffle: bool
    seed: int
    train_max_samples: int
    val_max_samples: int
    filter_overlong_prompts: bool
    truncation: str
    apply_chat_template_kwargs: dict[str, Any]

    model_path: str
    tokenizer_path: str | None
    custom_chat_template: str | None
    trust_remote_code: bool

    lr: float
    weight_decay: float
    betas: tuple[float, float]
    lr_warmup_steps: int
    lr_warmup_steps_ratio: float
    lr_scheduler_type: str
    min_lr_ratio: float
    num_cycles: float
    grad_clip: float
    ppo_mini_batch_size: int
    ppo_micro_batch_size: int | None
    ppo_epochs: int
    actor_shuffle: bool
    use_kl_loss: bool
    kl_loss_coef: float
    kl_loss_type: str
    entropy_coeff: float
    loss_agg_mode: str
    actor_section: dict[str, Any]

    n: int
    temperature: float
    top_p: float
    top_k: int
    do_sample: bool
    response_length: int
    rollout_seed: int
    log_prob_micro_batch_size: int | None
    val_temperature: float
    val_top_p: float
    val_top_k: int
    val_do_sample: bool

    adv_estimator: str
    algorithm: dict[str, Any]
    filter_groups: bool
    filter_groups_metric: str
    max_num_gen_batches: int

    reward_manager: str
    reward_manager_settings: dict[str, Any]
    reward_function_path: str | None
    reward_function_name: str | None
    reward_kwargs: dict[str, Any]
    registered_reward_function: str | None
    outcome_weight: float

    total_epochs: int
    total_training_steps: int | None
    save_freq: int
    test_freq: int
    resume_mode: str
    resume_from_path: str | None
    val_before_train: bool
    max_ckpt_to_keep: int | None
    device: str
    loggers: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


def to_plain(config: Any) -> dict[str, Any]:
    """A plain dict from a DictConfig (interpolations resolved) or a mapping."""
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf comes with verl
        DictConfig = ()  # type: ignore[assignment]
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    if not isinstance(config, Mapping):
        raise ConfigError(f"the config must be a mapping, got {type(config).__name__}")
    return _plain(config)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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


def _get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def _files(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"expected a path or a list of paths, got {value!r}", key=key)


def _typed(config: Mapping[str, Any], dotted: str, default: Any, kind: type) -> Any:
    value = _get(config, dotted, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"expected {kind.__name__}, got {value!r}", key=dotted)
    return value


def read_settings(config: Any, *, source: str | None = None) -> Settings:
    """Validate ``config`` (DictConfig or mapping, verl 0.9.1's PPO shape) into :class:`Settings`.

    Raises:
        ConfigError: naming the key at fault (unknown key, wrong type, unsupported setting).
    """
    raw = to_plain(config)
    check_keys_known(raw, verl_reference_config(), source=source)
    for dotted, ok, why in UNSUPPORTED:
        value = _get(raw, dotted)
        if _unsupported(value, ok):
            raise ConfigError(f"{value!r} is not supported by the local engine: {why}",
                              source=source, key=dotted)

    model_path = _get(raw, "actor_rollout_ref.model.path")
    if not model_path:
        raise ConfigError("required key is missing", source=source,
                          key="actor_rollout_ref.model.path")
    train_files = _files(_get(raw, "data.train_files"), "data.train_files")
    if not train_files:
        raise ConfigError("required key is missing", source=source, key="data.train_files")

    algorithm = dict(_get(raw, "algorithm", {}))
    algorithm.setdefault("adv_estimator", "grpo")
    adv_estimator = str(algorithm["adv_estimator"])
    if adv_estimator in UNSUPPORTED_ESTIMATORS:
        raise ConfigError(f"{adv_estimator!r} is not supported by the local engine: "
                          f"{UNSUPPORTED_ESTIMATORS[adv_estimator]}", source=source,
                          key="algorithm.adv_estimator")

    actor = "actor_rollout_ref.actor"
    rollout = "actor_rollout_ref.rollout"
    clip_grad = _get(raw, f"{actor}.optim.clip_grad")
    grad_clip = _get(raw, f"{actor}.grad_clip")
    if clip_grad is not None and grad_clip is not None and float(clip_grad) != float(grad_clip):
        raise ConfigError(
            f"conflicts with {actor}.optim.clip_grad={clip_grad} (verl's engines read one or the "
            "other); set both to the same value", source=source, key=f"{actor}.grad_clip")
    clip = float(next((v for v in (clip_grad, grad_clip) if v is not None), 1.0))

    scheduler = _get(raw, f"{actor}.optim.lr_scheduler_type") or _get(
        raw, f"{actor}.optim.warmup_style") or "constant"
    if scheduler not in ("constant", "cosine"):
        raise ConfigError(f"expected 'constant' or 'cosine', got {scheduler!r}", source=source,
                          key=f"{actor}.optim.lr_scheduler_type")
    loss_agg_mode = _get(raw, f"{actor}.loss_agg_mode", "token-mean")
    kl_loss_type = _get(raw, f"{actor}.kl_loss_type", "low_var_kl")
    truncation = _get(raw, "data.truncation", "error")
    if truncation not in ("error", "left", "right", "middle"):
        raise ConfigError(f"expected error, left, right or middle, got {truncation!r}",
                          source=source, key="data.truncation")
    resume_mode = _get(raw, "trainer.resume_mode", "auto")
    if resume_mode not in ("auto", "disable", "resume_path"):
        raise ConfigError(f"expected auto, disable or resume_path, got {resume_mode!r}",
                          source=source, key="trainer.resume_mode")
    resume_from_path = _get(raw, "trainer.resume_from_path")
    if resume_mode == "resume_path" and not resume_from_path:
        raise ConfigError("resume_mode 'resume_path' needs trainer.resume_from_path",
                          source=source, key="trainer.resume_from_path")

    reward_manager = _get(raw, "reward.reward_manager.name", DEFAULT_REWARD_MANAGER)
    fn_path = _get(raw, "reward.custom_reward_function.path")
    weights = dict(_get(raw, "rewardsql.reward_weights", {}))
    if float(weights.get("process", 0.0)) != 0.0:
        raise ConfigError(f"{weights['process']!r} is not supported by the local engine: it has "
                          "no process reward model; use the verl engine", source=source,
                          key="rewardsql.reward_weights.process")
    if _get(raw, "custom_reward_function.path"):
        raise ConfigError("verl 0.9.1 ignores the top-level custom_reward_function; use "
                          "reward.custom_reward_function", source=source,
                          key="custom_reward_function.path")
    micro = _get(raw, f"{actor}.ppo_micro_batch_size_per_gpu") or _get(
        raw, f"{actor}.ppo_micro_batch_size")
    log_prob_micro = _get(raw, f"{rollout}.log_prob_micro_batch_size_per_gpu") or _get(
        raw, f"{rollout}.log_prob_micro_batch_size")
    data_seed = _get(raw, "data.seed")
    loggers = _get(raw, "trainer.logger", ["console"])
    if isinstance(loggers, str):
        loggers = [loggers]
    max_keep = _get(raw, "trainer.max_actor_ckpt_to_keep")

    settings = Settings(
        train_files=train_files,
        val_files=_files(_get(raw, "data.val_files"), "data.val_files"),
        train_batch_size=_typed(raw, "data.train_batch_size", 1024, int),
        val_batch_size=_get(raw, "data.val_batch_size"),
        max_prompt_length=_typed(raw, "data.max_prompt_length", 512, int),
        prompt_key=_get(raw, "data.prompt_key", "prompt"),
        reward_fn_key=_get(raw, "data.reward_fn_key", "data_source"),
        shuffle=_typed(raw, "data.shuffle", True, bool),
        seed=int(data_seed if data_seed is not None
                 else _get(raw, f"{actor}.data_loader_seed", 42)),
        train_max_samples=_typed(raw, "data.train_max_samples", -1, int),
        val_max_samples=_typed(raw, "data.val_max_samples", -1, int),
        filter_overlong_prompts=_typed(raw, "data.filter_overlong_prompts", False, bool),
        truncation=truncation,
        apply_chat_template_kwargs=dict(_get(raw, "data.apply_chat_template_kwargs", {})),
        model_path=str(model_path),
        tokenizer_path=_get(raw, "actor_rollout_ref.model.tokenizer_path"),
        custom_chat_template=_get(raw, "actor_rollout_ref.model.custom_chat_template"),
        trust_remote_code=_typed(raw, "actor_rollout_ref.model.trust_remote_code", False, bool),
        lr=_typed(raw, f"{actor}.optim.lr", 1e-6, float),
        weight_decay=_typed(raw, f"{actor}.optim.weight_decay", 0.01, float),
        betas=tuple(float(b) for b in _get(raw, f"{actor}.optim.betas", (0.9, 0.999))),  # type: ignore[arg-type]
        lr_warmup_steps=_typed(raw, f"{actor}.optim.lr_warmup_steps", -1, int),
        lr_warmup_steps_ratio=_typed(raw, f"{actor}.optim.lr_warmup_steps_ratio", 0.0, float),
        lr_scheduler_type=scheduler,
        min_lr_ratio=_typed(raw, f"{actor}.optim.min_lr_ratio", 0.0, float),
        num_cycles=_typed(raw, f"{actor}.optim.num_cycles", 0.5, float),
        grad_clip=clip,
        ppo_mini_batch_size=_typed(raw, f"{actor}.ppo_mini_batch_size", 256, int),
        ppo_micro_batch_size=int(micro) if micro else None,
        ppo_epochs=_typed(raw, f"{actor}.ppo_epochs", 1, int),
        actor_shuffle=_typed(raw, f"{actor}.shuffle", False, bool),
        use_kl_loss=_typed(raw, f"{actor}.use_kl_loss", False, bool),
        kl_loss_coef=_typed(raw, f"{actor}.kl_loss_coef", 0.001, float),
        kl_loss_type=kl_loss_type,
        entropy_coeff=_typed(raw, f"{actor}.entropy_coeff", 0.0, float),
        loss_agg_mode=loss_agg_mode,
        actor_section=dict(_get(raw, actor, {})),
        n=_typed(raw, f"{rollout}.n", 1, int),
        temperature=_typed(raw, f"{rollout}.temperature", 1.0, float),
        top_p=_typed(raw, f"{rollout}.top_p", 1.0, float),
        top_k=_typed(raw, f"{rollout}.top_k", -1, int),
        do_sample=_typed(raw, f"{rollout}.do_sample", True, bool),
        response_length=_typed(raw, f"{rollout}.response_length",
                               _get(raw, "data.max_response_length", 512), int),
        rollout_seed=_typed(raw, f"{rollout}.seed", 42, int),
        log_prob_micro_batch_size=int(log_prob_micro) if log_prob_micro else None,
        val_temperature=_typed(raw, f"{rollout}.val_kwargs.temperature", 0.0, float),
        val_top_p=_typed(raw, f"{rollout}.val_kwargs.top_p", 1.0, float),
        val_top_k=_typed(raw, f"{rollout}.val_kwargs.top_k", -1, int),
        val_do_sample=_typed(raw, f"{rollout}.val_kwargs.do_sample", False, bool),
        adv_estimator=adv_estimator,
        algorithm=algorithm,
        filter_groups=_typed(raw, "algorithm.filter_groups.enable", False, bool),
        filter_groups_metric=str(_get(raw, "algorithm.filter_groups.metric", "reward")),
        max_num_gen_batches=_typed(raw, "algorithm.filter_groups.max_num_gen_batches", 0, int),
        reward_manager=str(reward_manager),
        reward_manager_settings=dict(_get(raw, "rewardsql.reward_manager", {})),
        reward_function_path=fn_path,
        reward_function_name=_get(raw, "reward.custom_reward_function.name"),
        reward_kwargs=dict(_get(raw, "reward.custom_reward_function.reward_kwargs", {})),
        registered_reward_function=_get(raw, "rewardsql.reward_function"),
        outcome_weight=float(weights.get("outcome", 1.0)),
        total_epochs=_typed(raw, "trainer.total_epochs", 30, int),
        total_training_steps=_get(raw, "trainer.total_training_steps"),
        save_freq=_typed(raw, "trainer.save_freq", -1, int),
        test_freq=_typed(raw, "trainer.test_freq", -1, int),
        resume_mode=resume_mode,
        resume_from_path=resume_from_path,
        val_before_train=_typed(raw, "trainer.val_before_train", True, bool),
        max_ckpt_to_keep=int(max_keep) if max_keep else None,
        device=str(_get(raw, "trainer.device", "cuda")),
        loggers=tuple(str(x) for x in loggers),
        raw=raw,
    )
    _check_values(settings, source)
    return settings


def _check_values(s: Settings, source: str | None) -> None:
    actor = "actor_rollout_ref.actor"
    positive = {
        "data.train_batch_size": s.train_batch_size,
        "data.max_prompt_length": s.max_prompt_length,
        "actor_rollout_ref.rollout.n": s.n,
        "actor_rollout_ref.rollout.response_length": s.response_length,
        f"{actor}.ppo_mini_batch_size": s.ppo_mini_batch_size,
        f"{actor}.ppo_epochs": s.ppo_epochs,
        "trainer.total_epochs": s.total_epochs,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"must be positive, got {value}", source=source, key=key)
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
    if s.lr <= 0:
        raise ConfigError(f"must be positive, got {s.lr}", source=source, key=f"{actor}.optim.lr")
    if s.total_training_steps is not None and (
        not isinstance(s.total_training_steps, int) or s.total_training_steps <= 0
    ):
        raise ConfigError(f"must be a positive integer, got {s.total_training_steps!r}",
                          source=source, key="trainer.total_training_steps")
    from verl.trainer.ppo import core_algos

    if s.kl_loss_type.rstrip("+") not in ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3"):
        raise ConfigError(f"unknown KL estimator {s.kl_loss_type!r}", source=source,
                          key=f"{actor}.kl_loss_type")
    loss_mode = (s.actor_section.get("policy_loss") or {}).get("loss_mode", "vanilla")
    if loss_mode not in core_algos.POLICY_LOSS_REGISTRY:
        raise ConfigError(f"unknown policy loss {loss_mode!r}; verl has "
                          f"{', '.join(sorted(core_algos.POLICY_LOSS_REGISTRY))}",
                          source=source, key=f"{actor}.policy_loss.loss_mode")
