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

from xlpo.fileio import atomic_path
from xlpo.models import (AttachedReference, adapter_hash, attach_reference, cache_root, frozen_copy, is_peft,
                         load_adapter, resolve_dtype, training_load_dtype)
from xlpo.pair_logps import score_pairs
from xlpo.train.distributed import all_processes, is_partitioned, prepare_frozen, whole_tensors
from xlpo.progress import Progress


def model_fingerprint(model, name_or_path: str) -> str:
    """Name, config and a hash of the first, middle and last weight tensors: cheap, and changes with the
    weights. Collective where ZeRO-3 partitioned the weights: each is hashed whole, gathered (an FSDP2
    skeleton's are read from its checkpoint)."""
    h = hashlib.sha256(name_or_path.encode())
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    names = list(model.state_dict())
    for _, tensor in whole_tensors(model, [names[0], names[len(names) // 2], names[-1]]):
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def cache_key(model_fp: str, data_fp: str, dtype: torch.dtype) -> str:
    return hashlib.sha256(f"{model_fp}|{data_fp}|{dtype}".encode()).hexdigest()[:32]


@dataclass
class Reference(AttachedReference):
    """Where reference log-probs come from while the policy trains: the attached reference (see
    `attach_reference`), with `fingerprint`, what the reference is, for the cache key, and `described`,
    what train_summary.json records.
    """

    fingerprint: str = ""
    described: dict | None = None
    prepared: bool = False

    def prepare(self, accelerator, policy) -> None:
        """Once the policy is prepared, make a separate reference model compute as it does (sharded under
        ZeRO-3 and FSDP2, in the same precision). Collective; a reference that is the policy needs nothing."""
        if not self.prepared and self.separate is not None and self.separate is not policy:
            self.separate = prepare_frozen(accelerator, self.separate)
        self.prepared = True

    def release(self, policy, sharded: bool) -> None:
        """Free what only the reference needed (after precomputing, when nothing runs it live). Under ZeRO-3
        and FSDP2 a reference adapter stays, frozen and unused: its weights are part of the sharded layers."""
        if self.adapter is not None and not sharded:
            policy.delete_adapter(self.adapter)
            self.adapter = None
        self.separate = None


def build_reference(config, policy, base_fingerprint: str, live: bool, load) -> Reference:
    """The reference `config` asks for, attached to `policy` (already wrapped in LoRA when LoRA trains).

    `base_fingerprint` is that of the policy's starting base weights (taken before LoRA wrapped them);
    `live`: the loop will run the reference during training, not only once up front; `load(name_or_path,
    dtype)`: a model loaded as the policy was (whole on this process's device, or partitioned/sharded).
    """
    m, spec = config.model, config.reference_spec()
    same_base = spec.base == m.name_or_path
    fingerprint = base_fingerprint

    def load_separate(spec):
        nonlocal fingerprint
        if same_base:
            base = _starting_weights(policy, config, load)
        else:
            base = load(spec.base, m.dtype)
            fingerprint = model_fingerprint(base, spec.base)
        separate = load_adapter(base, spec.adapter) if spec.adapter else base
        separate.requires_grad_(False)
        return separate

    if same_base and spec.adapter is None and not is_peft(policy):
        # Full fine-tuning: the policy itself is the reference until its first update.
        attached = AttachedReference(_starting_weights(policy, config, load) if live else policy, None,
                                     "a frozen copy of the starting weights")
    else:
        attached = attach_reference(policy, m.name_or_path, spec, load_separate)
    if spec.adapter:
        fingerprint += "+adapter:" + adapter_hash(spec.adapter)
    return Reference(attached.separate, attached.adapter, attached.loaded_as, fingerprint,
                     {"name_or_path": spec.base, "adapter": spec.adapter, "loaded_as": attached.loaded_as})


def _starting_weights(policy, config, load):
    """A frozen copy of the full fine-tuning policy's starting weights: copied in memory, or, where each process
    holds only part of them (ZeRO-3, FSDP2), loaded again the same way: never whole in one process."""
    if not is_partitioned(policy):
        return frozen_copy(policy)
    m = config.model
    copy = load(m.name_or_path, training_load_dtype(m.dtype, full_finetuning=True))
    copy.requires_grad_(False)
    return copy.eval()


def precomputed_logps(reference: Reference, policy, config, pairs, data_fp: str, pad_id: int, accelerator,
                      share_prompt: bool) -> tuple[torch.Tensor, str]:
    """(N, 2) reference log-probs of chosen and rejected, from the cache or computed (each process a
    share, summed across processes) and cached; and a line saying which.

    Runs once `policy` is prepared: ZeRO-3 and FSDP2 weights compute only through their engine, and the
    prepared model computes in the precision training uses. Collective.
    """
    acc = accelerator
    cache_dir = Path(config.reference.cache_dir or cache_root() / "reflogps")
    key = cache_key(reference.fingerprint, data_fp, resolve_dtype(config.model.dtype))
    cached = load_cached(cache_dir, key, len(pairs))
    # Computing is collective: every process must make the same choice, even where only some nodes
    # (a cache directory that is not shared) hold the entry.
    if all_processes(acc, cached is not None):
        return cached, f"cache {cache_dir / key}.safetensors"
    reference.prepare(acc, policy)
    # ZeRO-3 and FSDP2 gather each layer's weights from all processes in every forward pass, so every
    # process runs as many: a shorter share is topped up with pair 0, scored again and counted once.
    mine = list(range(acc.process_index, len(pairs), acc.num_processes))
    longest = -(-len(pairs) // acc.num_processes)
    with reference(policy) as module, Progress(f"reference log-probs {Path(config.training.output_dir).name}",
                                               longest, "pairs", enabled=acc.is_main_process) as progress:
        values = score_pairs(module, pairs, pad_id, max(2, 2 * config.training.batch_size),
                             config.training.logit_chunk_size, share_prompt,
                             only=mine + [0] * (longest - len(mine)), progress=progress.advance).stacked()
    if 0 not in mine:
        values[0] = 0
    values = acc.reduce(values.to(acc.device), reduction="sum").cpu()
    if acc.is_local_main_process:  # one writer per node: shared or not, every node then has the entry
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
