"""Reference log-probs computed once and cached on disk, keyed by base model and exact token ids.

The reference of every xlpo run is the base model (LoRA: adapter disabled; full fine-tuning:
the initial weights), so one cache entry serves DPO, DPO+NLL, IPO and every alpha of a sweep
on the same data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from xlpo.data.batching import collate_pairs, prompt_sharing_blocker
from xlpo.data.tokenize import TokenizedPair
from xlpo.fileio import atomic_path
from xlpo.logprobs import sequence_logprobs


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


@torch.no_grad()
def compute_reference_logps(model, pairs: list[TokenizedPair], pad_id: int, batch_size: int, device,
                            chunk_size: int | None = None, shard: tuple[int, int] = (0, 1),
                            share_prompt: bool = False) -> torch.Tensor:
    """(N, 2) summed log-probs of chosen and rejected for this process's shard (others left 0).

    With `share_prompt` (and a model whose attention allows it) each pair's prompt is computed once.
    """
    rank, world = shard
    share_prompt = share_prompt and prompt_sharing_blocker(model, pairs) is None
    out = torch.zeros(len(pairs), 2, dtype=torch.float32)
    mine = sorted(range(rank, len(pairs), world), key=lambda i: pairs[i].length)
    was_training = model.training
    model.eval()
    for start in range(0, len(mine), batch_size):
        idx = mine[start:start + batch_size]
        batch = collate_pairs(pairs, idx, pad_id, 1.0, share_prompt=share_prompt)
        logps = sequence_logprobs(model, batch.rows.to(device), chunk_size)
        sums = logps.sum.float().cpu()
        out[idx, 0] = sums[:len(idx)]
        out[idx, 1] = sums[len(idx):]
    model.train(was_training)
    return out


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
