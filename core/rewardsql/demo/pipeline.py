"""``rewardsql demo``: the whole method on the bundled example, end to end, on a CPU in minutes.

Stages, each through the public APIs the commands use: the example data and the tiny model
(cached); SFT on the train split's demonstrations (``rewardsql sft``; an imperfect teacher wrote
them: :mod:`rewardsql.demo.tiny.teacher`); greedy dev accuracy; step labels of the SFT policy's
answers to rl questions (``rewardsql rm label``); a PRM trained on them (``rewardsql rm train``);
best-of-N on dev (``rewardsql rerank``: PRM@N, majority vote, pass@N); GRPO with outcome rewards
(``sql_verifier``, ``grpo_weighted``) and GRPO with outcome and process rewards (``sql_prm``,
``grpo_process_avg_unique``), both on the local engine as ``rewardsql train --engine local``
plans them; greedy dev accuracy after each. The report states the teacher's near-misses and
shows dev accuracy per template, so that what each stage fixed is visible, and whether the PRM
flags the steps that carry them (:mod:`rewardsql.demo.near_miss`).

Layout of the output directory::

    cache/               example data and tiny model (reused when their inputs are unchanged)
    sft/                 the fine-tuned policy
    prm/                 labels.jsonl (+ the training / held-out split), model/ (the PRM)
    best_of_n/           per-question JSON, summary.json, prediction files per method
    grpo/, grpo_process/ each GRPO run: metrics.jsonl, dev.jsonl, tensorboard/, final_model/
    report.json          every figure and timing, the teacher, dev accuracy per template, the
                         PRM's accuracy on the teacher's near-miss steps (prm.near_miss: in the
                         demonstrations, and in best-of-N samples that repeat them), and what
                         the PRM's training labels say of the same steps
    report.png           reward over GRPO steps (both runs); dev accuracy by stage
    *_rolloutR           the GRPO runs and the report of rollout seed R (``--rollout-seed``)
"""

from __future__ import annotations

import copy
import importlib.util
import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from rewardsql.config import set_key, to_plain
from rewardsql.demo.tiny import CONFIG_DIR
from rewardsql.errors import ConfigError, MissingDependencyError, require, require_verl
from rewardsql.io import atomic_write, atomic_write_json, atomic_write_text
from rewardsql.section import MANAGER_SETTINGS_KEY, PROCESS_WEIGHT_KEY
from rewardsql.training.cpu_math import cpu_math_label
from rewardsql.training.environment import describe_environment

#: The demo's SFT and GRPO configs, shipped inside the package so an installed rewardsql runs it.
SFT_CONFIG = CONFIG_DIR / "sft_config.json"
GRPO_CONFIG = CONFIG_DIR / "grpo.yaml"
#: Size of the tiny model (rewardsql.demo.tiny.model.SIZES).
MODEL_SIZE = "tiny"

#: ``--quick`` (CI): the small example split, fewer SFT, labelling and GRPO steps, fewer dev
#: questions. SFT sees the whole small train split (8 epochs), enough to answer some dev
#: questions it never saw. Labelling and GRPO use the first train questions, which SFT saw:
#: there the policy is right often enough for rewards to vary, so GRPO has a gradient. GRPO's
#: 3 steps cycle over QUICK_GRPO_QUESTIONS questions (the third step revisits the first's), so
#: the reward of the last step against the first shows what two updates did to the same
#: questions. The figures of --quick show that every stage works, not what the method achieves.
QUICK_GRPO_QUESTIONS = 8
QUICK_SFT: dict[str, Any] = {"max_steps": 600, "save_steps": 600}
QUICK_GRPO: dict[str, Any] = {
    "data.shuffle": False, "data.train_max_samples": QUICK_GRPO_QUESTIONS,
    "data.train_batch_size": 4, "data.val_max_samples": 48, "data.val_batch_size": 48,
    "data.max_response_length": 80, "actor_rollout_ref.actor.ppo_mini_batch_size": 4,
    "actor_rollout_ref.rollout.n": 4, "trainer.total_training_steps": 3, "trainer.test_freq": -1,
}

