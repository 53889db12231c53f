"""What a checkpoint's manifest (sizes + xxh3-128 checksums, docs/training.md "Checkpoints") adds to a save.

Measures the hash functions' throughput in memory, then saves a checkpoint-like folder (weights as
safetensors, an optimizer state twice their size with torch.save, as Accelerate writes them; fsync'd)
and times writing its manifest and verifying it, against the save itself. Prints the numbers and the
projection to a full fine-tuning checkpoint of an 8B model (fp32 weights 32 GB + AdamW 64 GB).

    .venv/bin/python benchmarks/checkpoint_checksums.py --gb 2 --dir /tmp/ckpt-bench
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import time
from pathlib import Path

import torch
import xxhash
from safetensors.torch import save_file

from xlpo.checksums import folder_problem, manifest_folder

EIGHT_B_CHECKPOINT_GB = 8.03 * 4 * 3  # fp32 weights + AdamW's two moments


def hash_throughput(mb: int = 256) -> dict[str, float]:
    """GB/s of each hash over `mb` MB in memory (best of 3)."""
    data = os.urandom(mb << 20)
    rates = {}
    for name, make in (("sha256", hashlib.sha256), ("blake2b", hashlib.blake2b), ("xxh3_128", xxhash.xxh3_128)):
        best = min(_timed(lambda: make(data).digest()) for _ in range(3))
        rates[name] = len(data) / best / 1e9
    return rates


def _timed(fn) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def _fsync_folder(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def save_like_accelerate(folder: Path, gb: float) -> None:
    """Weights of gb/3 GB as safetensors and an optimizer state of 2gb/3 GB with torch.save, fsync'd."""
    folder.mkdir(parents=True)
    n = int(gb / 3 * 1e9 / 4 / 16)
    weights = {f"layer{i}.weight": torch.randn(n) for i in range(16)}
    save_file(weights, str(folder / "model.safetensors"))
    state = {"state": {i: {"exp_avg": torch.randn(n), "exp_avg_sq": torch.rand(n)} for i in range(16)}}
    torch.save(state, folder / "optimizer.bin")
    _fsync_folder(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="checkpoint size in GB")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/xlpo-checkpoint-bench"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rates = hash_throughput()
    print("hash throughput in memory, one core: " + ", ".join(f"{k} {v:.2f} GB/s" for k, v in rates.items()))
    shutil.rmtree(args.dir, ignore_errors=True)
    folder = args.dir / "step-0000001"
    save = _timed(lambda: save_like_accelerate(folder, args.gb))
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e9
    manifest = _timed(lambda: manifest_folder(folder))
    verify = _timed(lambda: folder_problem(folder))
    print(f"checkpoint of {size:.2f} GB: save {save:.1f} s ({size / save:.2f} GB/s incl. fsync), "
          f"manifest {manifest:.2f} s (+{100 * manifest / save:.0f}% of the save), verify {verify:.2f} s")
    hashed = size / manifest
    print(f"8B full fine-tuning checkpoint ({EIGHT_B_CHECKPOINT_GB:.0f} GB): manifest ~{EIGHT_B_CHECKPOINT_GB / hashed:.0f} s "
          f"at this rate on one process (each process hashes its own share of a sharded checkpoint); "
          f"sha256 would take ~{EIGHT_B_CHECKPOINT_GB / rates['sha256']:.0f} s of hashing alone")
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
