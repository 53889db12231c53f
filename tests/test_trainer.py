"""End-to-end training on a tiny random Llama with the real tokenizer: every loss, LoRA and full
fine-tuning, accumulation equivalence, resume, cached reference, non-finite stop, 2 processes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import first_fast
from safetensors.torch import load_file

from xlpo.data.batching import plan_epoch
from xlpo.errors import TrainingError
from xlpo.losses import LOSSES, LossOutput, LossSpec
from xlpo.model_spec import ModelSpec
from xlpo.train.config import load_config
from xlpo.train.metrics import summarize
from xlpo.train.run import TrainRun
from xlpo.train.trainer import Trainer, train

FIXTURE = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"
LOSS_NAMES = ["dpo", "ipo", "simpo", "dpo_nll", "capo", "kto"]


def _config(tmp_path, model_dir, *overrides):
    return load_config(None, [
        f"model.name_or_path={model_dir}", f"data.train={FIXTURE}", f"training.output_dir={tmp_path / 'run'}",
        f"reference.cache_dir={tmp_path / 'refcache'}", "training.progress=false", "training.learning_rate=1e-3",
        "training.batch_size=4", *overrides])


def _metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _base_weights(model_dir):
    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_config_from_this_suite_trains_all_examples(tmp_path, tiny_model_dir):
    cfg = _config(tmp_path, tiny_model_dir, "loss.name=capo")
    result = train(cfg)
    summary = json.loads((result.output_dir / "train_summary.json").read_text())
    assert summary["pairs"] == 12 and summary["steps"] == 3
    assert {"config.yaml", "versions.json", "metrics.jsonl", "skipped.jsonl", "adapter"} <= {
        p.name for p in result.output_dir.iterdir()}
    assert (result.output_dir / "adapter" / "adapter_model.safetensors").is_file()
    run = TrainRun(result.output_dir)  # what later stages read: finished, its policy, its summary
    assert run.finished and run.policy("base") == ModelSpec("base", str(result.output_dir / "adapter"))
    assert run.summary() == summary and run.finished_with(cfg)
    versions = json.loads((result.output_dir / "versions.json").read_text())
    assert versions["torch"].startswith("2.") and versions["xlpo"] != "not installed"
    last = _metrics(result.output_dir)[-1]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected", "grad_norm", "learning_rate", "tokens_per_second", "rrm"):
        assert key in last, key
    # Per-language variants for the languages present in that step.
    assert any(k.startswith("rewards/accuracies/") for k in last)


@pytest.mark.parametrize("loss", first_fast(LOSS_NAMES))
def test_full_finetuning_changes_every_weight_tensor(tmp_path, tiny_model_dir, loss):
    cfg = _config(tmp_path, tiny_model_dir, f"loss.name={loss}", "lora.enabled=false", "training.max_steps=2",
                  "training.warmup_ratio=0")
    result = train(cfg)
    before = _base_weights(tiny_model_dir)
    after = load_file(str(result.output_dir / "model" / "model.safetensors"))
    assert set(before) == set(after)
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == [], f"{loss}: weights not updated: {unchanged}"
    assert all(math.isfinite(m["loss"]) for m in _metrics(result.output_dir))


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_lora_trains_adapter_and_leaves_base_frozen(tmp_path, tiny_model_dir, loss):
    cfg = _config(tmp_path, tiny_model_dir, f"loss.name={loss}", "training.max_steps=2", "training.warmup_ratio=0")
    trainer = Trainer(cfg)
    result = trainer.run()
    model = trainer.acc.unwrap_model(trainer.model)
    base = _base_weights(tiny_model_dir)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(torch.count_nonzero(p) > 0 for p in lora_b), "LoRA B starts at 0 and must move"
    for name, param in model.get_base_model().named_parameters():
        if "lora_" in name:
            continue
        key = name.replace(".base_layer", "")
        assert not param.requires_grad, name
        assert torch.equal(param.detach(), base[key]), f"frozen weight changed: {name}"
    saved = load_file(str(result.output_dir / "adapter" / "adapter_model.safetensors"))
    assert saved and all("lora_" in k for k in saved)


@pytest.mark.parametrize("lora", ["true", "false"])
def test_dpo_starts_at_ln2(tmp_path, tiny_model_dir, lora):
    cfg = _config(tmp_path, tiny_model_dir, "loss.name=dpo", f"lora.enabled={lora}", "training.max_steps=1",
                  "reference.precompute=false")
    result = train(cfg)
    first = _metrics(result.output_dir)[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)


def _step(trainer, plan) -> tuple[dict, list[torch.Tensor], int]:
    """One optimizer step's metrics (as the run logs them), gradients and token count at the trainer's
    current weights, for `plan`; the weights are not updated."""
    trainer.optimizer.zero_grad(set_to_none=True)
    metrics, tokens = trainer._train_step(plan)
    values, langs, mask = metrics.per_pair()
    record = summarize(metrics.names, trainer.languages, values.T, langs, mask)
    grads = [p.grad.detach().clone() for p in trainer.trainable]
    trainer.optimizer.zero_grad(set_to_none=True)
    return record, grads, tokens


def _update(trainer, grads) -> None:
    """The optimizer step the run takes with these gradients."""
    for param, grad in zip(trainer.trainable, grads):
        param.grad = grad.clone()
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("loss", ["dpo", "kto"])
def test_gradient_accumulation_matches_larger_batch(tmp_path, tiny_model_dir, loss):
    """A step's loss, KL and gradients are those of one batch of 4 however it is laid out (4x1, 1x4, 2x2):
    one setup, then each of 3 steps in every layout from the same weights, which then move by the 4x1
    step. KTO: its KL estimate is over the whole step's batch, not per micro-batch."""
    trainer = Trainer(_config(tmp_path, tiny_model_dir, f"loss.name={loss}", "lora.dropout=0", "training.batch_size=1",
                              "training.grad_accum=4", "training.warmup_ratio=0"))
    trainer.setup()
    t = trainer.config.training
    layouts = {(m, a): plan_epoch([p.length for p in trainer.pairs], m, a, 1, t.seed, 0, t.group_by_length)
               for m, a in [(4, 1), (2, 2)]}
    layouts[(1, 4)] = trainer._plan(0)  # the layout the config asks for, as the run plans it
    assert trainer.total_steps == 3 and all(len(plans) == 3 for plans in layouts.values())
    for trainer.step in range(3):
        (want, want_grads, _), *others = [_step(trainer, plans[trainer.step]) for plans in layouts.values()]
        for record, grads, _ in others:
            assert record["loss"] == pytest.approx(want["loss"], abs=1e-6)
            assert ("kl" in record) == (loss == "kto") and record.get("kl") == pytest.approx(want.get("kl"), abs=1e-6)
            for got, expected in zip(grads, want_grads):
                torch.testing.assert_close(got, expected, atol=1e-7, rtol=1e-5)
        _update(trainer, want_grads)