#: The PRM stages: rl questions whose SFT answers are labelled (then split, by question, into
#: PRM training and held-out labels), how they are sampled and labelled, how the PRM (initialised
#: from the SFT model, which already reads the prompts) is trained, and best-of-N on dev.
LABEL_QUESTIONS = {"full": 160, "quick": 32}
LABEL_SETTINGS: dict[str, Any] = {"n": 8, "m": 4, "max_new_tokens": 80, "search": "binary"}
HELD_OUT_FRACTION = 0.2
#: The PRM reads each step with its execution result (up to 50 rows, 500 characters: 100-300 of
#: the tiny tokenizer's tokens), so an answer of three steps needs up to about 1000 tokens: at
#: 512 the PRM's input lost the later steps of 3 labelled answers in 10 (then neither trained nor
#: scored), 1024 is the tiny model's limit. Lengths vary from 200 to 1000 tokens, so batches are
#: grouped by length, which pads less (measurements in docs/results.md).
PRM_TRAIN: dict[str, Any] = {"learning_rate": 1e-3, "num_train_epochs": 2,
                             "per_device_train_batch_size": 8, "max_length": 1024,
                             "group_by_length": True, "warmup_ratio": 0.1, "logging_steps": 10,
                             "save_steps": 100_000, "resume_from_checkpoint": "auto",
                             "report_to": "none"}
#: ``--quick``'s PRM: one epoch (at 1024 tokens two took a fifth of the quick demo's time).
QUICK_PRM: dict[str, Any] = {"num_train_epochs": 1}
BEST_OF_N = 8
#: The best-of-N pick the demo reports as PRM@N: ``rewardsql rerank``'s ``prm_vote``, the answer
#: whose result the candidates' PRM scores (``min`` over steps) back most in sum. Samples of the
#: tiny policy at temperature 1 repeat one another's results often (and its mistakes differ), so
#: agreement weighted by the PRM picks better than the PRM's single best candidate on every data
#: seed measured (docs/results.md).
BEST_OF_N_PICK = "prm_vote"
#: GRPO with process rewards: the sql_prm manager's PRM weight beside the outcome's 1.0, and
#: each step's score on every token of the step (``fill``, the published placement): with
#: ``grpo_process_avg_unique`` a wrong answer's tokens are then pushed down by how bad their
#: step is, where ``step_end`` would leave all but the step ends of a wrong answer untouched
#: (its outcome reward is 0 there). The comparison is in docs/results.md.
PROCESS_WEIGHT = 0.5
PROCESS_PLACEMENT = "fill"

#: How many of the rl questions GRPO trained on (the first drawn) the report evaluates, greedy,
#: with the SFT and the GRPO model, beside dev: whether GRPO learned its own prompts, and
#: whether that carried over to questions it never saw.
OWN_PROMPTS_EVALUATED = 160

REPORT_JSON = "report.json"
REPORT_PNG = "report.png"


def grpo_plan(example: Any, model_path: Path, output_dir: Path, *, quick: bool, seed: int,
              device: str = "cpu", prm: Path | None = None, overrides: Iterable[str] = ()) -> Any:
    """The demo's GRPO run as ``rewardsql train --engine local`` would plan it: grpo.yaml, this
    run's paths and seeds, the ``--quick`` settings, then ``overrides`` (``KEY=VALUE``). With a
    ``prm``, rewards are the ``sql_prm`` manager's: the PRM's step scores (weight
    ``PROCESS_WEIGHT``) plus the outcome, with ``grpo_process_avg_unique`` advantages."""
    from rewardsql.config import load_config
    from rewardsql.training.launcher import TrainOptions, build_plan

    manager = {**load_config(GRPO_CONFIG)["rewardsql"]["reward_manager"],
               "db_root": str(example.db_root)}
    if prm is not None:
        manager = {"prm_path": str(prm), "process_placement": PROCESS_PLACEMENT,
                   "verifier": manager}
    values: dict[str, Any] = {
        "data.train_files": str(example.train_parquet if quick else example.rl_parquet),
        "data.val_files": str(example.dev_parquet),
        "data.seed": seed, "actor_rollout_ref.model.path": str(model_path),
        "actor_rollout_ref.rollout.seed": seed, MANAGER_SETTINGS_KEY: manager,
        "trainer.device": device, **(QUICK_GRPO if quick else {}),
    }
    if prm is not None:
        values.update({"reward.reward_manager.name": "sql_prm",
                       PROCESS_WEIGHT_KEY: PROCESS_WEIGHT,
                       "algorithm.adv_estimator": "grpo_process_avg_unique"})
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


