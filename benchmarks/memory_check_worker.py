"""One process of `benchmarks/memory_table.py --check`: what a training process really holds, by part.

`accelerate launch --config_file CONFIG ... memory_check_worker.py SPEC` (or plain `python` for one
process) trains each run of SPEC for one step and, when the optimizer steps (gradients and optimizer
state all present), counts the bytes of every tensor storage Python can reach (gc), split into the
policy's weights (DeepSpeed's partitions and FSDP2's shards included), the reference model's, and the
rest: optimizer state, DeepSpeed's fp32 master weights, gradients and the engines' buffers. Writes
`NAME-RANK.json` into SPEC's folder. Each storage counts once; meta tensors hold none.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from distributed_worker import make_cpu_accelerator  # noqa: E402  Accelerate's GPU setup, over gloo on CPUs

from xlpo.fileio import write_json  # noqa: E402
from xlpo.models import mixed_precision  # noqa: E402
from xlpo.train.config import load_config  # noqa: E402
from xlpo.train.trainer import Trainer, train  # noqa: E402


def _storages(tensors) -> dict[tuple, int]:
    found = {}
    for tensor in tensors:
        parts = [tensor._local_tensor if hasattr(tensor, "device_mesh") else tensor, getattr(tensor, "ds_tensor", None)]
        for part in parts:
            if isinstance(part, torch.Tensor) and not part.is_meta:
                storage = part.untyped_storage()
                found[(str(storage.device), storage.data_ptr())] = storage.nbytes()
    return found


def snapshot(trainer: Trainer) -> dict[str, int]:
    policy = _storages(trainer.acc.unwrap_model(trainer.model).parameters())
    separate = trainer.reference.separate if trainer.reference is not None else None
    reference = {} if separate is None or separate is trainer.model else _storages(separate.parameters())
    everything = _storages(o for o in gc.get_objects() if isinstance(o, torch.Tensor))
    rest = {key: size for key, size in everything.items() if key not in policy and key not in reference}
    return {"weights": sum(policy.values()), "reference": sum(reference.values()), "state": sum(rest.values())}


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ.get("RANK", 0))
    for name, overrides in spec["runs"].items():
        config = load_config(None, overrides)
        trainers, taken = [], {}
        setup = Trainer.setup

        def keep(self):
            setup(self)
            trainers.append(self)

        Trainer.setup = keep
        hook = register_optimizer_step_post_hook(lambda *_: taken or taken.update(snapshot(trainers[-1])))
        try:
            train(config, accelerator=make_cpu_accelerator(mixed_precision(config.model.dtype)))
        finally:
            Trainer.setup = setup
            hook.remove()
        write_json(Path(spec["out"]) / f"{name}-{rank}.json", taken)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
