"""From command-line options to one checked verl config: :func:`build_plan`.

Order of precedence, lowest first: verl 0.9.1's defaults, the user's YAML (translated), the
command's options (``--data-path``, ``--algorithm``, ``--core-function``, ``--epochs``,
``--output-dir``), then ``KEY=VALUE`` overrides. The estimator is the first of: ``--core-function``,
the config's ``algorithm.core_function`` (the original RewardSQL's key), ``--algorithm``, the
config's ``algorithm.adv_estimator``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardsql.config import get_key, set_key
from rewardsql.errors import ConfigError
from rewardsql.section import (
    MANAGER_SETTINGS_KEY,
    OUTCOME_WEIGHT_KEY,
    PROCESS_WEIGHT_KEY,
    RewardSQLSection,
    read_section,
)
from rewardsql.training.launcher import compose, resolve
from rewardsql.training.launcher.translate import translate_old_mini_batches
from rewardsql.training.local.settings import DENSE_ESTIMATOR, check_reward_layout

logger = logging.getLogger(__name__)

ENGINES = ("verl", "local")


@dataclass
class TrainOptions:
    """What ``rewardsql train`` was asked to do."""

    output_dir: Path
    config: Path | None = None
    algorithm: str | None = None
    data_path: Path | None = None
    core_algos: Sequence[str] = ()
    core_function: str | None = None
    epochs: int | None = None
    engine: str = "verl"
    overrides: Sequence[str] = ()
    #: trainer.device; "cpu" with engine verl runs verl on the CPU (training/verl_cpu.py)
    device: str | None = None
    #: with engine verl: export the last checkpoint to OUT/hf_model when training ends
    export: bool = True


@dataclass
class TrainPlan:
    """A composed, checked config and what was resolved on the way."""

    config: Any  # omegaconf.DictConfig
    options: TrainOptions
    estimator: resolve.Resolved
    reward_manager: resolve.Resolved
    reward_function: resolve.Resolved | None
    core_algos: list[resolve.CoreAlgos] = field(default_factory=list)
    env_vars: dict[str, str] = field(default_factory=dict)
    data: dict[str, list[resolve.DataFile]] = field(default_factory=dict)
    #: Renamed keys and values, and derived settings, for the summary.
    notes: list[str] = field(default_factory=list)
    #: Obsolete keys dropped, and other things a person should look at.
    warnings: list[str] = field(default_factory=list)


def _select(config: Any, key: str, default: Any = None) -> Any:
    return get_key(config, key, default)


def build_plan(options: TrainOptions) -> TrainPlan:
    """Compose and check the config for ``options``; raise :class:`ConfigError` on any fault.

    Nothing is started: no Ray, no GPU. ``--core-algos`` modules are imported in this process.
    """
    if options.engine not in ENGINES:
        raise ConfigError(f"expected one of {', '.join(ENGINES)}, got {options.engine!r}",
                          source="--engine")
    if options.epochs is not None and options.epochs < 1:
        raise ConfigError(f"must be at least 1, got {options.epochs}", source="--epochs")
    # First, so their @register_advantage_estimator functions are known below.
    core_algos = [resolve.import_core_algos(spec) for spec in options.core_algos]
    notes: list[str] = []
    warnings: list[str] = []
    explicit: set[str] = set()  # keys the user set, in the file or on the command line

    config = compose.verl_defaults()
    config_core_function = None
    old_shape = False  # the file has keys of older verl or of the original RewardSQL
    if options.config is not None:
        user = compose.load_user_config(options.config)
        config_core_function = (user.get("algorithm") or {}).get("core_function")
        translation = compose.merge_user_config(config, user, str(options.config))
        notes += translation.notes()
        warnings += [f"{options.config}: {w}" for w in translation.warnings()]
        explicit |= _leaf_keys(translation.config)
        old_shape = bool(translation.changes)
    _apply_options(config, options, config_core_function, explicit, notes, warnings)
    verl_cpu = options.engine == "verl" and options.device == "cpu"
    if options.device is not None:
        set_key(config, "trainer.device", options.device)
    if verl_cpu:  # before the overrides: KEY=VALUE still wins
        from rewardsql.training.verl_cpu import CPU_SETTINGS

        for key, value in CPU_SETTINGS.items():
            set_key(config, key, value)
        notes.append("--device cpu: verl's settings for the CPU (rewardsql.training.verl_cpu)")
    overridden = compose.apply_overrides(config, options.overrides)
    notes += overridden.notes()
    warnings += [f"command line: {w}" for w in overridden.warnings()]
    on_command_line = {new for _, new, _ in overridden.changes if new} | {
        text.lstrip("+~").split("=", 1)[0] for text in options.overrides}
    explicit |= on_command_line
    if old_shape:  # older verl's behaviour, on the final batch sizes
        notes += translate_old_mini_batches(config, keep=on_command_line)

    # -- resolve what the config names
    named = bool(options.core_function or config_core_function or options.algorithm
                 or "algorithm.adv_estimator" in explicit)
    if not named and read_section(config).reward_weights.process > 0:
        # process rewards pair with the estimator the original RewardSQL used for them
        set_key(config, "algorithm.adv_estimator", DENSE_ESTIMATOR)
        notes.append(f"algorithm.adv_estimator={DENSE_ESTIMATOR}: the estimator for process "
                     f"rewards ({PROCESS_WEIGHT_KEY} > 0)")
        named = True
    if not named:
        raise ConfigError(
            "no advantage estimator: pass --algorithm (grpo, rloo, ppo, ...) or --core_function "
            "NAME with --core_algos MODULE, or set algorithm.adv_estimator in the config",
            key="algorithm.adv_estimator")
    core_functions = _plain_core_function(config, core_algos, notes)
    chosen = resolve.resolve_estimator(str(_select(config, "algorithm.adv_estimator")))
    set_key(config, "algorithm.adv_estimator", chosen.name)
    if chosen.name == "gae" and "critic.model.path" not in explicit:
        raise ConfigError(
            "PPO (estimator gae) trains a critic, and verl's default critic model path does not "
            "exist: set critic.model.path (e.g. to the policy's actor_rollout_ref.model.path), "
            "or use --algorithm grpo, which needs no critic", key="critic.model.path")
    section = read_section(config)
    if section.reward_function:
        path, name = resolve.reward_function_target(section.reward_function)
        set_key(config, "reward.custom_reward_function.path", path)
        set_key(config, "reward.custom_reward_function.name", name)
    reward_function = resolve.resolve_reward_function(
        _select(config, "reward.custom_reward_function.path"),
        _select(config, "reward.custom_reward_function.name"))
    manager = resolve.resolve_reward_manager(
        str(_select(config, "reward.reward_manager.source")),
        str(_select(config, "reward.reward_manager.name")),
        _select(config, "reward.reward_manager.module.path"))
    _derive_reward_settings(config, section, manager, explicit, notes, warnings)
    resolve.check_manager_settings(manager, read_section(config).reward_manager)
    _derive_process_reward(config, manager, options.engine, chosen.name, explicit, notes,
                           warnings)
    check_reward_layout(chosen.name, chosen.obj, manager.name,
                        manager.obj if resolve.is_rewardsql_manager(manager) else None,
                        read_section(config).reward_manager,
                        kl_in_reward=bool(_select(config, "algorithm.use_kl_in_reward")))

    env_vars = resolve.runtime_env_vars(core_algos)
    if core_functions:  # verl's Ray processes register the plain function at `import verl`
        from rewardsql.verl_bridge import CORE_FUNCTIONS_ENV

        env_vars[CORE_FUNCTIONS_ENV] = core_functions
    if verl_cpu:
        from rewardsql.training.verl_cpu import CPU_ENV

        env_vars.update(CPU_ENV)
    if options.engine == "verl":
        env_vars.update(tensorboard_dir(config))
    for name, value in env_vars.items():
        set_key(config, f"ray_kwargs.ray_init.runtime_env.env_vars.{name}", value)
    if verl_cpu:  # after the overrides: only what is still unset
        notes += [f"--device cpu: {note}" for note in fill_cpu_micro_batches(config)]
    _check_complete(config, options.engine)
    _check_export(config, options, warnings)
    plan = TrainPlan(config, options, chosen, manager, reward_function, core_algos, env_vars,
                     notes=notes, warnings=warnings)
    model = str(_select(config, "actor_rollout_ref.model.path"))
    if model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().exists():
        plan.warnings.append(f"actor_rollout_ref.model.path: {model} does not exist on this "
                             "machine (fine if it exists where training runs)")
    plan.data = check_data_files(config)
    if reward_function is not None:
        _bind_reward_function(plan, reward_function)
    rows = sum(f.rows for f in plan.data["data.train_files"])
    batch = _select(config, "data.train_batch_size")
    if isinstance(batch, int) and rows < batch:
        plan.warnings.append(
            f"data.train_files: {rows} rows, fewer than data.train_batch_size={batch}: verl "
            "drops the incomplete batch, so no training step would run")
    return plan


#: Where verl's ``tensorboard`` logger writes, inside the run's output directory.
TENSORBOARD_SUBDIR = "tensorboard"


def tensorboard_dir(config: Any) -> dict[str, str]:
    """``TENSORBOARD_DIR`` for verl's Ray processes: the run's ``OUT/tensorboard``.

    verl's default is ``tensorboard_log/PROJECT/EXPERIMENT`` under its worker's working
    directory, wherever the launch happened, so runs of one config mix there. Empty when the
    config does not log to tensorboard, or when the launching shell or the config's Ray runtime
    env already names the directory (theirs wins).
    """
    loggers = _select(config, "trainer.logger") or []
    if isinstance(loggers, str):
        loggers = [loggers]
    named = _select(config, "ray_kwargs.ray_init.runtime_env.env_vars") or {}
    if "tensorboard" not in loggers or "TENSORBOARD_DIR" in {*os.environ, *named}:
        return {}
    output = Path(str(_select(config, "trainer.default_local_dir")))
    return {"TENSORBOARD_DIR": str(output / TENSORBOARD_SUBDIR)}


#: The micro-batch sizes verl requires (unless dynamic batch sizes are on): the per-device
#: key, and the deprecated global one that also counts as set.
_ACTOR_MICRO = "actor_rollout_ref.actor.ppo_micro_batch_size"
_REF_MICRO = "actor_rollout_ref.ref.log_prob_micro_batch_size"
_ROLLOUT_MICRO = "actor_rollout_ref.rollout.log_prob_micro_batch_size"
_CRITIC_MICRO = "critic.ppo_micro_batch_size"


def fill_cpu_micro_batches(config: Any) -> list[str]:
    """Fill the micro-batch sizes verl requires and ``config`` leaves unset, for verl on the CPU;
    return one note per size filled.

    On GPUs the size is the user's (it depends on memory per GPU), so verl asks for it. On the
    CPU there is one device and the runs are small, so it follows from what the config says: an
    update (actor, critic) takes its whole mini-batch, ``ppo_mini_batch_size`` prompts x
    ``rollout.n`` responses, in one pass; a log-prob forward (ref, rollout) takes the size of the
    other log-prob forward of the same model when the config sets that one, else the actor's.
    """
    notes: list[str] = []
    devices = max(1, int(_select(config, "trainer.n_gpus_per_node") or 1)
                  * int(_select(config, "trainer.nnodes") or 1))
    n = int(_select(config, "actor_rollout_ref.rollout.n") or 1)

    def per_device(key: str) -> int | None:
        """The per-device size at ``key`` (``..._per_gpu``), or the global one split."""
        size = _select(config, f"{key}_per_gpu")
        if size is None and _select(config, key) is not None:
            size = max(1, int(_select(config, key)) // devices)
        return None if size is None else int(size)

    def fill(key: str, size: int, why: str) -> None:
        set_key(config, f"{key}_per_gpu", size)
        notes.append(f"{key}_per_gpu={size} ({why})")

    def whole_mini_batch(prefix: str) -> None:
        mini = int(_select(config, f"{prefix}.ppo_mini_batch_size"))
        fill(f"{prefix}.ppo_micro_batch_size", max(1, mini * n // devices),
             f"the whole mini-batch in one pass: {prefix}.ppo_mini_batch_size {mini} x "
             f"actor_rollout_ref.rollout.n {n}")

    if not _select(config, "actor_rollout_ref.actor.use_dynamic_bsz"):
        if per_device(_ACTOR_MICRO) is None:
            whole_mini_batch("actor_rollout_ref.actor")
        actor = per_device(_ACTOR_MICRO)
        given = {key: per_device(key) for key in (_REF_MICRO, _ROLLOUT_MICRO)}  # as set
        for key, other in ((_REF_MICRO, _ROLLOUT_MICRO), (_ROLLOUT_MICRO, _REF_MICRO)):
            if given[key] is not None:
                continue
            if given[other] is not None:
                fill(key, given[other], f"as {other}_per_gpu")
            elif actor is not None:
                fill(key, actor, f"as {_ACTOR_MICRO}_per_gpu")
    # verl's need_critic: critic.enable when set, else the estimator gae
    enabled = _select(config, "critic.enable")
    uses_critic = bool(enabled) if enabled is not None else (
        _select(config, "algorithm.adv_estimator") == "gae")
    if uses_critic and not _select(config, "critic.use_dynamic_bsz") \
            and per_device(_CRITIC_MICRO) is None:
        whole_mini_batch("critic")
    return notes


def _plain_core_function(config: Any, core_algos: list[resolve.CoreAlgos],
                         notes: list[str]) -> str:
    """``module:name`` when the estimator is a plain function of a ``--core-algos`` module (not
    registered anywhere), registered into verl's registry here; else ``""``."""
    name = str(_select(config, "algorithm.adv_estimator"))
    if not core_algos or name in resolve.verl_builtin_estimators():
        return ""
    try:
        resolve.resolve_estimator(name)
        return ""  # a registered estimator (decorator, plugin, verl) goes first
    except ConfigError:
        found = resolve.find_core_function(name, core_algos)
        if found is None:
            raise
    from rewardsql.verl_bridge import register_core_function

    try:
        register_core_function(found.module, name)
    except Exception as exc:  # verl refuses a name it has for another function
        raise ConfigError(f"cannot register {found.module}.{name} as an estimator: "
                          f"{type(exc).__name__}: {exc}", source="--core-function") from None
    notes.append(f"algorithm.adv_estimator={name}: the plain function {name} of --core-algos "
                 f"{found.spec}, registered in verl in every process")
    return f"{found.module}:{name}"


