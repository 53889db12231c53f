"""One prepared check of xlpo on a GPU: environment, numerics, training, and speed against TRL.

Each section writes its JSON file (rewritten after every item) before the next section starts, so a
run cut off by its time limit still returns what it measured. Correctness checks decide the exit
code (1 when any fails); the performance targets of issue 14 are reported, met or not.

    python3 benchmarks/gpu_check.py --tokenizer .gpu/tokenizer --out $OUT     # on a GPU, <= 8 min on an H100
    .venv/bin/python benchmarks/gpu_check.py --smoke --out /tmp/gpu-check     # the same code on the CPU, tiny

docs/performance.md ("GPU") says how to prepare and run it on a lent GPU machine.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_check_numerics  # noqa: E402  (a script beside this one, not a package)
import gpu_check_training  # noqa: E402
import vs_trl  # noqa: E402
from xlpo.fileio import write_json  # noqa: E402
from xlpo.models import load_tokenizer  # noqa: E402

SECTIONS = ("env", "numerics", "training", "speed")
PACKAGES = ("torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "pydantic", "datasets",
            "trl", "vllm", "triton", "bitsandbytes", "flash_attn", "deepspeed", "xlpo")

# Model shapes and run lengths. GPU sizes fit the whole check in 8 minutes on one H100; the smoke
# sizes run the same code on a CPU in well under a minute. Vocabulary 128,256 (Llama-3) in both.
SIZES = {
    "gpu": {"budget_s": 450,
            "numerics": dict(hidden=1024, layers=4, heads=16, kv_heads=8, pairs=8, prompt=192, answer=160,
                             repeats=5, chunk_size=None),
            "training": dict(hidden=512, layers=4, heads=8, kv_heads=4, batch=4, steps=4, prompt=96, answer=96),
            # Llama-3.2-1B's shape (tied embeddings), random weights.
            "speed": dict(hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192, tie=True, steps=8,
                          warmup=2, prompt=100, answer=100)},
    "smoke": {"budget_s": 300,
              "numerics": dict(hidden=32, layers=2, heads=4, kv_heads=2, pairs=2, prompt=12, answer=10, repeats=1,
                               chunk_size=7),
              "training": dict(hidden=32, layers=2, heads=4, kv_heads=2, batch=2, steps=2, prompt=12, answer=10),
              "speed": dict(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, tie=True, steps=1, warmup=1,
                            prompt=12, answer=10)},
}
VOCAB = 128_256


class Section:
    """One section's JSON file, rewritten after every item, with a shared time budget."""

    def __init__(self, out: Path, name: str, deadline: float):
        self.path = out / f"{name}.json"
        self.deadline = deadline
        self.data: dict = {"section": name, "status": "running", "items": {}}
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)

    def run(self, name: str, fn, estimate_s: float = 0.0) -> dict | None:
        """fn() -> dict (with optional "checks": {name: bool}); an exception is recorded, not raised."""
        left = self.deadline - time.monotonic()
        if left < estimate_s:
            self.data["items"][name] = {"skipped": f"time budget: {left:.0f} s left, needs ~{estimate_s:.0f} s"}
            self.save()
            return None
        print(f"[gpu_check] {self.data['section']}: {name} ...", flush=True)
        tic = time.monotonic()
        try:
            result = fn()
        except Exception as exc:  # one failed item must not lose the rest of the run
            result = {"error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()[-4000:],
                      "checks": {"ran": False}}
        result["seconds"] = round(time.monotonic() - tic, 2)
        self.data["items"][name] = result
        self.save()
        return result

    def finish(self, **extra) -> None:
        self.data.update(status="done", **extra)
        self.save()

    def failures(self) -> list[str]:
        return [f"{self.data['section']}/{item}/{check}" for item, result in self.data["items"].items()
                for check, ok in (result.get("checks") or {}).items() if not ok]


def environment(device: str) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None if importlib.util.find_spec(name) is None else "importable, no metadata"
    info = {"python": platform.python_version(), "platform": platform.platform(), "device": device,
            "versions": versions,
            "optional_present": {n: importlib.util.find_spec(n) is not None
                                 for n in ("trl", "vllm", "bitsandbytes", "flash_attn", "deepspeed", "datasets")}}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["cuda"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                        "memory_gib": round(props.total_memory / 2**30, 1), "multiprocessors": props.multi_processor_count,
                        "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                        "bf16_supported": torch.cuda.is_bf16_supported(),
                        "sdpa_backends_enabled": {name: getattr(torch.backends.cuda, f"{name}_sdp_enabled", lambda: None)()
                                                  for name in ("flash", "mem_efficient", "cudnn", "math")}}
    info["matmul_ceiling_gflops"] = vs_trl.matmul_ceiling_gflops(torch.get_num_threads(), device)
    info["matmul_ceiling"] = "bf16 8192^3, median of 10" if device == "cuda" else "fp32 1536^3, best of 5"
    info["checks"] = {"bf16_supported": bool(info.get("cuda", {}).get("bf16_supported", True))}
    return info


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the test suite runs this)")
    parser.add_argument("--out", default="benchmarks/results/gpu_check", help="folder for the JSON files")
    parser.add_argument("--tokenizer", default="embedded",
                        help="tokenizer folder (the GPU machine gets the SmolLM2 one, carried) or 'embedded'")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ", ".join(SECTIONS))
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole check; items that would not fit are skipped (default by size)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--sections: unknown {', '.join(sorted(unknown))} (known: {', '.join(SECTIONS)})")
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cpu" and not args.smoke:
        print("[gpu_check] no CUDA device: running at GPU sizes on the CPU would take hours; use --smoke")
        return 2
    sizes = SIZES["smoke" if args.smoke else "gpu"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + (args.budget or sizes["budget_s"])
    tokenizer = load_tokenizer(args.tokenizer)
    work = Path(tempfile.mkdtemp(prefix="xlpo-gpu-check-"))  # models and runs: never under --out
    threads = torch.get_num_threads()
    if args.smoke:
        torch.set_num_threads(1)  # tiny tensors: more threads only spin against each other
    try:
        failures = run_sections(sections, out, deadline, device, sizes, tokenizer, work)
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(work, ignore_errors=True)
    print(gpu_check_training.summary_table(out, sections))
    print("[gpu_check] all checks passed" if not failures else "[gpu_check] FAILED: " + ", ".join(failures))
    return 1 if failures else 0


def run_sections(sections: list[str], out: Path, deadline: float, device: str, sizes: dict, tokenizer,
                 work: Path) -> list[str]:
    """Each section in turn, its file saved before the next starts; the failed checks."""
    failures: list[str] = []
    for name in sections:
        section = Section(out, name, deadline)
        if name == "env":
            section.run("environment", lambda: environment(device))
        elif name == "numerics":
            gpu_check_numerics.run(section, device, VOCAB, sizes["numerics"], tokenizer)
        elif name == "training":
            gpu_check_training.run_training(section, device, VOCAB, sizes["training"], tokenizer, work)
        else:
            gpu_check_training.run_speed(section, device, VOCAB, sizes["speed"], tokenizer, work)
        section.finish()
        failures += section.failures()
    return failures


if __name__ == "__main__":
    sys.exit(main())
