"""Shared test fixtures: the real data folder, the real tokenizer, tiny random models on it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def first_fast(cases: list) -> list:
    """`parametrize` cases whose first runs in the fast tier (`make test`) and the rest marked slow (`make
    test-all`): one case per property answers in minutes, every case still runs in CI."""
    return [cases[0], *(pytest.param(*(c if isinstance(c, tuple) else (c,)), marks=pytest.mark.slow)
                        for c in cases[1:])]


def _shared_data_dir() -> Path:
    return Path(os.environ.get("XLPO_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (or $XLPO_SHARED_DATA); tests that need it skip with the reason when absent."""
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}: set XLPO_SHARED_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded SmolLM2 tokenizer (real BPE, vocab 49,152, chat template)."""
    from xlpo.models import load_tokenizer

    return load_tokenizer("embedded")


def make_tiny_model_dir(path: Path, tokenizer, seed: int = 0, layers: int = 2, hidden: int = 32,
                        intermediate: int | None = None, heads: int = 4) -> Path:
    """A randomly initialised Llama on the real tokenizer, saved like any local checkpoint."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                         max_position_embeddings=512, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"), tokenizer)


def make_random_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter (r 4) with random, non-zero B on `model_dir`: base + adapter is another model than the base."""
    import torch

    from xlpo.models import apply_lora, load_model

    torch.manual_seed(seed)
    model = apply_lora(load_model(str(model_dir), "float32"), r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    model.save_pretrained(out)
    return out