def _bind_reward_function(plan: TrainPlan, function: resolve.Resolved) -> None:
    """Check that every parameter of the reward function is bound (by verl's call, the data's
    extra_info, or reward_kwargs); one that needs binding by name is called by verl through
    :func:`rewardsql.signatures.compute_score`."""
    from omegaconf import OmegaConf

    from rewardsql.signatures import REWARD_KWARGS_KEY, dispatch_kwargs, needs_binding

    config = plan.config
    node = _select(config, REWARD_KWARGS_KEY) or {}
    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    kwargs: dict[str, Any] = {str(k): v for k, v in plain.items()} if isinstance(
        plain, dict) else {}
    keys = sorted({k for f in plan.data["data.train_files"] for k in f.extra_info_keys})
    resolve.check_reward_function_binding(function, keys, kwargs)
    if not needs_binding(function.obj, kwargs):
        return
    path = str(_select(config, "reward.custom_reward_function.path"))
    name = str(_select(config, "reward.custom_reward_function.name"))
    entry, wrapped = dispatch_kwargs(path, name, kwargs, label=function.provider)
    set_key(config, "reward.custom_reward_function.path", "pkg://rewardsql.signatures")
    set_key(config, "reward.custom_reward_function.name", entry)
    set_key(config, REWARD_KWARGS_KEY, wrapped)
    plan.notes.append(f"reward.custom_reward_function: {path}:{name} takes its parameters by name; "
                      f"verl calls it through rewardsql.signatures.{entry}")


