"""Which shipped launcher config fits Llama-3.1-8B on 1, 2, 4 and 8 GPUs of 24, 40 and 80 GB (docs/training.md),
from xlpo's memory model (src/xlpo/train/memory.py); `--check` measures what training processes on this CPU hold.

The table: LoRA r16 and full fine-tuning, each with DPO (live and precomputed reference) and CAPO, bf16
compute over fp32 trained weights and AdamW state (as xlpo trains on GPUs), a micro-batch of 4 pairs of 512
tokens per GPU (a row each for chosen and rejected), gradient checkpointing on (as capo-paper-gpu), the
chunked output head at its default budget. A cell lists the configs whose per-GPU total fits; "one" is a
single process without a launcher.

--check trains one step of a random Llama (bf16 compute on the CPU) with each shipped config, 2 processes
(and 1 without a launcher), in two runs: full fine-tuning with DPO and a live reference, and LoRA with DPO
and a precomputed reference. When the optimizer steps, every tensor storage a process holds is counted
(benchmarks/memory_check_worker.py): the policy's weights, the reference's, and the rest (optimizer state,
DeepSpeed's fp32 masters, gradients, buffers); each is compared with the model. It also counts, in one
process, the bytes the forward pass saves for the backward one (no gradient checkpointing, fp32) against
the model's activations.

examples:
  .venv/bin/python benchmarks/memory_table.py                   # the table (markdown), instantly
  .venv/bin/python benchmarks/memory_table.py --check           # + measured vs model, minutes; results/memory_check.json
  .venv/bin/python benchmarks/memory_table.py --pairs 2 --tokens 1024
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
sys.path.insert(0, str(TESTS))

from conftest import make_tiny_model_dir  # noqa: E402  the tests' random Llama on the real tokenizer
from launching import finish, free_port, start  # noqa: E402

from xlpo.logprobs import ScoredRows, sequence_logprobs  # noqa: E402
from xlpo.models import load_model, load_tokenizer  # noqa: E402
from xlpo.train.memory import (GIB, LLAMA_31_8B, Run, activation_bytes, engine_buffers, fitting,  # noqa: E402
                               per_gpu, reference_bytes, rows, shape_of, trained_state)

GPU_GIB = (24, 40, 80)
GPU_COUNTS = (1, 2, 4, 8)
LAUNCHERS = {"ddp": "ddp.yaml", "zero2": "deepspeed-zero2.yaml", "zero3": "deepspeed-zero3.yaml", "fsdp2": "fsdp2.yaml"}


def table(pairs: int, tokens: int) -> str:
    """GPUs down, runs across; a cell names the configs that fit ("all" when every launcher config does)."""
    runs = rows(pairs_per_gpu=pairs, tokens_per_sequence=tokens)
    lines = ["| GPUs | " + " | ".join(name for name, _ in runs) + " |", "|---" * (1 + len(runs)) + "|"]
    for gib in GPU_GIB:
        for gpus in GPU_COUNTS:
            cells = []
            for _, run in runs:
                fit = fitting(LLAMA_31_8B, run, gpus, gib)
                cells.append("all" if gpus > 1 and len(fit) == len(LAUNCHERS) else ", ".join(fit) or "-")
            lines.append(f"| {gpus} x {gib} GB | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def totals(pairs: int, tokens: int) -> str:
    """The per-GPU totals behind the table, in GiB, for 8 GPUs (1 for "one")."""
    lines = ["| run | " + " | ".join(("one", *LAUNCHERS)) + " |", "|---" * 6 + "|"]
    for name, run in rows(pairs_per_gpu=pairs, tokens_per_sequence=tokens):
        cells = [f"{per_gpu(LLAMA_31_8B, run, b, 1 if b == 'one' else 8)['total'] / GIB:.1f}" for b in ("one", *LAUNCHERS)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- --check ----------------------------------------------------------------------------------
def _runs(model_dir: Path, out: Path, per_process: int) -> dict[str, list[str]]:
    common = [f"model.name_or_path={model_dir}", f"data.train={TESTS / 'fixtures' / 'prefs_small.jsonl'}",
              "model.dtype=bfloat16", "training.progress=false", "training.report_to=none", "training.max_steps=1",
              f"training.batch_size={per_process}", "loss.name=dpo", f"reference.cache_dir={out / 'ref'}"]
    return {"full": common + ["lora.enabled=false", "reference.precompute=false", f"training.output_dir={out / 'full'}"],
            "lora": common + ["lora.r=16", f"training.output_dir={out / 'lora'}"]}


def _measure(model_dir: Path, root: Path, launcher: str | None) -> dict:
    out = root / (launcher or "one")
    out.mkdir(parents=True)
    spec = out / "spec.json"
    spec.write_text(json.dumps({"runs": _runs(model_dir, out, 2 if launcher else 4), "out": str(out)}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(TESTS)])}
    worker = str(REPO / "benchmarks" / "memory_check_worker.py")
    if launcher is None:
        subprocess.run([sys.executable, worker, str(spec)], env=env, check=True, capture_output=True)
    else:
        command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
                   str(REPO / "src/xlpo/configs/accelerate" / LAUNCHERS[launcher]), "--num_processes", "2",
                   "--num_machines", "1", "--main_process_port", str(free_port()), worker, str(spec)]
        code, output = finish(start(command, env), timeout=3600)
        if code != 0:
            sys.exit(f"{launcher} failed:\n{output[-3000:]}")
    return {run: json.loads((out / f"{run}-0.json").read_text()) for run in ("full", "lora")}


def _compared(shape, measured: dict, backend: str) -> dict:
    gpus = 1 if backend == "one" else 2
    result = {}
    for run_name, run in (("full", Run(True, "live")), ("lora", Run(False, "precomputed"))):
        state = trained_state(shape, run, backend, gpus)
        model = {"weights": state["weights"], "reference": reference_bytes(shape, run, backend, gpus),
                 "state": state["optimizer"] + state["gradients"] + engine_buffers(run, backend)}
        result[run_name] = {part: {"measured_mb": round(measured[run_name][part] / 2**20, 1),
                                   "model_mb": round(model[part] / 2**20, 1)} for part in model}
    return result


def _activations(model_dir: Path, pairs: int, tokens: int) -> dict:
    """Bytes saved for the backward pass in one fp32 process (no checkpointing) against the model's."""
    model = load_model(str(model_dir), "float32")
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (2 * pairs, tokens), generator=generator)
    scored = torch.zeros_like(ids, dtype=torch.bool)
    scored[:, tokens // 2:] = True
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        sequence_logprobs(model, ScoredRows.from_completion_mask(ids, None, scored))
    run = Run(True, "none", pairs_per_gpu=pairs, tokens_per_sequence=tokens, compute_bytes=4,
              gradient_checkpointing=False)
    return {"measured_mb": round(sum(saved.values()) / 2**20, 1),
            "model_mb": round(activation_bytes(shape_of(model.config), run) / 2**20, 1),
            "pairs": pairs, "tokens_per_sequence": tokens}


def check(out: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = make_tiny_model_dir(root / "model", load_tokenizer("embedded"), layers=4, hidden=256,
                                        intermediate=1024, heads=8)
        shape = shape_of(load_model(str(model_dir), "float32").config)
        result = {"model": f"random Llama, {shape.layers} layers of width {shape.hidden}, vocabulary {shape.vocab}, "
                           f"{shape.params() / 1e6:.1f}M parameters; bf16 compute, per process 2 pairs (1 process: 4)",
                  "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                             f"torch {torch.__version__}",
                  "activations": _activations(model_dir, pairs=2, tokens=64)}
        for backend in ("one", *LAUNCHERS):
            measured = _measure(model_dir, root, None if backend == "one" else backend)
            result[backend] = _compared(shape, measured, backend)
            print(backend, json.dumps(result[backend]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=4, help="pairs per GPU per micro-batch")
    parser.add_argument("--tokens", type=int, default=512, help="tokens per sequence (prompt + answer)")
    parser.add_argument("--check", action="store_true", help="measure on this CPU against the model (minutes)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "memory_check.json")
    args = parser.parse_args()
    print(table(args.pairs, args.tokens))
    print()
    print("Per-GPU totals (GiB) on 8 GPUs (one: 1 GPU):")
    print(totals(args.pairs, args.tokens))
    if args.check:
        torch.set_num_threads(1)
        check(args.out)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
