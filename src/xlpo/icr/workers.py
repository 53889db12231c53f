"""Sampling, translation and scoring split over worker processes (`sampling.processes`), one engine each.

A stage written in parts (`rundir.write_in_parts`) is a list of units, one chunk of prompts of one
language each, with its own seed. The driver hands each worker a share of the units still missing
(round robin) and, on GPUs, GPUs of its own (`tensor_parallel_size` each, through
CUDA_VISIBLE_DEVICES): a Hugging Face model or a vLLM engine per worker. Every worker writes each
unit's part file as it finishes it; the driver waits, then joins the parts in their fixed order. A
unit's result depends only on the unit, so the joined file does not depend on how many workers made
it, and a killed stage resumes from the parts already written, with any number of workers.

A worker is `python -m xlpo.icr.worker SPEC` (xlpo/icr/worker.py), SPEC a JSON file: the run's config,
the iteration, the stage, the policy and reward reference, and its units.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from xlpo.errors import UserError
from xlpo.fileio import write_json
from xlpo.icr.config import ICRConfig
from xlpo.icr.launch import child_environment, stop
from xlpo.icr.rundir import IterationDir, part_file
from xlpo.model_spec import ModelSpec
from xlpo.progress import Progress


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (their indices when it is unset)."""
    count = torch.cuda.device_count()
    named = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return named[:count] if named else [str(i) for i in range(count)]


def check_workers(config: ICRConfig) -> None:
    """Enough GPUs for processes x tensor_parallel_size (on CPUs, workers share the cores)."""
    s = config.sampling
    gpus = visible_gpus()
    if gpus and s.processes * s.tensor_parallel_size > len(gpus):
        raise UserError(f"sampling.processes={s.processes} x sampling.tensor_parallel_size={s.tensor_parallel_size} "
                        f"needs {s.processes * s.tensor_parallel_size} GPUs; {len(gpus)} are visible")


def run_workers(config: ICRConfig, it: IterationDir, stage: str, policy: ModelSpec, reference: ModelSpec,
                todo: list[tuple[str, int]], total: int, log) -> None:
    """Make the part files of `todo` ((language, chunk) units) in `sampling.processes` worker processes."""
    s = config.sampling
    shares = [todo[i::s.processes] for i in range(s.processes)]
    shares = [share for share in shares if share]
    gpus = visible_gpus()
    log(f"  {stage}: {len(todo)} parts over {len(shares)} worker processes")
    workers = []
    try:
        for i, share in enumerate(shares):
            spec = it.parts(stage) / f"worker-{i}.json"
            write_json(spec, {"config": config.model_dump(mode="json"), "iteration": it.t, "stage": stage,
                              "policy": [policy.base, policy.adapter], "reference": [reference.base, reference.adapter],
                              "units": share})
            env = child_environment()
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[i * s.tensor_parallel_size:(i + 1) * s.tensor_parallel_size])
            workers.append(subprocess.Popen([sys.executable, "-m", "xlpo.icr.worker", str(spec)], env=env))
        _wait(workers, it, stage, todo, total)
    except BaseException:
        for worker in workers:
            stop(worker)
        raise


def _wait(workers: list[subprocess.Popen], it: IterationDir, stage: str, todo: list[tuple[str, int]], total: int) -> None:
    """Wait for every worker, showing the parts written; a worker that fails stops the stage (one line)."""
    def done() -> int:
        return sum(part_file(it, stage, lang, k).is_file() for lang, k in todo)

    with Progress(f"iteration {it.t} {stage}", total, "parts", start=total - len(todo)) as progress:
        shown = 0
        while any(w.poll() is None for w in workers):
            failed = [(i, w.returncode) for i, w in enumerate(workers) if w.returncode not in (None, 0)]
            if failed:
                i, code = failed[0]
                raise UserError(f"iteration {it.t} {stage}: worker process {i} exited with code {code} (its output "
                                "is above); run again to resume from the parts already written")
            now = done()
            progress.advance(now - shown)
            shown = now
            time.sleep(0.5)
        progress.advance(done() - shown)
    codes = [w.returncode for w in workers]
    if any(codes) or done() < len(todo):
        raise UserError(f"iteration {it.t} {stage}: worker processes exited with codes {codes} (their output is "
                        "above); run again to resume from the parts already written")
