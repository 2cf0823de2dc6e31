"""Contract checks: call each component the way the trainers will, on a small synthetic batch.

This is what ``rewardsql plugins check`` runs and what a third-party author runs before
publishing. The synthetic batch is text-to-SQL shaped: a throwaway SQLite database with one table,
so a SQL reward can really execute it. With a training config (``--config``), reward managers are
built with its ``rewardsql.reward_manager`` settings (a ``db_root`` setting is pointed at the
throwaway database) and reward functions get its ``reward_kwargs``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sqlite3
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardsql.components import Component, ComponentKind
from rewardsql.config import get_key, load_config
from rewardsql.errors import ConfigError
from rewardsql.rewards import RewardManager, RewardRequest, score_of, validate_results
from rewardsql.section import read_section
from rewardsql.signatures import bind_reward_function, describe_unbound, unbound_parameters

CHECK_DB_ID = "rewardsql_check"
CHECK_SQL = "SELECT name FROM singer WHERE age > 30"
CHECK_DATA_SOURCE = "rewardsql_check"


class CheckFailure(Exception):
    """A component broke its contract; the message names the point that failed."""


@dataclass(frozen=True)
class CheckInputs:
    """What a check hands the components besides the synthetic batch."""

    manager_settings: Mapping[str, Any] = field(default_factory=dict)
    reward_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config_file(cls, path: str | os.PathLike[str]) -> CheckInputs:
        """The inputs a training config gives: the manager's settings, the reward kwargs."""
        config = load_config(path)
        section = read_section(config, source=path)
        kwargs = get_key(config, "reward.custom_reward_function.reward_kwargs", None,
                         expected=dict, source=path) or {}
        return cls(section.reward_manager, kwargs)


@dataclass(frozen=True)
class CheckResult:
    """Outcome of checking one component."""

    component: Component
    ok: bool
    detail: str


def check_component(component: Component, inputs: CheckInputs | None = None) -> CheckResult:
    """Run the contract check for one component; never raises."""
    checker = _CHECKERS[component.kind]
    with tempfile.TemporaryDirectory(prefix="rewardsql-check-") as tmp:
        db_root = _make_check_database(Path(tmp))
        try:
            detail = checker(component.obj, db_root, inputs or CheckInputs())
        except CheckFailure as exc:
            return CheckResult(component, False, str(exc))
        except Exception as exc:  # the component itself raised
            return CheckResult(component, False, f"raised {type(exc).__name__}: {exc}")
    return CheckResult(component, True, detail)


def _make_check_database(root: Path) -> Path:
    db_dir = root / CHECK_DB_ID
    db_dir.mkdir()
    conn = sqlite3.connect(db_dir / f"{CHECK_DB_ID}.sqlite")
    with conn:
        conn.execute("CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, age INTEGER)")
        conn.executemany(
            "INSERT INTO singer (name, age) VALUES (?, ?)",
            [("Ana", 25), ("Bo", 41), ("Cy", 33), ("Di", 29)],
        )
    conn.close()
    return root


def _extra_info(db_root: Path) -> dict[str, Any]:
    return {"db_id": CHECK_DB_ID, "db_root": str(db_root), "question_id": 0}


# -- advantage estimators --------------------------------------------------------------------


def _verl_algo_config() -> Any:
    """verl's own algorithm config object when verl is installed, else an empty dict."""
    try:
        from verl.trainer.config import AlgoConfig
    except ImportError:
        return {}
    return AlgoConfig()


def _check_advantage_estimator(fn: Callable[..., Any], _db_root: Path,
                               _inputs: CheckInputs) -> str:
    try:
        import numpy as np
        import torch
    except ImportError as exc:
        raise CheckFailure(
            f"checking an advantage estimator needs torch and numpy: {exc}"
        ) from None
    generator = torch.Generator().manual_seed(0)
    batch, width = 7, 12
    lengths = torch.tensor([12, 9, 5, 12, 7, 3, 10])
    # int64 like verl's response_mask (a slice of attention_mask)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    rewards = torch.zeros(batch, width)
    rewards[torch.arange(batch), lengths - 1] = torch.rand(batch, generator=generator).round()
    rewards[:, 1] += torch.rand(batch, generator=generator) * 0.5  # a step reward
    # groups of 3, 3 and a singleton, as verl passes them: uid strings in an object array
    index = np.array(["uid-a"] * 3 + ["uid-b"] * 3 + ["uid-c"], dtype=object)
    out = fn(
        token_level_rewards=rewards, response_mask=mask, index=index, config=_verl_algo_config()
    )
    if not (isinstance(out, tuple) and len(out) == 2):
        raise CheckFailure(f"must return a tuple (advantages, returns), got {type(out).__name__}")
    for label, tensor in zip(("advantages", "returns"), out, strict=True):
        if not isinstance(tensor, torch.Tensor):
            raise CheckFailure(f"{label} must be a torch.Tensor, got {type(tensor).__name__}")
        if tuple(tensor.shape) != (batch, width):
            raise CheckFailure(
                f"{label} has shape {tuple(tensor.shape)}, expected {(batch, width)}"
            )
        if not torch.isfinite(tensor).all():
            raise CheckFailure(f"{label} has non-finite values")
    return f"returned two finite {batch}x{width} tensors"


