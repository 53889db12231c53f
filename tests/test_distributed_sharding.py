"""Issue 27 under ZeRO-3 and FSDP2, 2 gloo processes on CPU (tests/sharding_worker.py does the work in each):

- item 2: no process ever holds the policy or the reference of full fine-tuning whole: the peak bytes of
  parameters per process are at most about half the one-process figure (1% slack) plus the largest weight
  (transformers makes one module whole at a time while loading under ZeRO-3, here the 96 MiB embedding);
- item 3: the chunked output head runs through the engine's own gathering: log-probs and gradients equal to
  full logits computed in one process, and no logits-like tensor wider than one chunk is ever allocated;
- item 4: DeepSpeed bf16 from an fp32 checkpoint starts its fp32 master weights from the fp32 values.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from conftest import make_tiny_model_dir
from launching import finish, free_port, start

pytestmark = pytest.mark.distributed

TESTS = Path(__file__).parent
CONFIGS = TESTS.parent / "src" / "xlpo" / "configs" / "accelerate"
FIXTURE = TESTS / "fixtures" / "prefs_small.jsonl"
CHUNK = 8  # rows per output-layer chunk in the head task
# Which tasks each backend runs: the head and memory under the sharded ones, the masters under DeepSpeed's.
# zero3-noinit: the shipped ZeRO-3 config launched with zero3_init_flag false (a user's own config may say so).
TASKS = {"zero2": ["masters"], "zero3": ["head", "memory", "masters"], "zero3-noinit": ["memory"],
         "fsdp2": ["head", "memory"]}
CONFIG_FILES = {"zero2": "deepspeed-zero2.yaml", "zero3": "deepspeed-zero3.yaml", "zero3-noinit": "deepspeed-zero3.yaml",
                "fsdp2": "fsdp2.yaml"}
LAUNCH_ARGS = {"zero3-noinit": ["--zero3_init_flag", "false"]}


@pytest.fixture(scope="module")
def sized_model_dir(tmp_path_factory, tokenizer) -> Path:
    """372 MB of fp32 weights: 12 layers of width 512 and untied 100 MB embedding and output matrices, so
    that half of it stands clear of one module plus what a process holds anyway."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("sized-llama"), tokenizer, layers=12, hidden=512,
                               intermediate=2048, heads=8)


def _spec(root: Path, model_dir: Path, tasks: list[str]) -> Path:
    spec = root / "spec.json"
    spec.write_text(json.dumps({"tasks": tasks, "model": str(model_dir), "data": str(FIXTURE), "out": str(root),
                                "chunk": CHUNK}))
    return spec


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
            "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), str(TESTS)])}


def _results(root: Path, task: str, processes: int, output: str) -> list[dict]:
    paths = [root / f"{task}-{rank}.json" for rank in range(processes)]
    assert all(p.is_file() for p in paths), output[-5000:]
    return [json.loads(p.read_text()) for p in paths]


@pytest.fixture(scope="module")
def one_process_memory(tmp_path_factory, sized_model_dir):
    root = tmp_path_factory.mktemp("memory-one")
    done = subprocess.run([sys.executable, str(TESTS / "sharding_worker.py"), str(_spec(root, sized_model_dir,
                                                                                        ["memory"]))],
                          env=_env(), capture_output=True, text=True, timeout=900)
    return _results(root, "memory", 1, done.stdout + done.stderr)[0]


@pytest.fixture(scope="module")
def launched(tmp_path_factory, sized_model_dir):
    """launched(backend): (root, output) of one 2-process launch running that backend's tasks (once per module)."""
    done: dict[str, tuple[Path, str]] = {}

    def launch(backend: str) -> tuple[Path, str]:
        if backend not in done:
            root = tmp_path_factory.mktemp(f"sharding-{backend}")
            accelerate = Path(sys.executable).with_name("accelerate")
            command = [str(accelerate), "launch", "--config_file", str(CONFIGS / CONFIG_FILES[backend]),
                       "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(free_port()),
                       *LAUNCH_ARGS.get(backend, []), str(TESTS / "sharding_worker.py"), str(_spec(root, sized_model_dir, TASKS[backend]))]
            _, output = finish(start(command, _env()), timeout=1800)
            done[backend] = root, output
        return done[backend]

    return launch


def _running(task: str) -> list[str]:
    return [backend for backend, tasks in TASKS.items() if task in tasks]


def _largest_weight_bytes(model_dir: Path) -> int:
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        return max(math.prod(f.get_slice(key).get_shape()) * 4 for key in f.keys())


@pytest.mark.parametrize("backend", _running("memory"))
def test_no_process_holds_the_policy_or_its_reference_whole(backend, launched, one_process_memory, sized_model_dir):
    """Item 2: ZeRO-3 (also without zero3_init) and FSDP2 load the policy and reload its frozen copy sharded."""
    root, output = launched(backend)
    allowance = _largest_weight_bytes(sized_model_dir)
    measured = _results(root, "memory", 2, output)
    if backend.startswith("zero3"):
        assert all(r["zero3_init_flag"] == (backend == "zero3") for r in measured), measured
    for rank, peaks in enumerate(measured):
        for part in ("policy", "reference", "all"):
            bound = 1.01 * one_process_memory[part] / 2 + allowance
            assert peaks[part] <= bound, (backend, rank, part, peaks[part], one_process_memory[part])


@pytest.mark.parametrize("backend", _running("head"))
def test_the_chunked_head_runs_through_the_engine(backend, launched):
    """Item 3: values and gradients equal full logits; the widest logits are one chunk's, not the batch's."""
    root, output = launched(backend)
    results = _results(root, "head", 2, output)
    assert all(r["sharded"] for r in results)
    main = results[0]
    assert main["value_error"] < 1e-4  # summed log-probs of about -200, fp32 in another order
    assert main["grad_error"] < 1e-5 * main["grad_scale"]
    for r in results:
        assert r["widest"] <= r["chunk_elements"] < r["full_elements"] / 10, (backend, r)


@pytest.mark.parametrize("backend", _running("masters"))
def test_deepspeed_bf16_master_weights_start_from_the_fp32_checkpoint(backend, launched):
    """Item 4: DeepSpeed rounds the weights to bf16 before copying its fp32 masters; xlpo loads them again."""
    root, output = launched(backend)
    for r in _results(root, "masters", 2, output):
        assert r["exact"] == 1.0, (backend, r)
