"""``rewardsql demo``: the whole job on the bundled example, end to end, on a CPU in minutes.

Builds the example data and the tiny model (cached), fine-tunes it on the train split's
demonstrations (``rewardsql sft`` with ``SFT_CONFIG``; an imperfect teacher wrote them:
:mod:`rewardsql.demo.tiny.teacher`), evaluates greedy dev execution accuracy, trains with GRPO on
the rl split's questions on the local engine (``GRPO_CONFIG``: the SQL verifier and
``grpo_weighted``), evaluates again, and writes ``report.json`` and ``report.png``. The report
states the teacher's near-misses and shows dev accuracy per template, so that what GRPO fixed is
visible; greedy accuracy on the rl questions GRPO trained on is reported beside dev's.

Layout of the output directory::

    cache/           example data and tiny model (reused when their inputs are unchanged)
    sft/             the fine-tuned model
    grpo/            metrics.jsonl, dev.jsonl, tensorboard/, final_model/
    report.json      teacher, dev_per_template, sft.dev_accuracy, grpo.dev_accuracy,
                     *.own_prompts_accuracy (GRPO's own rl prompts), timings, settings
    report.png       GRPO reward over steps; dev accuracy, and accuracy on GRPO's own prompts
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from rewardsql.config import set_key, to_plain
from rewardsql.demo.tiny import CONFIG_DIR
from rewardsql.errors import ConfigError, require, require_verl
from rewardsql.io import atomic_write, atomic_write_json
from rewardsql.section import MANAGER_SETTINGS_KEY
from rewardsql.training.cpu_math import cpu_math_label
from rewardsql.training.environment import describe_environment

#: The demo's SFT and GRPO configs, shipped inside the package so an installed rewardsql runs it.
SFT_CONFIG = CONFIG_DIR / "sft_config.json"
GRPO_CONFIG = CONFIG_DIR / "grpo.yaml"
#: Size of the tiny model (rewardsql.demo.tiny.model.SIZES).
MODEL_SIZE = "tiny"

#: ``--quick`` (CI): the small example split and fewer SFT and GRPO steps.
QUICK_SFT: dict[str, Any] = {"num_train_epochs": 1, "max_steps": 30}
QUICK_GRPO: dict[str, Any] = {
    "data.train_batch_size": 4, "data.val_max_samples": 24, "data.val_batch_size": 24,
    "data.max_response_length": 80, "actor_rollout_ref.actor.ppo_mini_batch_size": 4,
    "actor_rollout_ref.rollout.n": 4, "trainer.total_training_steps": 3, "trainer.test_freq": -1,
}

#: How many of the rl questions GRPO trained on (the first drawn) the report evaluates, greedy,
#: with the SFT and the GRPO model, beside dev: whether GRPO learned its own prompts, and
#: whether that carried over to questions it never saw.
OWN_PROMPTS_EVALUATED = 160

REPORT_JSON = "report.json"
REPORT_PNG = "report.png"


def grpo_plan(example: Any, model_path: Path, output_dir: Path, *, quick: bool, seed: int,
              device: str = "cpu", overrides: Iterable[str] = ()) -> Any:
    """The demo's GRPO run as ``rewardsql train --engine local`` would plan it: grpo.yaml, this
    run's paths and seeds, the ``--quick`` settings, then ``overrides`` (``KEY=VALUE``)."""
    from rewardsql.training.launcher import TrainOptions, build_plan

    values: dict[str, Any] = {
        "data.train_files": str(example.rl_parquet), "data.val_files": str(example.dev_parquet),
        "data.seed": seed, "actor_rollout_ref.model.path": str(model_path),
        "actor_rollout_ref.rollout.seed": seed,
        f"{MANAGER_SETTINGS_KEY}.db_root": str(example.db_root), "trainer.device": device,
        **(QUICK_GRPO if quick else {}),
    }
    texts = [f"{key}={json.dumps(value)}" for key, value in values.items()]
    options = TrainOptions(output_dir=Path(output_dir), config=GRPO_CONFIG, engine="local",
                           overrides=[*texts, *overrides])
    return build_plan(options)