def _apply_options(config: Any, options: TrainOptions, config_core_function: str | None,
                   explicit: set[str], notes: list[str], warnings: list[str]) -> None:
    """``--data-path``, the estimator choice, ``--epochs`` and ``--output-dir``."""
    if options.data_path is not None:
        train, val, note = resolve.files_for_data_path(options.data_path)
        set_key(config, "data.train_files", train)
        set_key(config, "data.val_files", val)
        if note:
            warnings.append(f"--data-path: {note}")
    if options.algorithm:
        suited = resolve.estimator_for_algorithm(options.algorithm)  # refuses prime, with why
        if not (options.core_function or config_core_function):
            notes.append(f"algorithm.adv_estimator={suited}: the estimator suited to "
                         f"--algorithm {options.algorithm}")
    estimator = options.core_function or config_core_function or options.algorithm
    if options.core_function and config_core_function:
        notes.append(f"--core-function {options.core_function} replaces the config's "
                     f"algorithm.core_function {config_core_function}")
    elif config_core_function and options.algorithm:
        notes.append(f"the config's algorithm.core_function {config_core_function} replaces "
                     f"--algorithm {options.algorithm}'s own estimator")
    if estimator:
        set_key(config, "algorithm.adv_estimator", estimator)
    if options.epochs is not None:
        set_key(config, "trainer.total_epochs", options.epochs)
    output = str(options.output_dir.expanduser().resolve())
    configured = _select(config, "trainer.default_local_dir")
    if "trainer.default_local_dir" in explicit and configured != output:
        notes.append(f"trainer.default_local_dir {configured} -> {output} (--output-dir)")
    set_key(config, "trainer.default_local_dir", output)