# -- reward functions --------------------------------------------------------------------------


def _check_reward_function(fn: Callable[..., Any], db_root: Path, inputs: CheckInputs) -> str:
    extra_info = _extra_info(db_root)
    unbound = unbound_parameters(fn, extra_info_keys=extra_info,
                                 reward_kwargs=inputs.reward_kwargs)
    if unbound:  # the trainers would fail on every call: say where the parameter can come from
        hint = "" if inputs.reward_kwargs else " (pass --config FILE with reward_kwargs)"
        raise CheckFailure(describe_unbound(fn, unbound[0], extra_info_keys=extra_info,
                                            reward_kwargs=inputs.reward_kwargs) + hint)
    bound = bind_reward_function(fn, inputs.reward_kwargs)
    value = bound(data_source=CHECK_DATA_SOURCE, solution_str=CHECK_SQL,
                  ground_truth=CHECK_SQL, extra_info=extra_info)
    if inspect.isawaitable(value):
        value = asyncio.run(_await(value))
    try:
        score = score_of(value)
    except (TypeError, ValueError) as exc:
        raise CheckFailure(str(exc)) from None
    return f"returned score {score:g} for a correct answer"


async def _await(value: Any) -> Any:
    return await value


# -- reward managers ---------------------------------------------------------------------------


def _check_reward_manager(cls: type, db_root: Path, inputs: CheckInputs) -> str:
    if not (isinstance(cls, type) and issubclass(cls, RewardManager)):
        raise CheckFailure("must be a subclass of rewardsql.RewardManager (or of verl's legacy "
                           "manager shape, which the registry adapts)")
    responses = [CHECK_SQL, "SELECT name FROM singer", "SELEC broken"]
    prompt = "Which singers are older than 30?"
    # a legacy-shape manager decodes token ids itself: give it a real (word-level) tokenizer
    tokenizer = _check_tokenizer([prompt, *responses]) if getattr(
        cls, "needs_tokenizer", False) else None
    requests = [
        RewardRequest(
            response=text,
            ground_truth=CHECK_SQL,
            data_source=CHECK_DATA_SOURCE,
            extra_info=_extra_info(db_root),
            prompt=prompt,
            response_token_ids=tuple(tokenizer.encode(text, add_special_tokens=False)
                                     if tokenizer else range(1, len(text.split()) + 1)),
        )
        for text in responses
    ]
    settings = dict(inputs.manager_settings)
    if "db_root" in settings:
        settings["db_root"] = str(db_root)  # the check's database, not the training data's
    try:
        manager = cls(settings, tokenizer=tokenizer, compute_score=None)
    except ConfigError as exc:
        raise CheckFailure(f"rejects its settings: {exc}") from None
    except Exception as exc:
        what = "the given settings" if settings else "an empty config"
        raise CheckFailure(
            f"cannot be constructed with {what}: {type(exc).__name__}: {exc}"
        ) from None
    try:
        results = manager.score_batch(requests)
    finally:
        manager.close()
    try:
        validate_results(results, requests, source="score_batch")
    except (TypeError, ValueError) as exc:
        raise CheckFailure(str(exc).removeprefix("score_batch: ")) from None
    return "scored " + ", ".join(f"{r.score:g}" for r in results) + f" for {len(results)} responses"


def _check_tokenizer(texts: list[str]) -> Any:
    """A whitespace word-level tokenizer over ``texts`` (transformers' fast tokenizer class)."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast
    except ImportError as exc:
        raise CheckFailure(f"checking a legacy-shape manager needs transformers: {exc}") from None
    words = ["<pad>", "<eos>", *dict.fromkeys(w for t in texts for w in t.split())]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


# -- commands ----------------------------------------------------------------------------------


def _check_command(command: Any, _db_root: Path, _inputs: CheckInputs) -> str:
    import typer
    from typer.main import get_command

    app = command if isinstance(command, typer.Typer) else None
    if app is None:
        app = typer.Typer()
        app.command("cmd")(command)
        app.command("other", hidden=True)(lambda: None)  # keep "cmd" a subcommand
    try:
        get_command(app)
    except Exception as exc:  # typer cannot build a command from it
        raise CheckFailure(f"typer cannot build a command: {type(exc).__name__}: {exc}") from None
    if isinstance(command, typer.Typer):
        names = sorted([c.name or getattr(c.callback, "__name__", "?")
                        for c in command.registered_commands]
                       + [g.name or "?" for g in command.registered_groups])
        if not names:
            raise CheckFailure("the typer app has no commands")
        return "typer app with commands " + ", ".join(names)
    return "a command typer can call"


_CHECKERS: dict[ComponentKind, Callable[[Any, Path, CheckInputs], str]] = {
    ComponentKind.ADVANTAGE_ESTIMATOR: _check_advantage_estimator,
    ComponentKind.REWARD_FUNCTION: _check_reward_function,
    ComponentKind.REWARD_MANAGER: _check_reward_manager,
    ComponentKind.COMMAND: _check_command,
}