def rollout_suffix(seed: int, rollout_seed: int | None) -> str:
    """The suffix of the GRPO runs' folders and of the report for a rollout seed: none when it
    is the data seed (the plain demo), else ``_rolloutR``, so that runs of one data seed with
    several rollout seeds share its SFT model, labels and PRM in one output directory."""
    return "" if rollout_seed is None or rollout_seed == seed else f"_rollout{rollout_seed}"


def run_demo(output_dir: Path, *, quick: bool = False, seed: int = 0,
             rollout_seed: int | None = None, cache_dir: Path | None = None,
             threads: int | None = None, device: str = "auto",
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo into ``output_dir``; return the report (also written to report.json).

    ``seed`` seeds the example data, the tiny model, SFT, labels, the PRM and best-of-N;
    ``rollout_seed`` (default ``seed``) seeds both GRPO runs' sampling and prompt order. With
    another rollout seed the GRPO runs and the report get :func:`rollout_suffix`'s suffix, and
    the stages before GRPO are reused from ``output_dir`` when they are there.

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
    if importlib.util.find_spec("rewardsql_sql_reward") is None:  # its rewards, labels, prompts
        raise MissingDependencyError(
            "rewardsql demo needs the SQL plugin, which is not installed here: pip install "
            "rewardsql-sql-reward (from a checkout: pip install -e plugins/rewardsql-sql-reward)")
    import torch

    from rewardsql.demo.near_miss import near_miss_report
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
    rollout = seed if rollout_seed is None else rollout_seed
    suffix = rollout_suffix(seed, rollout_seed)
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 2)
        return time.perf_counter()

    echo(f"[1/8] example data and tiny model ({scale}) in {cache}")
    t = time.perf_counter()
    example = build_example(cache / f"example-{scale}-seed{seed}", seed=seed, scale=scale)
    model_dir = build_tiny_model(cache / f"model-{MODEL_SIZE}-{scale}-seed{seed}",
                                 example.corpus(), seed=seed, size=MODEL_SIZE)
    t = lap("build_s", t)

    echo("[2/8] supervised fine-tuning on the teacher's demonstrations")
    sft_dir = output_dir / "sft"
    overrides = {"model_name_or_path": str(model_dir), "train_file": str(example.sft_train),
                 "output_dir": str(sft_dir), "eval_file": None, "device": device}
    if quick:
        overrides.update(QUICK_SFT)
    sft = run_sft(SFTConfig.from_file(SFT_CONFIG, overrides))
    t = lap("sft_s", t)

    plan = grpo_plan(example, sft_dir, output_dir / f"grpo{suffix}", quick=quick, seed=rollout,
                     device=device)
    config = plan.config
    echo("[3/8] dev execution accuracy after SFT (greedy)")
    before = evaluate_model(config)
    t = lap("sft_eval_s", t)

    echo("[4/8] step labels: the SFT policy's answers on rl questions, executed and labelled")
    labels = label_steps(example, sft_dir, output_dir / "prm", scale=scale, seed=seed,
                         device=device)
    t = lap("label_s", t)

    echo("[5/8] PRM training on the labels")
    prm = train_prm(sft_dir, labels, output_dir / "prm", device=device,
                    overrides=QUICK_PRM if quick else None)
    t = lap("prm_train_s", t)

    dev_n = int(config.data.val_max_samples) if quick else example.n_dev
    echo(f"[6/8] best-of-{BEST_OF_N} on dev with the PRM ({dev_n} questions)")
    best = best_of_n(example, sft_dir, prm["model_dir"], output_dir / "best_of_n", dev_n,
                     seed=seed, device=device)
    t = lap("best_of_n_s", t)
    echo("the PRM on the teacher's near-miss steps (demonstrations, best-of-N samples, labels)")
    near_misses = near_miss_report(example, Path(prm["model_dir"]),
                                   output_dir / "best_of_n" / "questions.jsonl", device=device,
                                   labels_jsonl=Path(labels["labels_train"]))
    t = lap("near_miss_s", t)

    echo(f"[7/8] GRPO, outcome rewards ({plan.estimator.name}, {plan.reward_manager.name})")
    run = launch.run_local(plan)
    t = lap("grpo_s", t)
    process_plan = grpo_plan(example, sft_dir, output_dir / f"grpo_process{suffix}",
                             quick=quick, seed=rollout, device=device,
                             prm=Path(prm["model_dir"]))
    echo(f"[8/8] GRPO, outcome and process rewards ({process_plan.estimator.name}, "
         f"{process_plan.reward_manager.name}, process weight {PROCESS_WEIGHT:g})")
    process_run = launch.run_local(process_plan)
    t = lap("grpo_process_s", t)
    after, after_process = run.final_dev_accuracy, process_run.final_dev_accuracy
    if after is None or after_process is None:  # the engine evaluates at the last step
        raise RuntimeError("a GRPO run made no dev evaluation")

    echo("accuracy on GRPO's own prompts before and after GRPO (greedy), report")
    own = list(dict.fromkeys(run.trained_prompts))[:OWN_PROMPTS_EVALUATED]
    own_config = copy.deepcopy(config)
    set_key(own_config, "data.val_files", config.data.train_files)
    set_key(own_config, "data.val_max_samples", -1)
    own_before = evaluate_model(own_config, prompt_indices=own)
    own_after = evaluate_model(own_config, run.final_model_dir, prompt_indices=own)
    t = lap("own_prompts_eval_s", t)
    from rewardsql.training.local.metrics import read_metrics

    steps = read_metrics(run.output_dir)
    process_steps = read_metrics(process_run.output_dir)
    per_template = _per_template(example.dev_json, before.per_prompt,
                                 _last_dev(run.output_dir), _last_dev(process_run.output_dir))
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
        "prm": {**labels, **prm, "near_miss": near_misses},
        "best_of_n": best,
        "grpo": _grpo_report(run, steps, before.accuracy) | {
            "own_prompts_accuracy": own_after.accuracy,
            "own_prompts_count": own_after.count},
        "grpo_process": _grpo_report(process_run, process_steps, before.accuracy) | {
            "process_weight": PROCESS_WEIGHT, "process_placement": PROCESS_PLACEMENT},
        "improvement": after - before.accuracy,
        "improvement_process": after_process - before.accuracy,
        "improvement_best_of_n": (best["accuracy"][BEST_OF_N_PICK]
                                  - best["accuracy"]["greedy"]),
        "timings": timings,
        "settings": {
            "quick": quick,
            "seed": seed,
            "rollout_seed": rollout,
            "scale": scale,
            "model_size": MODEL_SIZE,
            "n_train_questions": example.n_train,
            "n_rl_questions": example.n_rl,
            "n_dev_questions": example.n_dev,
            "sft_config": str(SFT_CONFIG),
            "grpo": to_plain(config),
            "grpo_process_overrides": {"reward.reward_manager.name": "sql_prm",
                                       PROCESS_WEIGHT_KEY: PROCESS_WEIGHT},
            "label": {**LABEL_SETTINGS, "questions": LABEL_QUESTIONS[scale]},
            "prm_train": prm_train_settings(quick),
        },
        "environment": describe_environment(device),
    }
    report_json, report_png = (output_dir / f"{Path(name).stem}{suffix}{Path(name).suffix}"
                               for name in (REPORT_JSON, REPORT_PNG))
    atomic_write_json(report_json, report)
    plot_report(report, {"outcome": steps, "outcome + process": process_steps}, report_png)
    echo(summary_table(report))
    return report


