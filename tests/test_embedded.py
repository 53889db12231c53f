"""Integration: every loss trains with LoRA on the embedded SmolLM2-135M-Instruct (marked: slower)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xlpo.logprobs import completion_logprobs, naive_completion_logprobs
from xlpo.models import load_model, load_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"
pytestmark = pytest.mark.integration


@pytest.mark.parametrize("loss", ["dpo", "ipo", "simpo", "dpo_nll", "capo", "kto"])
def test_cli_trains_each_loss_with_lora_on_the_embedded_model(tmp_path, loss):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "xlpo", "train", "model.name_or_path=embedded", f"data.train={FIXTURE}",
           f"loss.name={loss}", f"training.output_dir={out}", "training.batch_size=2", "training.max_steps=2",
           "training.learning_rate=1e-4", f"reference.cache_dir={tmp_path / 'ref'}", "training.progress=false"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained 2 steps" in done.stdout
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(math.isfinite(m["loss"]) for m in metrics)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_chunked_logprobs_match_full_logits_on_the_embedded_model():
    """SmolLM2 ties its output layer to the embeddings: gradients reach them through both paths.

    In float64, so that the comparison checks the algorithm, not fp32 rounding over 49k logits."""
    tokenizer = load_tokenizer("embedded")
    model = load_model("embedded", dtype="float32").to(torch.float64)
    prompt = tokenizer("Translate to German: good morning", add_special_tokens=False).input_ids
    answer = tokenizer("Guten Morgen<|im_end|>", add_special_tokens=False).input_ids
    ids = torch.tensor([prompt + answer])
    mask = torch.ones_like(ids)
    completion = torch.zeros_like(ids, dtype=torch.bool)
    completion[0, len(prompt):] = True
    emb = model.get_input_embeddings().weight
    got = completion_logprobs(model, ids, mask, completion, chunk_size=3)
    (g_got,) = torch.autograd.grad(got.sum.sum(), [emb])
    want = naive_completion_logprobs(model, ids, mask, completion)
    (g_want,) = torch.autograd.grad(want.sum.sum(), [emb])
    torch.testing.assert_close(got.sum, want.sum, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(g_got, g_want, atol=1e-9, rtol=1e-7)
    # A correct translation is more likely than a wrong one even for this small model.
    assert got.sum.item() < 0


def test_a_cold_and_a_warm_model_cache_give_the_same_run(tmp_path):
    """The first run in a fresh XLPO_CACHE converts the GGUF (drawing from the RNG after the seed is
    set); it must train exactly like the second run, which loads the converted model."""
    env = {**os.environ, "XLPO_CACHE": str(tmp_path / "cache")}
    runs = []
    for name in ("cold", "warm"):
        out = tmp_path / name
        cmd = [sys.executable, "-m", "xlpo", "train", "model.name_or_path=embedded", f"data.train={FIXTURE}",
               "loss.name=dpo", "data.limit=4", f"training.output_dir={out}", "training.batch_size=2",
               "training.max_steps=2", "training.learning_rate=1e-4", "training.warmup_ratio=0",
               "training.progress=false"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        runs.append(([{k: v for k, v in m.items() if k not in ("tokens_per_second", "step_seconds")} for m in metrics],
                     load_file(str(out / "adapter" / "adapter_model.safetensors"))))
    assert (tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct" / "config.json").is_file()
    (cold_metrics, cold_adapter), (warm_metrics, warm_adapter) = runs
    assert cold_metrics == warm_metrics
    assert all(torch.equal(cold_adapter[k], warm_adapter[k]) for k in cold_adapter)
