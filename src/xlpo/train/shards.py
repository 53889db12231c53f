"""Models that FSDP2 shards from the start: no process ever holds one whole, not even while loading.

Each process builds the model on the meta device (shapes without values; buffers such as rotary
frequencies are computed as usual), adds its adapters (real tensors, drawn exactly as on one
process), lets FSDP2 shard it with Accelerate's units and policy, allocates only its own rows of
every weight and reads just those rows from the checkpoint's safetensors files. A process's peak is
its shard of the weights plus the rows of one weight being read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from accelerate import init_empty_weights
from accelerate.utils import fsdp2_prepare_model
from safetensors import safe_open
from torch.distributed.tensor import Shard
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.utils.hub import cached_file, get_checkpoint_shard_files

from xlpo.errors import UserError
from xlpo.models import hub_kwargs, resolve_dtype, resolve_model_path

CHECKPOINT_ATTR = "xlpo_checkpoint"  # set on a skeleton: the Checkpoint its weights are read from


class Checkpoint:
    """A model's safetensors files: which file holds each tensor, and reading a tensor or some of its rows."""

    def __init__(self, name_or_path: str):
        self.name = name_or_path
        kwargs = hub_kwargs(name_or_path)
        index = cached_file(name_or_path, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False,
                            **kwargs)
        if index is not None:
            files, _ = get_checkpoint_shard_files(name_or_path, index, **kwargs)
            by_name = {Path(f).name: f for f in files}
            weight_map = json.loads(Path(index).read_text())["weight_map"]
            self.files = {key: by_name[file] for key, file in weight_map.items()}
            return
        single = cached_file(name_or_path, "model.safetensors", _raise_exceptions_for_missing_entries=False, **kwargs)
        if single is None:
            raise UserError(f"model '{name_or_path}': FSDP2 reads each process's share of the weights from "
                            "safetensors files, and it has none (model.safetensors or its index)")
        with safe_open(single, framework="pt") as f:
            self.files = {key: single for key in f.keys()}

    def __contains__(self, key: str) -> bool:
        return key in self.files

    def dtype(self, key: str) -> str:
        """The tensor's dtype as the file stores it (safetensors' name: F32, BF16, ...)."""
        with safe_open(self.files[key], framework="pt") as f:
            return f.get_slice(key).get_dtype()

    def read(self, key: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """The tensor `key`, or only its rows [start, stop) (read from the file alone, not the whole tensor)."""
        with safe_open(self.files[key], framework="pt") as f:
            if rows is None:
                return f.get_tensor(key)
            return f.get_slice(key)[rows[0]:rows[1]]


def skeleton(name_or_path: str, dtype: str, trust_remote_code: bool = False, attn_implementation: str | None = None):
    """The model of `name_or_path` with its weights on the meta device (no memory) and its buffers computed,
    remembering the checkpoint its weights come from. `shard` gives each process its rows."""
    path = resolve_model_path(name_or_path)
    checkpoint = Checkpoint(path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **hub_kwargs(path))
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(dtype),
                                                 trust_remote_code=trust_remote_code, **kwargs)
    setattr(model, CHECKPOINT_ATTR, checkpoint)
    return model


def is_skeleton(model) -> bool:
    return getattr(model, CHECKPOINT_ATTR, None) is not None and any(p.is_meta for p in model.parameters())


def checkpoint_key(name: str) -> str:
    """The checkpoint's name for a model tensor; under PEFT, that of the base layer it wraps."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def whole_tensor(model, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` (model's tensor `name`) with its values: read from the checkpoint while it is still a skeleton's."""
    if not tensor.is_meta:
        return tensor
    return getattr(model, CHECKPOINT_ATTR).read(checkpoint_key(name)).to(tensor.dtype)


def shard(accelerator, model):
    """Shard a skeleton with FSDP2 (Accelerate's units and mixed-precision policy) and fill in each process's
    rows of every weight from the checkpoint; real tensors (adapters, buffers) keep their values. Collective."""
    checkpoint = getattr(model, CHECKPOINT_ATTR)
    sharded = fsdp2_prepare_model(accelerator, model)
    tensors = dict(sharded.named_parameters()) | dict(sharded.named_buffers())
    from_checkpoint = [name for name, tensor in tensors.items() if _local(tensor).is_meta]
    missing = [checkpoint_key(name) for name in from_checkpoint if checkpoint_key(name) not in checkpoint]
    if missing:
        raise UserError(f"model '{checkpoint.name}': its checkpoint has no tensor '{missing[0]}' (FSDP2 reads each "
                        "process's rows by name; a checkpoint whose names differ from the model's cannot be read so)")
    kept = {name: _local(tensor).detach().clone() for name, tensor in tensors.items() if name not in from_checkpoint}
    sharded.to_empty(device=accelerator.device)  # allocates each process's rows, nothing more
    tensors = dict(sharded.named_parameters()) | dict(sharded.named_buffers())
    with torch.no_grad():
        for name, value in kept.items():
            _local(tensors[name]).copy_(value)
        for name in from_checkpoint:
            _fill_rows(tensors[name], checkpoint, checkpoint_key(name))
    return sharded


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor: the local shard of an FSDP2 DTensor, or the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "device_mesh") else tensor


def _fill_rows(tensor: torch.Tensor, checkpoint: Checkpoint, key: str) -> None:
    local = _local(tensor)
    if local is tensor:  # not sharded (e.g. a persistent buffer): whole
        local.copy_(checkpoint.read(key))
        return
    if tensor.placements != (Shard(0),):
        raise RuntimeError(f"{key}: expected FSDP2's row sharding, got {tensor.placements}")
    start, stop = _rows(tensor.shape[0], tensor.device_mesh.get_local_rank(), tensor.device_mesh.size())
    if local.shape[0] != stop - start:
        raise RuntimeError(f"{key}: expected rows {start}:{stop} here, the shard has {local.shape[0]}")
    if stop > start:
        local.copy_(checkpoint.read(key, (start, stop)))


def _rows(total: int, rank: int, world: int) -> tuple[int, int]:
    """The rows FSDP2 gives process `rank` of `world`: torch.chunk's split (ceil-sized chunks, maybe empty ones)."""
    size = math.ceil(total / world)
    start = min(rank * size, total)
    return start, min(start + size, total)
