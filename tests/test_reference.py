"""The reference model as a training setting: which weights the reference really has, where it lives,
the cache key it gets, and what train_summary.json says about it (tiny random Llama, real tokenizer)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import make_random_adapter, make_tiny_model_dir
from safetensors.torch import load_file, save_file

from xlpo.data.records import load_preferences
from xlpo.data.tokenize import PairTokenizer
from xlpo.model_spec import ModelSpec
from xlpo.models import attach_reference, load_adapter, load_model, load_policy
from xlpo.pair_logps import score_pairs
from xlpo.train.config import load_config
from xlpo.train.trainer import Trainer, train

FIXTURE = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"


def _config(tmp_path, model_dir, *overrides):
    return load_config(None, [
        f"model.name_or_path={model_dir}", f"data.train={FIXTURE}", f"training.output_dir={tmp_path / 'run'}",
        f"reference.cache_dir={tmp_path / 'refcache'}", "training.progress=false", "training.learning_rate=1e-3",
        "training.batch_size=4", "lora.dropout=0", "loss.name=dpo", *overrides])


def _first_metrics(run_dir):
    return json.loads((Path(run_dir) / "metrics.jsonl").read_text().splitlines()[0])


@pytest.fixture(scope="module")
def random_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter with non-zero B: base + adapter is a different model from the base."""
    return make_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "adapter", seed=3)


def _pair_logps(model_dir, tokenizer, adapter=None) -> torch.Tensor:
    pairs, _ = PairTokenizer(tokenizer).encode_all(load_preferences(FIXTURE))
    model = load_model(str(model_dir), "float32")
    if adapter:
        model = load_adapter(model, str(adapter))
    return score_pairs(model, pairs, tokenizer.pad_token_id).stacked()


def _cached(tmp_path) -> list[torch.Tensor]:
    return [load_file(str(p))["logps"] for p in sorted((tmp_path / "refcache").glob("*.safetensors"))]


def test_one_attach_for_training_and_icr(tmp_path, tiny_model_dir, random_adapter, tokenizer):
    """`attach_reference`, which the trainer and ICR's reward scoring both call: a reference on a PEFT
    policy's own base is reached through the policy (adapters disabled, or its adapter loaded beside the
    policy's, frozen); any other is loaded by the caller. Each scores as the reference model does."""
    pairs, _ = PairTokenizer(tokenizer).encode_all(load_preferences(FIXTURE))
    other = make_tiny_model_dir(tmp_path / "other", tokenizer, seed=7)
    base = str(tiny_model_dir)
    policy = load_policy(base, str(random_adapter), "float32", "cpu")
    loaded = []

    def load(spec):
        loaded.append(spec)
        return load_policy(spec.base, spec.adapter, "float32", "cpu")

    wants = {ModelSpec(base): (_pair_logps(tiny_model_dir, tokenizer), None),
             ModelSpec(base, str(random_adapter)): (_pair_logps(tiny_model_dir, tokenizer, random_adapter), "reference"),
             ModelSpec(str(other)): (_pair_logps(other, tokenizer), None)}
    for spec, (want, adapter) in wants.items():
        attached = attach_reference(policy, base, spec, load)
        assert attached.adapter == adapter
        with attached(policy) as ref:
            torch.testing.assert_close(score_pairs(ref, pairs, tokenizer.pad_token_id).stacked(), want, atol=1e-4, rtol=0)
    assert loaded == [ModelSpec(str(other))]


@pytest.mark.parametrize("precompute", ["true", "false"])
def test_reference_adapter_on_the_same_base_is_the_starting_policy(tmp_path, tiny_model_dir, random_adapter,
                                                                   precompute):
    """model.adapter=A, reference.adapter=A (ICR's pi_ref <- pi^{t-1}): DPO starts at ln 2; with the
    default reference (the base without A) it does not."""
    cfg = _config(tmp_path, tiny_model_dir, f"model.adapter={random_adapter}", f"reference.adapter={random_adapter}",
                  f"reference.precompute={precompute}", "training.max_steps=1", "training.warmup_ratio=0")
    trainer = Trainer(cfg)
    result = trainer.run()
    first = _first_metrics(result.output_dir)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    described = result.summary["reference_model"]
    assert described == {"name_or_path": str(tiny_model_dir), "adapter": str(random_adapter),
                         "loaded_as": "a second, frozen adapter on the policy's base weights"}
    policy = trainer.acc.unwrap_model(trainer.model)
    # No second copy of the base: the reference is an adapter on the policy, kept only while it runs live.
    assert trainer.reference.separate is None
    assert set(policy.peft_config) == ({"default", "reference"} if precompute == "false" else {"default"})
    assert not any(p.requires_grad for n, p in policy.named_parameters() if ".reference." in n)
    assert all(p.requires_grad for n, p in policy.named_parameters() if ".default." in n)
    saved = load_file(str(result.output_dir / "adapter" / "adapter_model.safetensors"))
    assert saved and not any("reference" in k for k in saved)
    start = load_file(str(random_adapter / "adapter_model.safetensors"))
    assert set(saved) == set(start) and any(not torch.equal(saved[k], start[k]) for k in start), "A trained further"
    assert not (result.output_dir / "adapter" / "reference").exists()

    default = train(_config(tmp_path / "default", tiny_model_dir, f"model.adapter={random_adapter}",
                            f"reference.precompute={precompute}", "training.max_steps=1"))
    assert abs(_first_metrics(default.output_dir)["rewards/margins"]) > 1e-3
    assert default.summary["reference_model"]["loaded_as"] == "the policy's base weights with its adapters disabled"


