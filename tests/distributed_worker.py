"""One process of a multi-process test run: `accelerate launch --config_file CONFIG ... distributed_worker.py SPEC`.

Runs the training runs listed in SPEC (JSON) one after the other through `xlpo.train.trainer.train`,
and writes beside each run's outputs how many optimizer steps it took and how long (and the traceback of a
run that failed, so that the runs after it still run).

DDP (the ddp config) runs as accelerate runs it on CPUs: torch DDP over gloo. On a CPU, accelerate
drives neither DeepSpeed nor FSDP by itself; this script builds the Accelerator the way accelerate
builds it on GPUs and says what differs:
- DeepSpeed: accelerate forms the process group only for an accelerator it knows, so the gloo
  backend is named explicitly (on GPUs: nccl). DeepSpeed's CPU all-reduce kernel (a C++ op
  compiled on first use, minutes on a small machine; GPUs never use it) is turned off, so its
  collectives go through gloo.
- FSDP2: accelerate makes FSDP a GPU-only distributed type, so the plugin it builds from the
  launcher's settings is installed on the CPU (gloo) state, with the mixed-precision policy accelerate
  gives it for the run's precision (bf16: bf16 parameters, gradient reduction and outputs); `fully_shard`
  itself runs unchanged.
Each run gets an Accelerator in the precision its model.dtype asks for, as `xlpo train` makes it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, InitProcessGroupKwargs
from torch.optim.optimizer import register_optimizer_step_post_hook

from xlpo.fileio import write_json
from xlpo.models import mixed_precision
from xlpo.train.config import load_config
from xlpo.train.distributed import keep_precision_only
from xlpo.train.trainer import train


def make_cpu_accelerator(precision: str) -> Accelerator:
    keep_precision_only(precision)  # as xlpo's make_accelerator does
    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        return Accelerator(mixed_precision=precision, kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")])
    accelerator = Accelerator(cpu=True, mixed_precision=precision)
    if os.environ.get("ACCELERATE_USE_FSDP") == "true":
        plugin = FullyShardedDataParallelPlugin()
        if precision != "no":  # as AcceleratorState does for an FSDP plugin on GPUs
            plugin.set_mixed_precision(precision)
        accelerator.state.fsdp_plugin = plugin
        # Both shared states, as accelerate sets them: each new AcceleratorState copies PartialState's.
        accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    return accelerator


def keep_uninterrupted_result(output_dir: Path) -> None:
    """Set the finished run's adapter/model and metrics aside, so that a resumed run can be compared with them."""
    for name in ("adapter", "model", "metrics.jsonl", "train_summary.json"):
        if (output_dir / name).exists():
            (output_dir / name).rename(output_dir / f"uninterrupted-{name}")
    if (output_dir / "uninterrupted-metrics.jsonl").exists():
        shutil.copy(output_dir / "uninterrupted-metrics.jsonl", output_dir / "metrics.jsonl")


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    steps = [0]
    register_optimizer_step_post_hook(lambda *args: steps.__setitem__(0, steps[0] + 1))
    failed = False
    for run in spec["runs"]:
        config = load_config(None, run["overrides"])
        # One per run, as `xlpo train` makes (the process group stays).
        accelerator = make_cpu_accelerator(mixed_precision(config.model.dtype))
        output_dir = Path(config.training.output_dir)
        resume = run.get("resume", False)
        if resume and accelerator.is_main_process:
            keep_uninterrupted_result(output_dir)
        accelerator.wait_for_everyone()
        before, started = steps[0], time.perf_counter()
        try:
            train(config, resume=resume, accelerator=accelerator)
        except Exception:  # recorded for the test, which shows it; the next run still gets its chance
            failed = True
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / f"error-{'resume' if resume else 'run'}-{accelerator.process_index}.txt").write_text(
                traceback.format_exc())
        if accelerator.is_main_process:
            write_json(output_dir / f"optimizer_steps{'-resumed' if resume else ''}.json",
                       {"optimizer_steps": steps[0] - before, "seconds": round(time.perf_counter() - started, 1)})
        accelerator.free_memory()
    accelerator.end_training()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