def _derive_reward_settings(config: Any, section: RewardSQLSection, manager: resolve.Resolved,
                            explicit: set[str], notes: list[str], warnings: list[str]) -> None:
    """``trainer.use_v1`` from the manager's needs; an outcome weight only where the bridge's
    adapter applies it; a process weight only where something computes it."""
    if resolve.needs_ground_truth(manager):
        if _select(config, "trainer.use_v1") and "trainer.use_v1" in explicit:
            raise ConfigError(
                f"reward manager {manager.name!r} needs the ground truth, which verl's v1 "
                "trainer does not send it; remove trainer.use_v1=true", key="trainer.use_v1")
        set_key(config, "trainer.use_v1", False)
        notes.append(f"trainer.use_v1=false: reward manager {manager.name} needs ground truth")
    weights = section.reward_weights
    if resolve.is_rewardsql_manager(manager):
        derived = manager.obj.settings_for_weights(section.reward_manager, weights)
        for key in sorted(set(derived) - set(section.reward_manager)):
            set_key(config, f"{MANAGER_SETTINGS_KEY}.{key}", derived[key])
            notes.append(f"{MANAGER_SETTINGS_KEY}.{key}={derived[key]} (reward weights: process "
                         f"{weights.process:g}, outcome {weights.outcome:g})")
    if weights.outcome != 1.0 and not resolve.is_rewardsql_manager(manager):
        # verl's own managers never see rewardsql's weights: refuse rather than train unscaled
        raise ConfigError(
            f"{weights.outcome:g} is applied to the scores of rewardsql's reward managers, and "
            f"{manager.name!r} ({manager.provider}) is not one: scale the score in its reward "
            "function instead, or use a rewardsql manager", key=OUTCOME_WEIGHT_KEY)


