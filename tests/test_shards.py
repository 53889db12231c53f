"""One process, no engine: the pieces that let ZeRO-3 and FSDP2 never hold a whole model (issue 27).

FSDP2 skeletons (train/shards.py) against a model loaded whole: the same fingerprint, the same freshly drawn
LoRA adapter, each process's rows; the FSDP2 mixed-precision policy xlpo builds; and the reference pass that
leaves which parameters train as it found them (FSDP2 reads it at its first forward).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import FullyShardedDataParallelPlugin
from safetensors.torch import load_file

from conftest import make_random_adapter
from launching import free_port
from xlpo.errors import UserError
from xlpo.models import apply_lora, load_adapter, load_model, reference_mode
from xlpo.train.distributed import configure_fsdp, is_partitioned
from xlpo.train.reference import model_fingerprint
from xlpo.train.shards import Checkpoint, _rows, checkpoint_key, skeleton


def test_a_skeleton_holds_no_weights_and_fingerprints_like_the_loaded_model(tiny_model_dir):
    shell, whole = skeleton(str(tiny_model_dir), "float32"), load_model(str(tiny_model_dir), "float32")
    assert all(p.is_meta for p in shell.parameters()) and is_partitioned(shell) and not is_partitioned(whole)
    assert not any(b.is_meta for b in shell.buffers())  # rotary frequencies are computed, not loaded
    assert model_fingerprint(shell, str(tiny_model_dir)) == model_fingerprint(whole, str(tiny_model_dir))
    for (name, a), (_, b) in zip(shell.named_buffers(), whole.named_buffers()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_lora_on_a_skeleton_draws_the_adapter_of_a_loaded_model(tiny_model_dir):
    """PEFT would move a new adapter onto its meta base and lose its values; the draw must be the one-process one."""
    torch.manual_seed(3)
    on_skeleton = apply_lora(skeleton(str(tiny_model_dir), "bfloat16"), r=4, alpha=8, dropout=0.0)
    torch.manual_seed(3)
    on_model = apply_lora(load_model(str(tiny_model_dir), "bfloat16"), r=4, alpha=8, dropout=0.0)
    trained = {n: p for n, p in on_skeleton.named_parameters() if p.requires_grad}
    assert trained.keys() == {n for n, p in on_model.named_parameters() if p.requires_grad}
    expected = dict(on_model.named_parameters())
    for name, param in trained.items():
        assert not param.is_meta and param.dtype == torch.float32, name
        torch.testing.assert_close(param, expected[name], rtol=0, atol=0, msg=name)
    frozen = [p for n, p in on_skeleton.named_parameters() if n not in trained]
    assert frozen and all(p.is_meta and not p.requires_grad for p in frozen)  # the base stays meta and frozen


def test_a_saved_adapter_on_a_skeleton_keeps_its_values(tmp_path, tiny_model_dir):
    adapter = make_random_adapter(tiny_model_dir, tmp_path / "adapter", seed=5)
    on_skeleton = load_adapter(skeleton(str(tiny_model_dir), "float32"), str(adapter), trainable=True)
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    values = {n.replace(".default", ""): p for n, p in on_skeleton.named_parameters() if "lora_" in n}
    assert values.keys() == saved.keys()
    for name, value in saved.items():
        torch.testing.assert_close(values[name], value, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("total, world", [(10, 2), (7, 2), (5, 4), (1, 2), (49152, 8)])
def test_each_process_gets_torch_chunk_rows(total, world):
    """FSDP2 splits dim 0 as torch.chunk does (ceil-sized pieces, trailing ones maybe empty)."""
    pieces = torch.arange(total).chunk(world)
    for rank in range(world):
        start, stop = _rows(total, rank, world)
        expected = pieces[rank].tolist() if rank < len(pieces) else []
        assert list(range(start, stop)) == expected


def test_the_checkpoint_reads_rows_and_whole_tensors(tiny_model_dir):
    checkpoint = Checkpoint(str(tiny_model_dir))
    whole = load_file(str(tiny_model_dir / "model.safetensors"))
    key = "model.embed_tokens.weight"
    assert key in checkpoint and checkpoint.dtype(key) == "F32"
    torch.testing.assert_close(checkpoint.read(key), whole[key], rtol=0, atol=0)
    torch.testing.assert_close(checkpoint.read(key, (5, 9)), whole[key][5:9], rtol=0, atol=0)
    assert checkpoint_key("base_model.model.model.layers.0.mlp.up_proj.base_layer.weight") == \
        "model.layers.0.mlp.up_proj.weight"


def test_a_model_without_safetensors_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="safetensors"):
        Checkpoint(str(tmp_path))


@pytest.mark.parametrize("setting, summed_in", [("auto", torch.bfloat16), ("float32", torch.float32)])
def test_fsdp2_computes_in_bf16_and_sums_gradients_as_asked(setting, summed_in):
    """Item 5: training.reduce_dtype; outputs are not cast (the chunked head's fp32 log-probs stay fp32)."""
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
    plugin.set_mixed_precision("bf16")  # what Accelerate builds: bf16 parameters, sums and outputs
    accelerator = SimpleNamespace(is_fsdp2=True, mixed_precision="bf16", state=SimpleNamespace(fsdp_plugin=plugin))
    configure_fsdp(accelerator, setting)
    policy = plugin.mixed_precision_policy
    assert (policy.param_dtype, policy.reduce_dtype, policy.output_dtype) == (torch.bfloat16, summed_in, None)


def test_the_reference_pass_leaves_what_trains_as_it_was(tmp_path, tiny_model_dir):
    """Item 1: PEFT's disable_adapter and set_adapter freeze the trained adapter; FSDP2 reads requires_grad
    at its first forward, which is the reference pass when it is precomputed, and then reduces in bf16."""
    model = apply_lora(load_model(str(tiny_model_dir), "float32"), r=4, alpha=8, dropout=0.0)
    load_adapter(model, str(make_random_adapter(tiny_model_dir, tmp_path / "ref", seed=1)), name="reference")
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    assert any(before.values())
    for adapter in (None, "reference"):
        with reference_mode(model, adapter=adapter):
            assert {n: p.requires_grad for n, p in model.named_parameters()} == before
        assert {n: p.requires_grad for n, p in model.named_parameters()} == before
        assert model.active_adapter == "default"



def test_fsdp2_trains_lora_on_a_bf16_base_after_the_reference_pass(tmp_path, tiny_model_dir):
    """Item 1 as it crashed: Accelerate's bf16 FSDP2 policy, the reference pass first, then backward (in a process
    of its own: FSDP2 needs a process group). Before the fix: 'attempting to assign a gradient with dtype
    BFloat16 to a tensor with grad_dtype Float' at the first backward."""
    tests = Path(__file__).parent
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"tasks": ["lora_bf16"], "model": str(tiny_model_dir), "out": str(tmp_path),
                                "port": free_port()}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": "0",
           "PYTHONPATH": os.pathsep.join([str(tests.parent / "src"), str(tests)])}
    done = subprocess.run([sys.executable, str(tests / "sharding_worker.py"), str(spec)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "lora_bf16-0.json").read_text())
    assert result.get("error") is None, result["error"]
    assert result["grad_dtypes"] == ["torch.float32"] and result["missing"] == 0