def resolve_device(device: str) -> str:
    """``auto``: ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one fails."""
    import torch

    from rewardsql.training.sft.config import DEVICE_EXPECTED, DEVICES
    from rewardsql.training.sft.train import check_device

    if device not in DEVICES:
        raise ConfigError(f"{DEVICE_EXPECTED}, got {device!r}", key="device")
    check_device(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def run_demo(output_dir: Path, *, quick: bool = False, seed: int = 0,
             cache_dir: Path | None = None, threads: int | None = None,
             device: str = "auto", echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo into ``output_dir``; return the report (also written to report.json).

    ``threads``: torch's CPU threads for SFT, evaluation and GRPO (None: leave torch's setting;
    on 2 idle cores two threads are ~1.6x faster than one, on busy cores one can be faster).
    ``device``: where SFT, evaluation and GRPO run (``auto``: the GPU when there is one; the
    README's figures are for ``cpu``). The report's ``environment.cpu_math`` says whether the
    process computed with reproducible CPU arithmetic (``rewardsql.training.cpu_math``: the CLI's
    default), and of which class.
    """
    # Before any work: the train extra (the report's plot, minutes from now, needs matplotlib).
    for module in ("torch", "transformers", "matplotlib"):
        require(module, "rewardsql demo", "train")
    import torch

    from rewardsql.demo.tiny import build_example, build_tiny_model
    from rewardsql.training.launcher import launch
    from rewardsql.training.local.local import evaluate_model
    from rewardsql.training.sft import SFTConfig, run_sft

    # Before any work: GRPO, minutes from now, runs on the local engine, which uses verl.
    require_verl("rewardsql demo (its GRPO runs on the local engine)")
    device = resolve_device(device)

    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir else output_dir / "cache"
    scale = "quick" if quick else "full"
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 2)
        return time.perf_counter()

    echo(f"[1/5] example data and tiny model ({scale}) in {cache}")
    t = time.perf_counter()
    example = build_example(cache / f"example-{scale}-seed{seed}", seed=seed, scale=scale)
    model_dir = build_tiny_model(cache / f"model-{MODEL_SIZE}-{scale}-seed{seed}",
                                 example.corpus(), seed=seed, size=MODEL_SIZE)
    t = lap("build_s", t)

    echo("[2/5] supervised fine-tuning")
    sft_dir = output_dir / "sft"
    overrides = {"model_name_or_path": str(model_dir), "train_file": str(example.sft_train),
                 "output_dir": str(sft_dir), "eval_file": None, "device": device}
    if quick:
        overrides.update(QUICK_SFT)
    sft = run_sft(SFTConfig.from_file(SFT_CONFIG, overrides))
    t = lap("sft_s", t)

    plan = grpo_plan(example, sft_dir, output_dir / "grpo", quick=quick, seed=seed,
                     device=device)
    config = plan.config
    echo("[3/5] dev execution accuracy after SFT (greedy)")
    before = evaluate_model(config)
    t = lap("sft_eval_s", t)

    echo(f"[4/5] GRPO ({plan.estimator.name}, {plan.reward_manager.name})")
    run = launch.run_local(plan)
    t = lap("grpo_s", t)
    after = run.final_dev_accuracy
    if after is None:  # the engine evaluates at the last step whenever there are dev files
        raise RuntimeError("the GRPO run made no dev evaluation")

    echo("[5/5] accuracy on GRPO's own prompts before and after GRPO (greedy), report")
    own = list(dict.fromkeys(run.trained_prompts))[:OWN_PROMPTS_EVALUATED]
    own_config = copy.deepcopy(config)
    set_key(own_config, "data.val_files", config.data.train_files)
    set_key(own_config, "data.val_max_samples", -1)
    own_before = evaluate_model(own_config, prompt_indices=own)
    own_after = evaluate_model(own_config, run.final_model_dir, prompt_indices=own)
    t = lap("own_prompts_eval_s", t)
    from rewardsql.training.local.metrics import read_metrics

    steps = read_metrics(run.output_dir)
    final_dev = json.loads((run.output_dir / "dev.jsonl").read_text().splitlines()[-1])
    per_template = _per_template(example.dev_json, before.per_prompt, final_dev["dev/per_prompt"])
    timings["total_s"] = round(time.perf_counter() - started, 2)
    report = {
        "teacher": example.teacher,
        "dev_per_template": per_template,
        "sft": {
            "dev_accuracy": before.accuracy,
            "dev_count": before.count,
            "dev_statuses": before.statuses,
            "own_prompts_accuracy": own_before.accuracy,
            "train_loss_first": sft.first_loss,
            "train_loss_final": sft.final_loss,
            "steps": sft.steps,
            "model_dir": str(sft_dir),
        },
        "grpo": {
            "dev_accuracy": after,
            "dev_history": [[0, before.accuracy], *[[s, a] for s, a in run.dev_history]],
            "own_prompts_accuracy": own_after.accuracy,
            "own_prompts_count": own_after.count,
            "steps": run.global_step,
            "reward_mean_first": steps[0]["reward/mean"] if steps else None,
            "reward_mean_last": steps[-1]["reward/mean"] if steps else None,
            "model_dir": str(run.final_model_dir),
            "metrics": str(run.metrics_path),
        },
        "improvement": after - before.accuracy,
        "timings": timings,
        "settings": {
            "quick": quick,
            "seed": seed,
            "scale": scale,
            "model_size": MODEL_SIZE,
            "n_train_questions": example.n_train,
            "n_rl_questions": example.n_rl,
            "n_dev_questions": example.n_dev,
            "sft_config": str(SFT_CONFIG),
            "grpo": to_plain(config),
        },
        "environment": describe_environment(device),
    }
    atomic_write_json(output_dir / REPORT_JSON, report)
    plot_report(steps, report["grpo"]["dev_history"], output_dir / REPORT_PNG,
                own_prompts=(own_before.accuracy, own_after.accuracy))
    echo(summary_table(report))
    return report


def _per_template(dev_json: Path, sft: list[float], grpo: list[float]
                  ) -> dict[str, dict[str, float]]:
    """Greedy dev accuracy per template after SFT and after GRPO (the evaluated dev prompts are
    the first ones of dev.json, in order)."""
    templates = [q["template"] for q in json.loads(dev_json.read_text())][:len(sft)]
    out: dict[str, dict[str, float]] = {}
    for template in sorted(set(templates)):
        idx = [i for i, t in enumerate(templates) if t == template]
        out[template] = {"n": len(idx), "sft": sum(sft[i] for i in idx) / len(idx),
                         "grpo": sum(grpo[i] for i in idx) / len(idx)}
    return out


def plot_report(steps: list[dict[str, Any]], dev_history: list[list[float]], path: Path,
                own_prompts: tuple[float, float] | None = None) -> None:
    """Two panels: mean training reward per GRPO step; greedy accuracy on dev at each evaluation
    and, when given, on GRPO's own prompts before and after GRPO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    xs = [r["step"] for r in steps]
    left.plot(xs, [r["reward/mean"] for r in steps], marker=".", label="reward mean")
    if len(xs) >= 5:
        window = max(2, len(xs) // 8)
        rewards = [r["reward/mean"] for r in steps]
        windows = [rewards[max(0, i - window + 1):i + 1] for i in range(len(rewards))]
        smooth = [sum(w) / len(w) for w in windows]
        left.plot(xs, smooth, label=f"moving mean ({window} steps)")
    left.set_xlabel("GRPO step")
    left.set_ylabel("execution reward (train samples)")
    left.set_title("Training reward")
    left.set_ylim(-0.02, 1.02)
    left.grid(alpha=0.3)
    left.legend(loc="upper left")
    right.plot([s for s, _ in dev_history], [a for _, a in dev_history], marker="o",
               color="tab:green", label="dev (never trained on)")
    if own_prompts is not None:
        right.plot([0, dev_history[-1][0]], list(own_prompts), marker="s", linestyle="--",
                   color="tab:gray", label="GRPO's own prompts")
    right.set_xlabel("GRPO step (0 = after SFT)")
    right.set_ylabel("execution accuracy (greedy)")
    right.set_title("Accuracy")
    right.legend(loc="upper left")
    right.set_ylim(-0.02, 1.02)
    right.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


def summary_table(report: Mapping[str, Any]) -> str:
    """The printed summary: accuracies before/after GRPO and where the time went."""
    t = report["timings"]
    teacher = report["teacher"]
    planted = ", ".join(f"{t} ({m['kind']})" for t, m in teacher["near_misses"].items())
    rows = [
        ("SFT teacher's near-misses", f"{teacher['error_rate']:.0%} of: {planted}"),
        *[(f"dev {t} (n={v['n']}): SFT -> GRPO", f"{v['sft']:.2f} -> {v['grpo']:.2f}")
          for t, v in report["dev_per_template"].items() if t in teacher["near_misses"]],
        ("dev accuracy after SFT", f"{report['sft']['dev_accuracy']:.3f}"),
        ("dev accuracy after GRPO", f"{report['grpo']['dev_accuracy']:.3f}"),
        ("change", f"{report['improvement']:+.3f}"),
        ("dev questions evaluated", str(report["sft"]["dev_count"])),
        ("GRPO's own prompts: accuracy after SFT",
         f"{report['sft']['own_prompts_accuracy']:.3f}"),
        ("GRPO's own prompts: accuracy after GRPO",
         f"{report['grpo']['own_prompts_accuracy']:.3f}"),
        ("GRPO's own prompts evaluated", str(report["grpo"]["own_prompts_count"])),
        ("GRPO steps", str(report["grpo"]["steps"])),
        ("CPU", str(report["environment"].get("cpu"))),
        ("CPU math", cpu_math_label(report["environment"].get("cpu_math") or {})),
        ("torch threads", str(report["environment"].get("torch_threads"))),
        ("time: data + model", f"{t['build_s']:.0f} s"),
        ("time: SFT", f"{t['sft_s']:.0f} s"),
        ("time: dev eval after SFT", f"{t['sft_eval_s']:.0f} s"),
        ("time: GRPO (with dev evals)", f"{t['grpo_s']:.0f} s"),
        ("time: own-prompt evals", f"{t['own_prompts_eval_s']:.0f} s"),
        ("time: total", f"{t['total_s']:.0f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    values = max(10, *(len(value) for _, value in rows))
    line = "-" * (width + values + 4)
    body = "\n".join(f"{name:<{width}}  {value:>{values}}" for name, value in rows)
    return f"{line}\n{body}\n{line}"