def _derive_process_reward(config: Any, manager: resolve.Resolved, engine: str, estimator: str,
                           explicit: set[str], notes: list[str], warnings: list[str]) -> None:
    """A process weight needs a manager that composes the weights (dense rewards) and its
    reward model; on verl, the keys of verl's colocated reward-model path, the only one where
    verl takes per-token rewards (spec/verl-cpu.md, "Dense rewards"). Notes say which path the
    rewards take."""
    section = read_section(config)
    weights = section.reward_weights
    if weights.process == 0:
        return
    cls = manager.obj if resolve.is_rewardsql_manager(manager) else None
    if not getattr(cls, "composes_weights", False):
        raise ConfigError(f"{weights.process:g} needs a reward manager that gives dense process "
                          f"rewards (e.g. sql_prm), and {manager.name!r} does not",
                          key=PROCESS_WEIGHT_KEY)
    setting_name = getattr(cls, "reward_model_setting", None)
    model_path = None
    if setting_name:
        model_path = section.reward_manager.get(setting_name)
        check_process_reward_model(model_path, f"{MANAGER_SETTINGS_KEY}.{setting_name}")
    if estimator == "grpo":
        warnings.append("algorithm.adv_estimator=grpo sums the token rewards of a response: with "
                        f"dense process rewards that is a length bias ({DENSE_ESTIMATOR} is the "
                        "original RewardSQL's pairing)")
    url_name = getattr(cls, "reward_model_url_setting", None)
    url = section.reward_manager.get(url_name) if url_name else None
    scoring = section.reward_manager.get("prm_scoring", "auto")
    if url and scoring != "in_process":
        # a server the user runs: checked now (answers, serves this model), at dry-run too
        from rewardsql.training.prm.served import check_server

        check_server(url, model_path, key=f"{MANAGER_SETTINGS_KEY}.{url_name}")
    if engine == "local":
        where = (f"on the server at {url}" if url and scoring != "in_process"
                 else "in the local engine's process, on the engine's device")
        notes.append(f"rewards: {manager.name} composes process and outcome token rewards in the "
                     f"local engine's process; its reward model is scored {where}")
        return
    if _select(config, "trainer.use_v1") and "trainer.use_v1" in explicit:
        raise ConfigError("verl's v1 trainer has no dense-reward path with the ground truth; "
                          "remove trainer.use_v1=true", key="trainer.use_v1")
    set_key(config, "trainer.use_v1", False)
    rm = "reward.reward_model"
    for key, value in ((f"{rm}.enable", True), (f"{rm}.enable_resource_pool", False),
                       (f"{rm}.model_path", model_path),
                       (f"{rm}.rollout.tensor_model_parallel_size", 1)):
        set_key(config, key, value)
    from omegaconf import OmegaConf

    if OmegaConf.is_missing(config.reward.reward_model.rollout, "name") and not \
            OmegaConf.is_missing(config.actor_rollout_ref.rollout, "name"):
        set_key(config, f"{rm}.rollout.name", _select(config, "actor_rollout_ref.rollout.name"))
    if not _select(config, "reward.custom_reward_function.path"):
        from rewardsql import reward_placeholder

        set_key(config, "reward.custom_reward_function.path", reward_placeholder.__file__)
        set_key(config, "reward.custom_reward_function.name", reward_placeholder.NAME)
    if scoring == "in_process":
        where = ("in each of verl's reward workers, loaded there (prm_scoring=in_process; "
                 "verl also serves model_path, unused)")
    elif url:
        where = (f"on your server at {url}; verl's own reward-model server (which this path "
                 "always starts) gets dummy weights and the least memory: "
                 + ", ".join(f"{k}={v}" for k, v in _idle_reward_server(config, explicit)))
    else:
        where = ("on verl's reward-model server for model_path (vLLM, /generative_scoring): "
                 "no PRM weights in the reward workers")
    notes.append(f"rewards: verl's colocated reward-model path ({rm}.enable=true, "
                 "enable_resource_pool=false, trainer.use_v1=false): the adapter of "
                 f"{manager.name} returns token rewards and builds rm_scores; the PRM is scored "
                 f"{where}")


