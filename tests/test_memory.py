"""The memory model (train/memory.py) against what it counts, where that can be counted in one process: the
parameters of a real Llama and of its LoRA adapter, the parts each backend splits over the GPUs, and the table's
verdicts against the totals behind them."""

from __future__ import annotations

import pytest

from xlpo.models import apply_lora, load_model
from xlpo.train.memory import BACKENDS, LLAMA_31_8B, Run, fitting, reference_bytes, rows, shape_of, trained_state


def test_the_shape_counts_a_real_models_parameters_and_its_lora_adapter(tiny_model_dir):
    model = load_model(str(tiny_model_dir), "float32")
    shape = shape_of(model.config)
    assert shape.params() == sum(p.numel() for p in model.parameters())
    lora = apply_lora(model, r=4, alpha=8, dropout=0.0)
    assert shape.lora_params(4) == sum(p.numel() for p in lora.parameters() if p.requires_grad)


def test_llama_31_8b_has_its_published_size():
    assert LLAMA_31_8B.params() == 8_030_261_248  # meta-llama/Llama-3.1-8B, safetensors metadata


@pytest.mark.parametrize("full", [True, False])
def test_sharding_backends_split_what_the_others_keep_whole(full):
    """ZeRO-3 and FSDP2 hold 1/n of weights, gradients and optimizer state; DDP holds all of it on every GPU."""
    run = Run(full_finetuning=full, reference="live")
    for backend in ("zero3", "fsdp2"):
        one, eight = trained_state(LLAMA_31_8B, run, backend, 1), trained_state(LLAMA_31_8B, run, backend, 8)
        for part in one:
            assert eight[part] == pytest.approx(one[part] / 8), (backend, part)
    assert trained_state(LLAMA_31_8B, run, "ddp", 8)["weights"] == trained_state(LLAMA_31_8B, run, "ddp", 1)["weights"]
    # Full fine-tuning without a launcher: 16 bytes per parameter (fp32 weights, gradients, two Adam moments).
    if full:
        assert sum(trained_state(LLAMA_31_8B, run, "one", 1).values()) == 16 * LLAMA_31_8B.params()


def test_only_full_finetuning_with_a_live_reference_holds_a_reference_model():
    for name, run in rows():
        for backend in BACKENDS:
            held = reference_bytes(LLAMA_31_8B, run, backend, 4)
            assert (held > 0) == (run.full_finetuning and run.reference == "live"), (name, backend)


def test_full_finetuning_fits_one_gpu_never_and_eight_only_sharded():
    full = Run(full_finetuning=True, reference="precomputed")
    assert fitting(LLAMA_31_8B, full, 1, 80) == []  # 128 GB of weights and state
    assert fitting(LLAMA_31_8B, full, 8, 24) == ["fsdp2"]  # ZeRO-3's 0.93 GiB bucket tips it over
    assert fitting(LLAMA_31_8B, Run(full_finetuning=False, reference="precomputed"), 1, 24) == ["one"]