def test_precomputed_reference_holds_the_reference_models_log_probs(tmp_path, tiny_model_dir, random_adapter,
                                                                    tokenizer):
    other = make_tiny_model_dir(tmp_path / "other", tokenizer, seed=7)
    base_only = _pair_logps(tiny_model_dir, tokenizer)
    with_adapter = _pair_logps(tiny_model_dir, tokenizer, random_adapter)
    other_model = _pair_logps(other, tokenizer)

    runs = {
        "base": [],
        "adapter": [f"reference.adapter={random_adapter}"],
        "other": [f"reference.name_or_path={other}"],
        "other+adapter": [f"reference.name_or_path={other}", f"reference.adapter={random_adapter}"],
    }
    for name, extra in runs.items():
        result = train(_config(tmp_path / name, tiny_model_dir, "training.max_steps=1", *extra))
        assert result.summary["reference"].startswith("computed")
        (values,) = _cached(tmp_path / name)
        if name == "other+adapter":
            want = _pair_logps(other, tokenizer, random_adapter)
            assert result.summary["reference_model"]["loaded_as"] == "a separate frozen model"
        else:
            want = {"base": base_only, "adapter": with_adapter, "other": other_model}[name]
        torch.testing.assert_close(values, want, atol=1e-4, rtol=0)
    assert not torch.allclose(base_only, with_adapter, atol=1e-3)  # the cases really differ
    assert not torch.allclose(base_only, other_model, atol=1e-3)


def test_cache_key_follows_what_the_reference_is(tmp_path, tiny_model_dir, random_adapter, tokenizer):
    """One cache dir: the base reference and base + adapter get separate entries; the same reference
    named by a second run is found again; a changed adapter file is a new entry."""
    common = [f"reference.cache_dir={tmp_path / 'shared'}", "training.max_steps=1"]
    first = train(_config(tmp_path / "a", tiny_model_dir, *common))
    second = train(_config(tmp_path / "b", tiny_model_dir, *common, f"reference.adapter={random_adapter}"))
    again = train(_config(tmp_path / "c", tiny_model_dir, *common, "loss.name=dpo_nll",
                          f"reference.adapter={random_adapter}"))
    assert first.summary["reference"].startswith("computed") and second.summary["reference"].startswith("computed")
    assert again.summary["reference"] == second.summary["reference"].replace("computed, saved to", "cache")
    assert len(list((tmp_path / "shared").glob("*.safetensors"))) == 2

    changed = tmp_path / "changed"
    changed.mkdir()
    for f in random_adapter.iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    weights = load_file(str(changed / "adapter_model.safetensors"))
    save_file({k: v * 2 for k, v in weights.items()}, str(changed / "adapter_model.safetensors"))
    third = train(_config(tmp_path / "d", tiny_model_dir, *common, f"reference.adapter={changed}"))
    assert third.summary["reference"].startswith("computed")
    assert len(list((tmp_path / "shared").glob("*.safetensors"))) == 3


def test_full_finetuning_with_a_reference_adapter_uses_a_separate_model(tmp_path, tiny_model_dir, random_adapter,
                                                                       tokenizer):
    result = train(_config(tmp_path, tiny_model_dir, "lora.enabled=false", f"reference.adapter={random_adapter}",
                           "training.max_steps=1"))
    assert result.summary["reference_model"]["loaded_as"] == "a separate frozen model"
    (values,) = _cached(tmp_path)
    torch.testing.assert_close(values, _pair_logps(tiny_model_dir, tokenizer, random_adapter), atol=1e-4, rtol=0)


def test_no_reference_for_reference_free_losses(tmp_path, tiny_model_dir, random_adapter):
    result = train(_config(tmp_path, tiny_model_dir, "loss.name=simpo", f"reference.adapter={random_adapter}",
                           "training.max_steps=1"))
    assert result.summary["reference"] == "none" and result.summary["reference_model"] is None
    assert not (tmp_path / "refcache").exists()