#: verl's reward-model server when the PRM is scored elsewhere (``prm_url``): it must start (the
#: dense-reward path needs it) but is never called, so it reads no weights and holds little.
IDLE_REWARD_SERVER = {
    "reward.reward_model.rollout.load_format": "dummy",
    "reward.reward_model.rollout.gpu_memory_utilization": 0.05,
    "reward.reward_model.rollout.max_num_seqs": 1,
    "reward.reward_model.rollout.max_model_len": 512,
    "reward.reward_model.rollout.max_num_batched_tokens": 512,
    "reward.reward_model.rollout.enforce_eager": True,
}


def _idle_reward_server(config: Any, explicit: set[str]) -> list[tuple[str, Any]]:
    """Set :data:`IDLE_REWARD_SERVER` where the user did not; the keys set, with their values."""
    done = []
    for key, value in IDLE_REWARD_SERVER.items():
        if key not in explicit:
            set_key(config, key, value)
            done.append((key.rsplit(".", 1)[1], value))
    return done


def check_process_reward_model(path: Any, key: str) -> None:
    """The PRM named by ``key`` is a local model directory whose step tag and candidates are
    single tokens of its tokenizer (``prm_config.json``); a ConfigError naming the key if not."""
    from pathlib import Path

    if not path:
        raise ConfigError("required with a process weight: the PRM's model directory", key=key)
    model = Path(str(path)).expanduser()
    if not (model / "config.json").is_file():
        raise ConfigError(f"{path} is not a model directory on this machine (no config.json)",
                          key=key)
    from transformers import AutoTokenizer

    from rewardsql.training.prm import DEFAULT_CANDIDATES, DEFAULT_TAG, PRM_CONFIG_FILE, tag_tokens
    from rewardsql.training.prm.scorer import read_prm_config

    settings = read_prm_config(model)
    try:
        tag_tokens(AutoTokenizer.from_pretrained(model), settings.get("step_tag", DEFAULT_TAG),
                   settings.get("candidate_tokens", DEFAULT_CANDIDATES))
    except ConfigError as exc:
        raise ConfigError(f"the PRM of {key}: {exc.message}", source=model / PRM_CONFIG_FILE,
                          key=exc.key) from None


