"""Same seed, same run (whatever loading a model drew from the RNG), and the base model's dropout off
for training by default (tiny random models on the real tokenizer)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import first_fast
from safetensors.torch import load_file

import xlpo.train.distributed as loading  # the trainer loads its models through it
from xlpo.models import apply_lora, disable_dropout
from xlpo.train.config import load_config
from xlpo.train.trainer import train

FIXTURE = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"


def _config(tmp_path, model_dir, *overrides):
    return load_config(None, [
        f"model.name_or_path={model_dir}", f"data.train={FIXTURE}", f"training.output_dir={tmp_path / 'run'}",
        f"reference.cache_dir={tmp_path / 'refcache'}", "training.progress=false", "training.learning_rate=1e-3",
        "training.batch_size=4", *overrides])


def _losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # several seconds: make test-all
def test_rng_draws_while_loading_change_nothing(tmp_path, tiny_model_dir, monkeypatch):
    """The first load of the embedded model converts its GGUF with a from_config that draws from the
    global RNG after the run was seeded; LoRA init and dropout must not depend on such draws."""
    # LoRA dropout on: the dropout stream must be reproducible too.
    common = ["loss.name=capo", "lora.dropout=0.1", "training.warmup_ratio=0"]
    quiet = train(_config(tmp_path / "quiet", tiny_model_dir, *common))
    original = loading.load_model

    def drawing_load_model(*args, **kwargs):
        model = original(*args, **kwargs)
        torch.rand(1000)  # what a from_config weight initialisation does
        return model

    monkeypatch.setattr(loading, "load_model", drawing_load_model)
    noisy = train(_config(tmp_path / "noisy", tiny_model_dir, *common))
    assert _losses(noisy.output_dir) == _losses(quiet.output_dir)
    a = load_file(str(quiet.output_dir / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(noisy.output_dir / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _tiny_dropout_model(path: Path, tokenizer, family: str) -> Path:
    """A random GPT-2 or OPT (both have dropout in their base weights: modules, and floats read by attention)."""
    from transformers import GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=512, resid_pdrop=0.1,
                                           embd_pdrop=0.1, attn_pdrop=0.1, **ids))
    else:
        model = OPTForCausalLM(OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                                         max_position_embeddings=512, word_embed_proj_dim=32, dropout=0.1,
                                         attention_dropout=0.1, **ids))
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("family", first_fast(["gpt2", "opt"]))
def test_dpo_starts_at_ln2_on_a_model_with_dropout_and_the_setting_turns_it_back_on(tmp_path, tokenizer, family):
    model_dir = _tiny_dropout_model(tmp_path / family, tokenizer, family)
    common = ["loss.name=dpo", "training.max_steps=1"]
    off = train(_config(tmp_path / "off", model_dir, *common))
    assert _losses(off.output_dir)[0] == pytest.approx(math.log(2), abs=1e-6)
    on = train(_config(tmp_path / "on", model_dir, *common, "training.disable_dropout=false"))
    assert abs(_losses(on.output_dir)[0] - math.log(2)) > 1e-4


@pytest.mark.parametrize("family", ["gpt2", "opt"])
def test_disable_dropout_keeps_lora_dropout(tmp_path, tokenizer, family):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(_tiny_dropout_model(tmp_path / family, tokenizer, family))
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.05)
    disable_dropout(peft_model)
    lora, base, floats = [], [], []
    for name, module in peft_model.named_modules():
        if isinstance(module, torch.nn.Dropout):
            (lora if "lora_dropout" in name else base).append(module.p)
        floats += [v for k, v in vars(module).items() if "dropout" in k and isinstance(v, float)]
    assert lora and set(lora) == {0.05}
    assert base or floats, "the model has dropout to disable"
    assert set(base) <= {0.0} and set(floats) <= {0.0}
