"""How far FSDP2's bf16 gradient reduction drifts from fp32 reduction over a short run (issue 27, item 5).

Full fine-tuning (DPO, precomputed reference, bf16 compute over fp32 weights) of a random Llama on the real
tokenizer, trained three ways with the same global batch: 2 processes under FSDP2 with
`training.reduce_dtype=auto` (bf16 sums, Accelerate's policy), 2 processes with `reduce_dtype=float32`,
and 1 process (autocast, fp32 gradients, nothing reduced) as the yardstick. It prints, per pair of runs,
the largest difference of the per-step losses and gradient norms, and how far the final weights are apart
(largest absolute difference; relative L2 distance of the update, i.e. of final - initial weights).

FSDP2 runs on CPUs only through the tests' launcher (tests/distributed_worker.py, which builds the
Accelerator as Accelerate does on GPUs, over gloo), so this script uses it.

examples:
  .venv/bin/python benchmarks/fsdp_reduce_drift.py                  # 20 steps, writes results/fsdp_reduce_drift.json
  .venv/bin/python benchmarks/fsdp_reduce_drift.py --steps 5 --out /tmp/drift.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
sys.path.insert(0, str(TESTS))

from conftest import make_tiny_model_dir  # noqa: E402  the tests' random Llama on the real tokenizer
from launching import finish, free_port, start  # noqa: E402

from xlpo.models import load_tokenizer  # noqa: E402
from xlpo.train.config import load_config  # noqa: E402
from xlpo.train.trainer import train  # noqa: E402

RUNS = {"bf16-sum": "training.reduce_dtype=auto", "fp32-sum": "training.reduce_dtype=float32"}


def _overrides(model_dir: Path, out: Path, steps: int, per_process_batch: int) -> list[str]:
    return [f"model.name_or_path={model_dir}", f"data.train={TESTS / 'fixtures' / 'prefs_small.jsonl'}",
            "model.dtype=bfloat16", "lora.enabled=false", "loss.name=dpo", "training.progress=false",
            "training.report_to=none", "training.learning_rate=1e-5", "training.warmup_ratio=0",
            "training.lr_scheduler=constant", f"training.max_steps={steps}", "training.max_grad_norm=null",
            f"training.batch_size={per_process_batch}", f"training.output_dir={out}",
            f"reference.cache_dir={out.parent / 'ref'}"]


def _two_processes(root: Path, model_dir: Path, steps: int) -> None:
    runs = [{"overrides": _overrides(model_dir, root / name, steps, 2) + [setting]} for name, setting in RUNS.items()]
    spec = root / "spec.json"
    spec.write_text(json.dumps({"runs": runs}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(TESTS)])}
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--config_file", str(REPO / "src/xlpo/configs/accelerate/fsdp2.yaml"),
               "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(free_port()),
               str(TESTS / "distributed_worker.py"), str(spec)]
    code, output = finish(start(command, env), timeout=3600)
    errors = sorted(root.glob("*/error-*.txt"))
    if code != 0 or errors:
        sys.exit(f"the FSDP2 runs failed:\n{(errors[0].read_text() if errors else output)[-3000:]}")


def _compare(a: Path, b: Path, initial: dict) -> dict:
    ma = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
    wa, wb = (load_file(str(run / "model" / "model.safetensors")) for run in (a, b))
    moved_a = torch.cat([(wa[k] - initial[k]).flatten() for k in initial])
    moved_b = torch.cat([(wb[k] - initial[k]).flatten() for k in initial])
    return {"loss_max_abs": max(abs(x["loss"] - y["loss"]) for x, y in zip(ma, mb)),
            "grad_norm_max_rel": max(abs(x["grad_norm"] / y["grad_norm"] - 1) for x, y in zip(ma, mb)),
            "weights_max_abs": max((wa[k] - wb[k]).abs().max().item() for k in initial),
            "update_rel_l2": ((moved_a - moved_b).norm() / moved_b.norm()).item(),
            "last_loss": [ma[-1]["loss"], mb[-1]["loss"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fsdp_reduce_drift.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = make_tiny_model_dir(root / "model", load_tokenizer("embedded"), layers=2, hidden=64)
        started = time.perf_counter()
        train(load_config(None, _overrides(model_dir, root / "one-process", args.steps, 4)))
        _two_processes(root, model_dir, args.steps)
        initial = load_file(str(model_dir / "model.safetensors"))
        result = {
            "setting": f"DPO full fine-tuning, bf16 compute over fp32 weights, lr 1e-5 constant, {args.steps} steps "
                       "of global batch 4, random Llama (2 layers, width 64) on the SmolLM2 tokenizer",
            "bf16-sum vs fp32-sum": _compare(root / "bf16-sum", root / "fp32-sum", initial),
            "bf16-sum vs one process": _compare(root / "bf16-sum", root / "one-process", initial),
            "fp32-sum vs one process": _compare(root / "fp32-sum", root / "one-process", initial),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
            "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for pair, numbers in result.items():
        if isinstance(numbers, dict):
            print(f"{pair:26} " + "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in numbers.items()))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