@pytest.mark.parametrize("loss,lora", [("dpo", True), ("capo", True), ("kto", True), ("simpo", False)])
def test_shared_prompt_rows_train_like_two_rows(tmp_path, tiny_model_dir, loss, lora):
    """Without dropout the layout changes only the arithmetic's order: same losses, log-probs, token counts
    and gradients, the live reference included. One setup, then each of 3 steps in both layouts from the
    same weights, which then move by the shared-prompt step."""
    trainer = Trainer(_config(tmp_path, tiny_model_dir, f"loss.name={loss}", f"lora.enabled={lora}", "lora.dropout=0",
                              "reference.precompute=false", "training.warmup_ratio=0"))
    trainer.setup()
    assert trainer.layout == "shared prompt"
    policy = trainer.acc.unwrap_model(trainer.model)
    for trainer.step in range(3):
        results = {}
        for share in (True, False):
            trainer.config.training.share_prompt = share
            trainer._choose_layout(policy)
            results[share] = _step(trainer, trainer._plan(0)[trainer.step])
        assert trainer.layout == "two rows"
        (shared, shared_grads, shared_tokens), (two, two_grads, two_tokens) = results[True], results[False]
        assert shared["loss"] == pytest.approx(two["loss"], abs=2e-5)
        assert shared["logps/chosen"] == pytest.approx(two["logps/chosen"], abs=1e-3)
        assert shared_tokens == two_tokens  # throughput counts both sequences' tokens either way
        for a, b in zip(shared_grads, two_grads):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-3)
        _update(trainer, shared_grads)


def test_shared_prompt_falls_back_to_two_rows_where_attention_cannot_take_the_mask(tmp_path, tiny_model_dir,
                                                                                   monkeypatch, capsys):
    import xlpo.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "prompt_sharing_blocker", lambda model, pairs: "no custom masks here")
    result = train(_config(tmp_path, tiny_model_dir, "loss.name=simpo", "training.max_steps=1"))
    assert result.summary["layout"] == "two rows (no custom masks here)"
    assert "chosen and rejected get a row each: no custom masks here" in capsys.readouterr().out


