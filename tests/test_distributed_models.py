"""Models at scale, on tiny random models: bf16 compute over fp32 trained weights, LoRA on image-text
models (Gemma-3), and the Accelerator `xlpo train` builds from model.dtype and the launcher's settings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xlpo.errors import UserError
from xlpo.models import apply_lora, lora_targets, mixed_precision, training_load_dtype
from xlpo.train.config import load_config
from xlpo.train.distributed import make_accelerator
from xlpo.train.trainer import train

FIXTURE = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"


def test_bf16_full_finetuning_at_a_paper_learning_rate_changes_the_weights(tmp_path, tiny_model_dir):
    """Issue 13, finding 8: bf16 weights with a bf16 AdamW state round most updates at lr 5e-7 away."""
    result = train(load_config(None, [
        f"model.name_or_path={tiny_model_dir}", f"data.train={FIXTURE}", f"training.output_dir={tmp_path / 'run'}",
        f"reference.cache_dir={tmp_path / 'ref'}", "training.progress=false", "model.dtype=bfloat16",
        "lora.enabled=false", "loss.name=dpo", "training.learning_rate=5e-7", "training.warmup_ratio=0",
        "training.max_steps=1", "training.batch_size=4"]))
    trained = load_file(str(result.output_dir / "model" / "model.safetensors"))
    base = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    for name, before in base.items():
        after = trained[name]
        assert after.dtype == torch.float32, name  # the fp32 master weights are what is saved
        if "embed_tokens" in name:  # rows of tokens absent from the batch get no gradient
            continue
        changed = (after != before).float().mean().item()
        assert changed > 0.99, f"{name}: only {changed:.2%} of the weights changed"


@pytest.mark.parametrize("precompute", ["true", "false"])
def test_bf16_full_finetuning_reference_computes_as_the_policy_does(tmp_path, tiny_model_dir, precompute):
    """Under bf16 the reference of full fine-tuning (the policy before prepare, or its frozen copy) must run
    under the autocast that `prepare` gives the policy: DPO then starts at exactly ln 2."""
    result = train(load_config(None, [
        f"model.name_or_path={tiny_model_dir}", f"data.train={FIXTURE}", f"training.output_dir={tmp_path / 'run'}",
        f"reference.cache_dir={tmp_path / 'ref'}", "training.progress=false", "model.dtype=bfloat16",
        "lora.enabled=false", "loss.name=dpo", f"reference.precompute={precompute}", "training.max_steps=1",
        "training.batch_size=4"]))
    first = json.loads((result.output_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)


def test_runs_of_different_precision_in_one_process(tmp_path, tiny_model_dir):
    """accelerate fixes the first Accelerator's precision for the whole process; xlpo trains on anyway."""
    for dtype in ("float32", "bfloat16", "float32"):
        result = train(load_config(None, [
            f"model.name_or_path={tiny_model_dir}", f"data.train={FIXTURE}", f"training.output_dir={tmp_path / dtype}",
            f"reference.cache_dir={tmp_path / 'ref'}", "training.progress=false", f"model.dtype={dtype}",
            "training.max_steps=1"]))
        assert result.summary["precision"]["compute"] == {"float32": "fp32", "bfloat16": "bf16"}[dtype]


def test_model_dtype_sets_compute_precision_and_keeps_trained_weights_fp32():
    assert mixed_precision("bfloat16") == "bf16" and mixed_precision("float16") == "fp16"
    assert mixed_precision("float32") == "no"
    assert training_load_dtype("bfloat16", full_finetuning=True) == "float32"
    assert training_load_dtype("bfloat16", full_finetuning=False) == "bfloat16"  # the frozen LoRA base


def _tiny_gemma3():
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    torch.manual_seed(0)
    config = Gemma3Config(
        text_config=dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=128),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        mm_tokens_per_image=4, boi_token_index=997, eoi_token_index=998, image_token_index=999)
    return Gemma3ForConditionalGeneration(config)


def test_all_linear_lora_adapts_only_the_language_model_of_an_image_text_model():
    """Issue 13, finding 10: Gemma-3 4B+ loads with a vision tower; text never trains LoRA weights there."""
    model = apply_lora(_tiny_gemma3())
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".language_model." in name for name in trainable)
    logits = model(input_ids=torch.randint(0, 900, (2, 12))).logits
    logits.float().logsumexp(-1).sum().backward()
    assert [name for name, p in trainable.items() if p.grad is None] == []


def test_all_linear_stays_peft_all_linear_for_a_text_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert lora_targets(model, "all-linear") == "all-linear"
    assert lora_targets(_tiny_gemma3(), ["q_proj"]) == ["q_proj"]  # an explicit choice is the user's


@pytest.mark.parametrize("variable", ["ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP"])
def test_a_sharded_backend_without_gpus_is_an_error_not_silent_ddp(monkeypatch, variable):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(variable, "true")
    with pytest.raises(UserError, match="needs CUDA GPUs"):
        make_accelerator("float32")


def test_launcher_precision_that_contradicts_model_dtype_is_an_error(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(UserError, match="model.dtype=float32"):
        make_accelerator("float32")


def test_summary_records_the_precision(tmp_path, tiny_model_dir):
    result = train(load_config(None, [
        f"model.name_or_path={tiny_model_dir}", f"data.train={FIXTURE}", f"training.output_dir={tmp_path / 'run'}",
        f"reference.cache_dir={tmp_path / 'ref'}", "training.progress=false", "model.dtype=bfloat16",
        "training.max_steps=1"]))
    summary = json.loads((result.output_dir / "train_summary.json").read_text())
    assert summary["precision"] == {"compute": "bf16", "trained_weights": "float32"}