def _leaf_keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= _leaf_keys(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def _check_complete(config: Any, engine: str) -> None:
    """Every interpolation resolves, and the keys verl leaves mandatory are set."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if engine == "verl" and OmegaConf.is_missing(config.actor_rollout_ref.rollout, "name"):
        raise ConfigError("required: the rollout engine (vllm or sglang)",
                          key="actor_rollout_ref.rollout.name")
    try:
        OmegaConf.to_container(config, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"cannot resolve: {getattr(exc, 'msg', exc)}", key=key) from None


#: The actor strategies whose checkpoints rewardsql exports (verl's FSDP model merger).
FSDP_STRATEGIES = ("fsdp", "fsdp2")


def exports_final_model(config: Any, options: TrainOptions) -> bool:
    """Whether the run ends by exporting its last checkpoint to ``OUT/hf_model``: verl's engine
    (the local engine writes ``OUT/final_model`` itself), an FSDP actor, and no ``--no-export``."""
    return (options.engine == "verl" and options.export
            and _select(config, "actor_rollout_ref.actor.strategy") in FSDP_STRATEGIES)


def _check_export(config: Any, options: TrainOptions, warnings: list[str]) -> None:
    """What the export at the end of a verl run needs, checked before it trains: an FSDP actor,
    checkpoints (a warning each when missing: the run still trains) and an ``OUT/hf_model`` that
    is free or an earlier export (a ConfigError: nothing is overwritten after hours of
    training)."""
    if options.engine != "verl" or not options.export:
        return
    strategy = _select(config, "actor_rollout_ref.actor.strategy")
    if strategy not in FSDP_STRATEGIES:
        warnings.append(
            f"actor_rollout_ref.actor.strategy={strategy}: the trained model is not exported "
            "(rewardsql exports FSDP checkpoints); merge a checkpoint with `python -m "
            "verl.model_merger merge --backend megatron ...`, or pass --no-export")
        return
    from rewardsql.training.export import HF_MODEL, check_output

    target = Path(str(_select(config, "trainer.default_local_dir"))) / HF_MODEL
    save_freq = _select(config, "trainer.save_freq")
    if not isinstance(save_freq, int) or save_freq <= 0:
        warnings.append(
            f"trainer.save_freq={save_freq}: verl saves no checkpoint, so the trained model is "
            f"lost and nothing is exported to {target} (set trainer.save_freq > 0: verl then "
            "saves the last step too), or pass --no-export")
    check_output(target, "move it away, or pass --no-export")


def check_data_files(config: Any) -> dict[str, list[resolve.DataFile]]:
    """Check ``data.train_files`` and ``data.val_files``: they exist and have the columns."""
    columns = resolve.required_columns(str(_select(config, "data.prompt_key")),
                                       str(_select(config, "data.reward_fn_key")))
    out: dict[str, list[resolve.DataFile]] = {}
    for key in ("data.train_files", "data.val_files"):
        files = resolve.data_files(_select(config, key))
        if not files:
            raise ConfigError("required: one or more parquet files (or pass --data-path)", key=key)
        out[key] = [resolve.check_data_file(f, columns, key) for f in files]
    return out


def validate_with_verl(config: Any) -> None:
    """Run verl's own config validation (batch-size arithmetic, typed dataclasses)."""
    import contextlib
    import io
    import warnings as py_warnings

    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    try:
        # verl prints its progress; the summary says the same in one line
        with py_warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            py_warnings.simplefilter("ignore")
            validate_config(config=config, use_reference_policy=need_reference_policy(config),
                            use_critic=need_critic(config))
    except (AssertionError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"verl rejects the config: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # omegaconf validation errors and friends
        raise ConfigError(f"verl rejects the config: {type(exc).__name__}: {exc}") from None
