"""The local GRPO engine end to end: real example data, a real tiny model, the real SQL verifier
and the real advantage plugin; checkpoints and resume; metrics.jsonl."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from _engine_helpers import build_fixture, engine_config
from rewardsql_sql_reward.verifier.sql_verifier import STATUSES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_thread():
    # The tiny model's matrices are small: one thread is several times faster on shared cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory, one_thread):
    return build_fixture(tmp_path_factory.mktemp("engine"))


@pytest.fixture(scope="module")
def first_run(fixture, tmp_path_factory):
    from rewardsql.training.local.local import run_local

    out = tmp_path_factory.mktemp("run")
    result = run_local(engine_config(fixture), out)
    return result, out


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_trains_with_the_real_plugins(first_run):
    result, out = first_run
    assert result.global_step == 2 and result.total_steps == 2
    records = _records(out)
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert math.isfinite(record["actor/loss"]) and math.isfinite(record["actor/pg_loss"])
        assert math.isfinite(record["actor/kl_loss"]) and record["actor/entropy"] > 0
        # 2 prompts x 6 responses, each with exactly one verifier status
        assert sum(v for k, v in record.items() if k.startswith("status/")) == 12
        assert 0.0 <= record["accuracy"] <= 1.0
    # the partly trained policy answers some samples right and some wrong: within-group variance
    assert max(r["reward/groups_with_variance"] for r in records) > 0
    assert any(r["advantage/std"] > 0 for r in records)
    # the model moved, the final model is loadable
    from transformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(result.final_model_dir)
    assert final.config.model_type == "qwen2"
    # dev accuracy at the end (test_freq -1 still evaluates the last step)
    assert [s for s, _ in result.dev_history] == [2]
    # both training prompts in each of the two steps (one batch of 2 per epoch), reshuffled
    assert len(result.trained_prompts) == 4
    assert sorted(result.trained_prompts[:2]) == sorted(result.trained_prompts[2:]) == [0, 1]
    assert json.loads((out / "dev.jsonl").read_text().splitlines()[-1])["dev/count"] == 4
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_metrics_have_the_documented_keys(first_run):
    from rewardsql.training.local.metrics import STEP_KEYS

    _, out = first_run
    for record in _records(out):
        assert set(STEP_KEYS) <= set(record)
        extra = set(record) - set(STEP_KEYS)
        counts = {k for k in extra if k.startswith("status/")}
        # the rest: the means of sql_verifier's numeric extra, by the names verl reports
        assert counts and extra - counts == {"acc", "sql_seconds", *(
            f"status_{s}" for s in STATUSES)}
        assert record["acc"] == record["accuracy"]
        for key in counts:
            assert record[f"status_{key.removeprefix('status/')}"] == record[key] / 12
        assert record["perf/tokens_per_s"] > 0
        assert 0 < record["response_length/mean"] <= 40


def test_checkpoint_resumes_to_the_same_step_and_optimizer_state(first_run, fixture, tmp_path):
    from rewardsql.training.local import checkpoint as ckpt
    from rewardsql.training.local.local import run_local

    _, out = first_run
    root = out / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["global_step_1", "global_step_2"]
    assert ckpt.latest_checkpoint(root).name == "global_step_2"
    # a second run that was interrupted after step 1: only that checkpoint exists
    resumed_out = tmp_path / "resumed"
    shutil.copytree(root / "global_step_1", resumed_out / "checkpoints" / "global_step_1")
    (resumed_out / "metrics.jsonl").write_text(
        (out / "metrics.jsonl").read_text().splitlines()[0] + "\n")

    # the optimizer state it restores is the one saved at step 1: two mini-batches per step
    saved = torch.load(root / "global_step_1" / "optimizer.pt", weights_only=False)
    assert saved["state"] and all(s["step"].item() == 2 for s in saved["state"].values())

    resumed = run_local(engine_config(fixture), resumed_out)
    assert resumed.resumed_from == resumed_out / "checkpoints" / "global_step_1"
    assert resumed.global_step == 2
    assert resumed.trained_prompts == first_run[0].trained_prompts
    # deterministic on CPU: step 2 after resuming equals step 2 of the uninterrupted run
    first, again = _records(out), _records(resumed_out)
    assert [r["step"] for r in again] == [1, 2]
    for key in ("reward/mean", "actor/loss", "actor/kl_loss", "advantage/std"):
        assert again[1][key] == pytest.approx(first[1][key], rel=1e-5, abs=1e-7), key
    a = torch.load(root / "global_step_2" / "optimizer.pt", weights_only=False)
    b = torch.load(resumed_out / "checkpoints" / "global_step_2" / "optimizer.pt",
                   weights_only=False)
    for key, state in a["state"].items():
        assert b["state"][key]["step"].item() == state["step"].item() == 4
        torch.testing.assert_close(b["state"][key]["exp_avg"], state["exp_avg"])
        torch.testing.assert_close(b["state"][key]["exp_avg_sq"], state["exp_avg_sq"])
    from safetensors.torch import load_file

    wa = load_file(root / "global_step_2" / "model" / "model.safetensors")
    wb = load_file(resumed_out / "checkpoints" / "global_step_2" / "model" / "model.safetensors")
    for name, tensor in wa.items():
        torch.testing.assert_close(wb[name], tensor)


def test_resume_disable_starts_afresh(first_run, fixture, tmp_path):
    from rewardsql.training.local import checkpoint as ckpt

    _, out = first_run
    # a finished run resumed with 'auto' has nothing left to do and keeps its metrics
    from rewardsql.training.local.local import run_local

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    again = run_local(engine_config(fixture), copy)
    assert again.resumed_from == copy / "checkpoints" / "global_step_2"
    assert again.global_step == 2
    assert len(_records(copy)) == 2
    assert ckpt.load_state(again.resumed_from).global_step == 2
    # run.json keeps the first start and adds the resumed one, at the step it resumed from
    starts = json.loads((copy / "run.json").read_text())["starts"]
    assert [(s["step"], s["resumed_from"]) for s in starts] == [
        (0, None), (2, str(copy / "checkpoints" / "global_step_2"))]


def test_run_json_records_config_and_environment(first_run, fixture):
    import torch
    from rewardsql.training.cpu_math import cpu_model, describe_cpu_math

    _, out = first_run
    run = json.loads((out / "run.json").read_text())
    assert run["config"] == engine_config(fixture)
    [start] = run["starts"]
    assert start["step"] == 0 and start["resumed_from"] is None
    env = start["environment"]
    assert env["device"] == "cpu" and env["torch"] == torch.__version__
    assert env["torch_threads"] == 1  # the module's one_thread fixture
    assert env["cpu_math"] == describe_cpu_math() and env["cpu"] == cpu_model()


def test_run_json_of_a_fresh_run_replaces_a_resumed_runs(tmp_path):
    from rewardsql.training.local.local import record_start

    path = tmp_path / "run.json"
    path.write_text("{not json")  # a damaged file does not stop a resume from recording itself
    record_start(path, {"a": 1}, device="cpu", step=3, resumed_from=tmp_path / "ckpt")
    record_start(path, {"a": 1}, device="cpu", step=5, resumed_from=tmp_path / "ckpt")
    assert [s["step"] for s in json.loads(path.read_text())["starts"]] == [3, 5]
    record_start(path, {"a": 2}, device="cpu", step=0, resumed_from=None)
    run = json.loads(path.read_text())
    assert run["config"] == {"a": 2} and [s["step"] for s in run["starts"]] == [0]


def test_evaluate_model_on_chosen_prompts(fixture):
    from rewardsql.training.local.local import evaluate_model

    # the two taught training questions (answered right) then the four dev ones (answered wrong)
    config = engine_config(fixture, data={"val_files": [str(fixture["train"]),
                                                        str(fixture["dev"])]})
    assert evaluate_model(config).count == 6
    right, wrong = (evaluate_model(config, prompt_indices=[i]) for i in (1, 4))
    assert (right.count, right.accuracy) == (1, 1.0)
    assert (wrong.count, wrong.accuracy) == (1, 0.0)
    # several chosen prompts: their mean, each scored as on its own
    chosen = [4, 0, 5, 1]
    alone = [evaluate_model(config, prompt_indices=[i]).accuracy for i in chosen]
    together = evaluate_model(config, prompt_indices=chosen)
    assert together.per_prompt == alone and together.accuracy == sum(alone) / len(alone)


@pytest.mark.parametrize("do_sample", [False, True])
def test_repeated_prompts_share_one_prompt_encoding_and_sample_the_same(fixture, do_sample,
                                                                         monkeypatch):
    from rewardsql.training.local import rollout as rollout_module
    from rewardsql.training.local.local import load_prompts
    from rewardsql.training.local.settings import read_settings
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(fixture["model"])
    model = AutoModelForCausalLM.from_pretrained(fixture["model"], dtype=torch.float32)
    settings = read_settings(engine_config(fixture))
    prompts = [p.input_ids for p in load_prompts(settings, tokenizer, val=True)[:3]]
    grouped = [p for p in prompts for _ in range(4)]  # GRPO's layout: n copies side by side

    caches = []
    real = rollout_module.shared_prompt_cache
    monkeypatch.setattr(rollout_module, "shared_prompt_cache",
                        lambda *args: caches.append(real(*args)) or caches[-1])

    def run(share: bool):
        torch.manual_seed(0)
        return rollout_module.generate(model, tokenizer, grouped, max_new_tokens=24,
                                       do_sample=do_sample, temperature=1.0, top_p=1.0, top_k=-1,
                                       share_prompts=share)

    plain, shared = run(False), run(True)
    assert len(caches) == 1 and caches[0] is not None
    assert torch.equal(plain.responses, shared.responses)
    assert torch.equal(plain.response_mask, shared.response_mask)
    # distinct prompts have nothing to share
    assert real(model, *rollout_module.left_pad(prompts, 0, torch.device("cpu"))) is None


def test_grouped_rows_share_the_prompt_pass_with_the_same_log_probs_and_gradients(fixture):
    from rewardsql.training.local import rollout as rollout_module
    from rewardsql.training.local.local import load_prompts
    from rewardsql.training.local.settings import read_settings
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(fixture["model"])
    model = AutoModelForCausalLM.from_pretrained(fixture["model"], dtype=torch.float32)
    settings = read_settings(engine_config(fixture))
    prompts = [p.input_ids for p in load_prompts(settings, tokenizer, val=True)[:3]]
    torch.manual_seed(0)
    rollout = rollout_module.generate(model, tokenizer, [p for p in prompts for _ in range(4)],
                                      max_new_tokens=24, do_sample=True, temperature=1.0,
                                      top_p=1.0, top_k=-1)
    model.train()

    def log_probs_and_grads(share: bool):
        model.zero_grad()
        log_probs, entropy = rollout_module.forward_log_probs(
            model, rollout, temperature=0.7, with_entropy=True, share_prompts=share)
        (log_probs * rollout.response_mask).sum().backward()
        return log_probs.detach(), entropy.detach(), [p.grad.clone() for p in
                                                      model.parameters()]

    shared, plain = log_probs_and_grads(True), log_probs_and_grads(False)
    valid = rollout.response_mask.bool()
    assert torch.allclose(shared[0][valid], plain[0][valid], atol=1e-4)
    assert torch.allclose(shared[1][valid], plain[1][valid], atol=1e-4)
    for a, b in zip(shared[2], plain[2], strict=True):  # summation order differs: compare norms
        assert (a - b).norm() <= 1e-3 * b.norm() + 1e-8