def test_resume_reaches_the_uninterrupted_result(tmp_path, tiny_model_dir, monkeypatch):
    # LoRA dropout stays on: resuming must restore the RNG as well as weights and optimizer.
    common = ["loss.name=capo", "training.batch_size=2", "training.save_steps=2", "training.epochs=2"]
    full = train(_config(tmp_path / "full", tiny_model_dir, *common))

    interrupted_cfg = _config(tmp_path / "killed", tiny_model_dir, *common)
    original = Trainer._train_step
    calls = {"n": 0}

    def dying_step(self, plan):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt  # the run is killed during step 8 (checkpoint exists at step 6)
        return original(self, plan)

    monkeypatch.setattr(Trainer, "_train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted_cfg)
    monkeypatch.setattr(Trainer, "_train_step", original)
    assert (tmp_path / "killed" / "run" / "checkpoints" / "step-0000006").is_dir()
    assert len(_metrics(tmp_path / "killed" / "run")) == 7

    resumed = train(interrupted_cfg, resume=True)
    assert json.loads((resumed.output_dir / "train_summary.json").read_text())["resumed_from_step"] == 6
    a = load_file(str(full.output_dir / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(resumed.output_dir / "adapter" / "adapter_model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=1e-5)
    full_metrics, resumed_metrics = _metrics(full.output_dir), _metrics(resumed.output_dir)
    assert [m["step"] for m in resumed_metrics] == list(range(1, 13))
    for x, y in zip(full_metrics, resumed_metrics):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6)


def test_resume_refuses_a_changed_config(tmp_path, tiny_model_dir):
    from xlpo.errors import UserError

    train(_config(tmp_path, tiny_model_dir, "loss.name=capo", "training.batch_size=2", "training.save_steps=2",
                  "training.max_steps=4"))
    with pytest.raises(UserError, match="different config"):
        train(_config(tmp_path, tiny_model_dir, "loss.name=capo", "loss.alpha=3", "training.batch_size=2",
                      "training.max_steps=4"), resume=True)


def test_reference_cache_is_reused_and_matches_live_reference(tmp_path, tiny_model_dir):
    live = train(_config(tmp_path / "live", tiny_model_dir, "loss.name=dpo", "reference.precompute=false",
                         "lora.dropout=0"))
    cached_cfg = _config(tmp_path / "cached", tiny_model_dir, "loss.name=dpo", "lora.dropout=0")
    first = train(cached_cfg)
    assert first.summary["reference"].startswith("computed")
    again = train(_config(tmp_path / "cached", tiny_model_dir, "loss.name=dpo_nll", "lora.dropout=0",
                          f"training.output_dir={tmp_path / 'again'}"))
    assert again.summary["reference"].startswith("cache")
    assert len(list((tmp_path / "cached" / "refcache").glob("*.safetensors"))) == 1
    a = load_file(str(live.output_dir / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(first.output_dir / "adapter" / "adapter_model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=1e-5)
    for x, y in zip(_metrics(live.output_dir), _metrics(first.output_dir)):
        assert x["rewards/margins"] == pytest.approx(y["rewards/margins"], abs=1e-5)


def test_non_finite_loss_stops_and_names_the_examples(tmp_path, tiny_model_dir):
    cfg = _config(tmp_path, tiny_model_dir, "loss.name=simpo", "training.batch_size=12")
    trainer = Trainer(cfg)
    real = LOSSES["simpo"]

    def poisoned(logps, **params):
        out = real.fn(logps, **params)
        losses = out.losses.clone()
        losses[3] = float("nan")
        return LossOutput(losses, out.chosen_rewards, out.rejected_rewards, out.extras)

    trainer.spec = LossSpec("simpo", poisoned, real.params)
    with pytest.raises(TrainingError) as err:
        trainer.run()
    message = str(err.value)
    assert "non-finite loss at step 1" in message and "ex-" in message
    assert not (tmp_path / "run" / "adapter").exists()


def test_skipped_examples_are_reported_by_id(tmp_path, tiny_model_dir):
    result = train(_config(tmp_path, tiny_model_dir, "loss.name=simpo", "data.max_length=60",
                           "data.max_prompt_length=59"))
    skipped = [json.loads(line) for line in (result.output_dir / "skipped.jsonl").read_text().splitlines()]
    assert skipped and all(s["id"].startswith("ex-") and "too long" in s["reason"] for s in skipped)
    assert result.summary["pairs"] == 12 - len(skipped)


@pytest.mark.distributed
@pytest.mark.parametrize("loss", ["dpo", "kto"])
def test_two_processes_match_one_process(tmp_path, tiny_model_dir, loss):
    """torchrun with 2 gloo processes x batch 2 equals 1 process x batch 4 (same global batch); for KTO
    the KL estimate is gathered across the processes."""
    common = [f"model.name_or_path={tiny_model_dir}", f"data.train={FIXTURE}", f"loss.name={loss}", "lora.dropout=0",
              "training.progress=false", "training.learning_rate=1e-3", f"reference.cache_dir={tmp_path / 'ref'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", "-m", "xlpo", "train",
                          *common, "training.batch_size=2", f"training.output_dir={tmp_path / 'two'}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = train(load_config(None, [*common, "training.batch_size=4", f"training.output_dir={tmp_path / 'one'}"]))
    a = load_file(str(tmp_path / "two" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(one.output_dir / "adapter" / "adapter_model.safetensors"))
    for name in b:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)
    two_metrics, one_metrics = _metrics(tmp_path / "two"), _metrics(one.output_dir)
    assert json.loads((tmp_path / "two" / "train_summary.json").read_text())["num_processes"] == 2
    for x, y in zip(two_metrics, one_metrics):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6)
        assert ("kl" in x) == (loss == "kto") and x.get("kl") == pytest.approx(y.get("kl"), abs=1e-6)
        assert x["pairs/en"] == y["pairs/en"] if "pairs/en" in y else True


def test_saved_adapter_loads_in_transformers_and_merges_exactly(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = train(_config(tmp_path, tiny_model_dir, "loss.name=dpo_nll", "training.max_steps=2",
                           "training.warmup_ratio=0"))
    adapter = result.output_dir / "adapter"
    ids = torch.tensor([[1, 500, 600, 700, 800, 2]])
    # transformers resolves the base model from adapter_config.json (local path: no network).
    direct = AutoModelForCausalLM.from_pretrained(adapter)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)
    with torch.no_grad():
        unmerged = peft_model(input_ids=ids).logits
        via_transformers = direct(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=ids).logits
        merged = peft_model.merge_and_unload()(input_ids=ids).logits
    torch.testing.assert_close(via_transformers, unmerged, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(base, unmerged, atol=1e-6), "the adapter should change the outputs"


@pytest.mark.parametrize("lora,own_accelerator", [(True, True), (False, False)])
def test_nothing_keeps_the_model_alive_after_train(tmp_path, tiny_model_dir, monkeypatch, lora, own_accelerator):
    """ICR starts vLLM right after train(): the trained model (and a full fine-tuning reference copy)
    must be gone by then, also when the caller passed (and keeps) its own Accelerator."""
    import weakref

    from accelerate import Accelerator

    import xlpo.train.distributed as loading  # the trainer loads the policy and any reference through it

    loaded = []
    original = loading.load_model

    def recording(*args, **kwargs):
        model = original(*args, **kwargs)
        loaded.append(weakref.ref(model))
        return model

    monkeypatch.setattr(loading, "load_model", recording)
    accelerator = None if own_accelerator else Accelerator(cpu=True)
    train(_config(tmp_path, tiny_model_dir, "loss.name=kto", f"lora.enabled={lora}", "training.max_steps=1"),
          accelerator=accelerator)
    assert loaded and all(ref() is None for ref in loaded)
    if accelerator is not None:
        assert accelerator._models == [] and accelerator._optimizers == [] and accelerator._custom_objects == []


@pytest.mark.parametrize("where", ["output_dir", "parent"])
def test_an_output_dir_that_is_a_file_is_a_one_line_error_before_anything_is_written(tmp_path, tiny_model_dir,
                                                                                      where):
    from xlpo.errors import UserError

    blocker = tmp_path / "taken"
    blocker.write_text("a file\n")
    out = blocker if where == "output_dir" else blocker / "run"
    cfg = _config(tmp_path, tiny_model_dir, "loss.name=dpo", f"training.output_dir={out}")
    with pytest.raises(UserError, match=r"^training\.output_dir: .*taken.* cannot be a directory"):
        train(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no reference cache, no run files