def _write_if_changed(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` unless it holds it already: a rewritten data file makes SFT and
    the PRM train again (they compare the data's time with their result's)."""
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return path


def _last_dev(run_dir: Path) -> list[float]:
    """Each dev prompt's result at a run's last dev evaluation (its dev.jsonl)."""
    return json.loads((run_dir / "dev.jsonl").read_text().splitlines()[-1])["dev/per_prompt"]


def _grpo_report(run: Any, steps: list[dict[str, Any]], before: float) -> dict[str, Any]:
    return {
        "dev_accuracy": run.final_dev_accuracy,
        "dev_history": [[0, before], *[[s, a] for s, a in run.dev_history]],
        "steps": run.global_step,
        "reward_mean_first": steps[0]["reward/mean"] if steps else None,
        "reward_mean_last": steps[-1]["reward/mean"] if steps else None,
        # outcome accuracy on the run's own samples, and (process runs) the PRM's mean step
        # score: the two side by side show whether the policy pleases the PRM without answering
        "accuracy_first": steps[0].get("accuracy") if steps else None,
        "accuracy_last": steps[-1].get("accuracy") if steps else None,
        "prm_step_score_first": steps[0].get("prm_step_score") if steps else None,
        "prm_step_score_last": steps[-1].get("prm_step_score") if steps else None,
        "grad_norm_max": max((r.get("actor/grad_norm") or 0.0 for r in steps), default=0.0),
        "groups_with_variance": sum(r.get("reward/groups_with_variance") or 0 for r in steps),
        "model_dir": str(run.final_model_dir),
        "metrics": str(run.metrics_path),
    }


def label_steps(example: Any, policy_dir: Path, out_dir: Path, *, scale: str, seed: int,
                device: str) -> dict[str, Any]:
    """``rewardsql rm label``'s work: the policy's answers to the first rl questions (train
    questions with ``--quick``), every step labelled by execution; the labels split by question
    into PRM training and held-out files."""
    from rewardsql_sql_reward.prm.label import LabelSettings, run_label
    from rewardsql_sql_reward.prm.policy import Policy, load_questions

    source = example.train_parquet if scale == "quick" else example.rl_parquet  # QUICK_SFT
    questions = load_questions(source, example.db_root)[:LABEL_QUESTIONS[scale]]
    settings = LabelSettings(**LABEL_SETTINGS, seed=seed)
    policy = Policy(policy_dir, device=device, max_new_tokens=settings.max_new_tokens)
    labels = out_dir / "labels.jsonl"
    started = time.perf_counter()
    report = run_label(policy, questions, example.db_root, labels, settings, progress=False)
    lines = [json.loads(line) for line in labels.read_text(encoding="utf-8").splitlines()]
    held = {q.question_id for q in questions[:round(len(questions) * HELD_OUT_FRACTION)]}
    train, held_out = out_dir / "labels_train.jsonl", out_dir / "labels_held_out.jsonl"
    for path, keep in ((train, False), (held_out, True)):
        _write_if_changed(path, "".join(json.dumps(line) + "\n" for line in lines
                                        if (line["question_id"] in held) == keep))
    return {"labels": str(labels), "labels_train": str(train), "labels_held_out": str(held_out),
            "questions": len(questions), "responses": len(lines),
            "steps": report.positive + report.negative, "positive_steps": report.positive,
            "negative_steps": report.negative, "rollouts": report.rollouts,
            "label_seconds": round(time.perf_counter() - started, 2)}


def prm_train_settings(quick: bool) -> dict[str, Any]:
    """The PRM settings of the demo at its scale (``PRM_TRAIN``, with ``QUICK_PRM`` for
    ``--quick``), as report.json records them."""
    return {**PRM_TRAIN, **(QUICK_PRM if quick else {})}


def train_prm(init_dir: Path, labels: dict[str, Any], out_dir: Path, *, device: str,
              overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``rewardsql rm train``'s work: the PRM, from the SFT model, on the training labels
    (``PRM_TRAIN``, then ``overrides``); its held-out step accuracy, first-error accuracy and
    AUC."""
    from rewardsql.training.prm.config import PRMConfig
    from rewardsql.training.prm.trainer import run_prm

    config = PRMConfig.from_dict({
        **PRM_TRAIN, "model_name_or_path": str(init_dir), "train_file": labels["labels_train"],
        "eval_file": labels["labels_held_out"], "output_dir": str(out_dir / "model"),
        "device": device, **(overrides or {})})
    result = run_prm(config)
    held_out = result.evaluations[-1] if result.evaluations else {}
    return {"model_dir": str(result.output_dir), "train_steps": result.steps,
            "train_examples": result.n_examples, "train_cut_steps": result.cut_steps,
            "train_loss_first": result.first_loss,
            "train_loss_final": result.final_loss, "held_out": held_out}


def best_of_n(example: Any, policy_dir: Path, prm_dir: str, out_dir: Path, count: int, *,
              seed: int, device: str, temperature: float = 1.0) -> dict[str, Any]:
    """``rewardsql rerank``'s work on the first ``count`` dev questions: N samples of the SFT
    policy each (at ``temperature``), picked by the PRM (and by vote), beside greedy and
    pass@N."""
    from rewardsql_sql_reward.prm.policy import Policy, load_questions
    from rewardsql_sql_reward.prm.rerank import RerankSettings, run_rerank

    questions = load_questions(example.dev_parquet, example.db_root)[:count]
    settings = RerankSettings(n=BEST_OF_N, max_new_tokens=LABEL_SETTINGS["max_new_tokens"],
                              seed=seed, temperature=temperature)
    policy = Policy(policy_dir, device=device, temperature=temperature,
                    max_new_tokens=settings.max_new_tokens)
    summary = run_rerank(questions, example.db_root, Path(prm_dir), out_dir, settings,
                         policy=policy, device=device, progress=False)
    return {"n": BEST_OF_N, "questions": summary["questions"],
            "accuracy": summary["accuracy"], "all_failed": summary["all_failed"],
            "summary": str(out_dir / "summary.json")}


def _per_template(dev_json: Path, sft: list[float], grpo: list[float], grpo_process: list[float]
                  ) -> dict[str, dict[str, float]]:
    """Greedy dev accuracy per template after SFT and after each GRPO run (the evaluated dev
    prompts are the first ones of dev.json, in order)."""
    templates = [q["template"] for q in json.loads(dev_json.read_text())][:len(sft)]
    out: dict[str, dict[str, float]] = {}
    for template in sorted(set(templates)):
        idx = [i for i, t in enumerate(templates) if t == template]
        out[template] = {"n": len(idx), **{
            stage: sum(values[i] for i in idx) / len(idx)
            for stage, values in (("sft", sft), ("grpo", grpo), ("grpo_process", grpo_process))}}
    return out


#: The bars of the report's plot: (label, where the figure is in the report).
STAGES = (("SFT\n(greedy)", ("sft", "dev_accuracy")),
          (f"PRM@{BEST_OF_N}\n(PRM-weighted vote)", ("best_of_n", "accuracy", BEST_OF_N_PICK)),
          (f"majority\n@{BEST_OF_N}", ("best_of_n", "accuracy", "majority_vote")),
          ("GRPO\noutcome", ("grpo", "dev_accuracy")),
          ("GRPO outcome\n+ process", ("grpo_process", "dev_accuracy")))


def stage_accuracy(report: Mapping[str, Any], where: tuple[str, ...]) -> float:
    node: Any = report
    for key in where:
        node = node[key]
    return float(node)


def plot_report(report: Mapping[str, Any], runs: Mapping[str, list[dict[str, Any]]],
                path: Path) -> None:
    """Three panels: mean training reward per step of each GRPO run; each run's outcome accuracy
    on its own samples beside the process run's mean PRM step score (a policy that learned to
    please the PRM without answering better would show its PRM score rising alone); dev accuracy
    per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.4))
    for axis in (left, middle):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("GRPO step")
        axis.grid(alpha=0.3)
    for (name, steps), color in zip(runs.items(), ("tab:blue", "tab:green"), strict=False):
        x = [r["step"] for r in steps]
        left.plot(x, [r["reward/mean"] for r in steps], marker=".", color=color,
                  label=f"GRPO, {name} rewards")
        middle.plot(x, [r.get("accuracy") for r in steps], marker=".", color=color,
                    label=f"{name}: outcome accuracy")
        if any("prm_step_score" in r for r in steps):
            middle.plot(x, [r.get("prm_step_score") for r in steps], marker="x", ls="--",
                        color=color, label=f"{name}: mean PRM step score")
    left.set_ylabel("mean reward of the step's samples")
    left.set_ylim(bottom=0)  # a change of 0.1 looks like what it is
    left.set_title("Training reward")
    left.legend(loc="upper left")
    middle.set_ylabel("on the step's own samples")
    middle.set_title("Outcome accuracy and PRM score")
    middle.set_ylim(0, 1.05)
    middle.legend(loc="lower right", fontsize="small")
    labels = [label for label, _ in STAGES]
    values = [stage_accuracy(report, where) for _, where in STAGES]
    bars = right.bar(labels, values, color=["tab:gray", "tab:purple", "tab:olive",
                                            "tab:blue", "tab:green"])
    right.bar_label(bars, fmt="%.3f")
    right.set_ylabel("dev execution accuracy")
    right.set_title(f"Dev accuracy by stage ({report['sft']['dev_count']} questions)")
    right.set_ylim(0, 1.05)
    right.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


def _near_miss_rows(template: str, value: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Two rows of the summary for a planted near-miss: the share of its steps flagged, and of
    the same step written right passed, by the PRM's training labels (when the report has them),
    on the teacher's demonstrations and on best-of-N samples (of the scored steps of all)."""
    def share(steps: Mapping[str, Any], key: str) -> str:
        figure = "-" if steps[key] is None else f"{steps[key]:.2f}"
        return f"{figure} ({steps['n']} of {steps['n'] + steps['unscored']})"

    sources = [("labels", value["labels"], "right_step")] if "labels" in value else []
    sources += [("PRM teacher", value["teacher"], "clean"),
                ("PRM samples", value["policy"], "right_step")]
    names = " / ".join(name for name, *_ in sources)
    return [(f"{template} near-miss flagged: {names}",
             " / ".join(share(part["near_miss"], "flagged") for _, part, _ in sources)),
            (f"{template} right step passed: {names}",
             " / ".join(share(part[right], "passed") for _, part, right in sources))]


def summary_table(report: Mapping[str, Any]) -> str:
    """The printed summary: the teacher, accuracy per stage, the PRM, where the time went."""
    t = report["timings"]
    teacher = report["teacher"]
    prm = report["prm"]
    held = prm.get("held_out") or {}
    rows = [
        *[(f"SFT teacher's near-miss in {name}", f"{teacher['error_rate']:.0%}: {m['kind']}")
          for name, m in teacher["near_misses"].items()],
        *[(f"dev {name} (n={v['n']}): SFT -> GRPO outcome / + process",
           f"{v['sft']:.2f} -> {v['grpo']:.2f} / {v['grpo_process']:.2f}")
          for name, v in report["dev_per_template"].items() if name in teacher["near_misses"]],
        *[(f"dev accuracy: {label.replace(chr(10), ' ')}",
           f"{stage_accuracy(report, where):.3f}") for label, where in STAGES],
        (f"dev pass@{BEST_OF_N} (sampled)",
         f"{report['best_of_n']['accuracy'][f'pass@{BEST_OF_N}']:.3f}"),
        ("dev questions evaluated", str(report["sft"]["dev_count"])),
        ("PRM labels: steps (+ / -)",
         f"{prm['steps']} ({prm['positive_steps']} / {prm['negative_steps']})"),
        ("PRM held-out step accuracy", f"{held.get('step_accuracy', float('nan')):.3f}"),
        *[row for name, v in prm.get("near_miss", {}).items() for row in _near_miss_rows(name, v)],
        ("GRPO's own prompts: SFT -> GRPO outcome",
         f"{report['sft']['own_prompts_accuracy']:.3f} -> "
         f"{report['grpo']['own_prompts_accuracy']:.3f}"),
        ("GRPO steps (each run)", str(report["grpo"]["steps"])),
        ("CPU", str(report["environment"].get("cpu"))),
        ("CPU math", cpu_math_label(report["environment"].get("cpu_math") or {})),
        ("torch threads", str(report["environment"].get("torch_threads"))),
        *[(f"time: {name.removesuffix('_s').replace('_', ' ')}", f"{seconds:.0f} s")
          for name, seconds in t.items()],
    ]
    width = max(len(name) for name, _ in rows)
    values = max(10, *(len(value) for _, value in rows))
    line = "-" * (width + values + 4)
    body = "\n".join(f"{name:<{width}}  {value:>{values}}" for name, value in rows)
    return f"{line}\n{body}\n{line}"
