"""The reference model of a training run: what it is, how the loop reaches it, and its cached log-probs.

Default: the starting model's base weights (LoRA: the adapters disabled; full fine-tuning: a frozen
copy of the initial weights). `reference.name_or_path` / `reference.adapter` name another model; an
adapter on the policy's own base is loaded beside the trained one as a second, frozen PEFT adapter,
so the base weights are in memory once. Precomputed log-probs are cached on disk under a key made of
what the reference is (its base weights' fingerprint and its adapter's content hash), the exact token
ids and the dtype, so one entry serves every run (a whole alpha sweep) with the same reference and data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from xlpo.eval.pair_logps import score_pairs
from xlpo.fileio import atomic_path
from xlpo.models import (adapter_hash, cache_root, frozen_copy, is_peft, load_adapter, load_model,
                         reference_mode)
from xlpo.progress import Progress

REFERENCE_ADAPTER = "reference"  # the name of a reference adapter loaded beside the trained one


def model_fingerprint(model, name_or_path: str) -> str:
    """Name, config and a hash of the first and last weight tensors: cheap, and changes with the weights."""
    h = hashlib.sha256(name_or_path.encode())
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    params = list(model.state_dict().values())
    for tensor in (params[0], params[len(params) // 2], params[-1]):
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def cache_key(model_fp: str, data_fp: str, dtype: torch.dtype) -> str:
    return hashlib.sha256(f"{model_fp}|{data_fp}|{dtype}".encode()).hexdigest()[:32]


@dataclass
class Reference:
    """Where reference log-probs come from while the policy trains.

    `separate`: a frozen model of its own (or None); `adapter`: the name of a frozen adapter on the
    policy (or None: the policy with its adapters disabled); `fingerprint`: what the reference is,
    for the cache key; `described`: what train_summary.json records.
    """

    separate: torch.nn.Module | None
    adapter: str | None
    fingerprint: str
    described: dict

    def __call__(self, policy):
        """Context manager yielding the module that computes reference log-probs (eval mode, no grad)."""
        return reference_mode(policy, self.separate, self.adapter)

    def release(self, policy) -> None:
        """Free what only the reference needed (after precomputing, when nothing runs it live)."""
        if self.adapter is not None:
            policy.delete_adapter(self.adapter)
            self.adapter = None
        self.separate = None


def build_reference(config, policy, base_fingerprint: str, live: bool) -> Reference:
    """The reference `config` asks for, attached to `policy` (already wrapped in LoRA when LoRA trains).

    `base_fingerprint` is that of the policy's starting base weights (taken before LoRA wrapped them);
    `live`: the loop will run the reference during training, not only once up front.
    """
    m, r = config.model, config.reference
    name, adapter = r.name_or_path or m.name_or_path, r.adapter
    same_base = name == m.name_or_path
    fingerprint = base_fingerprint if same_base else None
    separate, adapter_name = None, None
    if same_base and adapter is None:
        loaded_as = "the policy's base weights with its adapters disabled" if is_peft(policy) else \
            "a frozen copy of the starting weights"
        if not is_peft(policy):
            # Full fine-tuning: the policy itself is the reference until its first update.
            separate = frozen_copy(policy) if live else policy
    elif same_base and is_peft(policy):
        load_adapter(policy, adapter, trainable=False, name=REFERENCE_ADAPTER)
        adapter_name, loaded_as = REFERENCE_ADAPTER, "a second, frozen adapter on the policy's base weights"
    else:
        base = frozen_copy(policy) if same_base else load_model(name, m.dtype, m.trust_remote_code,
                                                                m.attn_implementation)
        fingerprint = fingerprint or model_fingerprint(base, name)
        separate = load_adapter(base, adapter) if adapter else base
        separate.requires_grad_(False)
        separate.to(next(policy.parameters()).device)
        loaded_as = "a separate frozen model"
    if adapter:
        fingerprint += "+adapter:" + adapter_hash(adapter)
    return Reference(separate, adapter_name, fingerprint,
                     {"name_or_path": name, "adapter": adapter, "loaded_as": loaded_as})


def precomputed_logps(reference: Reference, policy, config, pairs, data_fp: str, pad_id: int, accelerator,
                      share_prompt: bool) -> tuple[torch.Tensor, str]:
    """(N, 2) reference log-probs of chosen and rejected, from the cache or computed (each process a
    shard, summed across processes) and cached; and a line saying which."""
    acc = accelerator
    cache_dir = Path(config.reference.cache_dir or cache_root() / "reflogps")
    key = cache_key(reference.fingerprint, data_fp, next(policy.parameters()).dtype)
    cached = load_cached(cache_dir, key, len(pairs))
    if cached is not None:
        return cached, f"cache {cache_dir / key}.safetensors"
    mine = range(acc.process_index, len(pairs), acc.num_processes)
    with reference(policy) as module, Progress(f"reference log-probs {Path(config.training.output_dir).name}",
                                               len(mine), "pairs", enabled=acc.is_main_process) as progress:
        values = score_pairs(module, pairs, pad_id, max(2, 2 * config.training.batch_size),
                             config.training.logit_chunk_size, share_prompt, only=mine,
                             progress=progress.advance).stacked()
    values = acc.reduce(values.to(acc.device), reduction="sum").cpu()
    if acc.is_main_process:
        save_cached(cache_dir, key, values, {"reference": json.dumps(reference.described), "data": data_fp})
    acc.wait_for_everyone()
    return values, f"computed, saved to {cache_dir / key}.safetensors"


def load_cached(cache_dir: Path, key: str, n: int) -> torch.Tensor | None:
    path = Path(cache_dir) / f"{key}.safetensors"
    if not path.is_file():
        return None
    values = load_file(str(path))["logps"]
    return values if values.shape == (n, 2) else None


def save_cached(cache_dir: Path, key: str, values: torch.Tensor, meta: dict) -> Path:
    path = Path(cache_dir) / f"{key}.safetensors"
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({"logps": values.contiguous()}, str(tmp), metadata={k: str(v) for k, v in meta.items()})
    return path
