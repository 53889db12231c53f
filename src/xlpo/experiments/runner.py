"""Running an experiment's independent jobs (a training and its scoring) in worker processes.

Many small trainings on a few CPU cores go faster as several one-thread processes than as one
process whose torch threads share the cores (measured in docs/experiment.md, "Workers"): a
135M-parameter model's matrices are too small for two threads to keep both cores busy. Each
worker is a spawned process with its own torch thread count; each job takes the next pending
item; results come back in the order the jobs were given, so the study does not depend on which
worker finished first. With one worker everything runs in this process, as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

MAX_AUTO_WORKERS = 4  # each worker holds its own copy of the model: keep memory bounded on big machines


def cpu_cores() -> int:
    """The cores this process may run on (a container's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Workers:
    """How many processes run jobs at once, and torch's thread count in each."""

    processes: int
    threads: int

    @classmethod
    def resolve(cls, workers: int | str, threads: int | str, gpu: bool, cores: int | None = None) -> Workers:
        """`auto`: one single-thread worker per core (at most MAX_AUTO_WORKERS) on a CPU-only machine; with a
        GPU, one worker (the jobs would share one device)."""
        cores = cores or cpu_cores()
        n = workers if isinstance(workers, int) else (1 if gpu else max(1, min(cores, MAX_AUTO_WORKERS)))
        t = threads if isinstance(threads, int) else max(1, cores // n)
        return cls(n, t)

    def describe(self) -> str:
        return f"{self.processes} worker{'s' if self.processes > 1 else ''} x {self.threads} thread" \
               f"{'s' if self.threads > 1 else ''}"


def _start_worker(threads: int) -> None:
    # Before torch is imported in this fresh process, so that its thread pools start at this size.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


def run_jobs(job: Callable[..., Any], items: Sequence[Any], workers: Workers, common: Iterable[Any] = (),
             log: Callable[[str], None] | None = None) -> list[Any]:
    """`[job(*common, item, log) for item in items]`, in worker processes when `workers.processes` > 1 (there
    `log` is None: a job then prints its own lines).

    `job` must be a module-level function and its arguments picklable. An exception in a job (a UserError
    included) is raised here: pending jobs are cancelled, running ones finish; finished jobs keep their
    files, so a rerun continues from them."""
    common = tuple(common)
    if workers.processes <= 1 or len(items) <= 1:
        return [job(*common, item, log) for item in items]
    pool = ProcessPoolExecutor(max_workers=min(workers.processes, len(items)), mp_context=get_context("spawn"),
                               initializer=_start_worker, initargs=(workers.threads,))
    try:
        futures = [pool.submit(job, *common, item, None) for item in items]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
