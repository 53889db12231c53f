"""The server's scheduler: one thread owns the model and runs waiting requests together in batches.

A batch starts with the oldest waiting request and takes the next ones in arrival order while their
rows (n each) fit in `batch_size`, waiting at most `max_wait` seconds for more to arrive.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from xlpo.generation import Completion
from xlpo.serve.generation import RowsRequest, Sampling


@dataclass(frozen=True)
class TextPiece:
    choice: int
    text: str


@dataclass(frozen=True)
class Finished:
    completions: list[Completion]


@dataclass(frozen=True)
class Failed:
    message: str


Event = TextPiece | Finished | Failed


@dataclass
class Job:
    """One chat request inside the server; its replies arrive as events (text pieces only if `stream`)."""

    messages: list[dict]
    sampling: Sampling
    stream: bool = False
    events: queue.Queue = field(default_factory=queue.Queue)
    gone: threading.Event = field(default_factory=threading.Event)  # set when the client has left

    def rows_request(self) -> RowsRequest:
        return RowsRequest(self.messages, self.sampling, self._on_text, self.gone.is_set)

    def _on_text(self, choice: int, text: str) -> None:
        if self.stream:
            self.events.put(TextPiece(choice, text))


_STOP = object()


class BatchingEngine:
    """Runs `generate(list[RowsRequest]) -> list[list[Completion]]` on batches of submitted jobs, in one thread."""

    def __init__(self, generate: Callable[[list[RowsRequest]], list[list[Completion]]],
                 batch_size: int = 8, max_wait: float = 0.02):
        if batch_size < 1 or max_wait < 0:
            raise ValueError("batch_size must be >= 1 and max_wait >= 0")
        self.generate, self.batch_size, self.max_wait = generate, batch_size, max_wait
        self.waiting: queue.Queue = queue.Queue()
        self.carried: Job | None = None  # the job that did not fit in the last batch: it starts the next
        self.thread = threading.Thread(target=self._loop, name="xlpo-serve-engine", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Job:
        self.waiting.put(job)
        return job

    def close(self) -> None:
        self.waiting.put(_STOP)
        self.thread.join()

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[Job] | None:
        first = self.carried if self.carried is not None else self.waiting.get()
        self.carried = None
        if first is _STOP:
            return None
        batch, rows = [first], first.sampling.n
        deadline = time.monotonic() + self.max_wait
        while rows < self.batch_size:
            try:
                job = self.waiting.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is _STOP or rows + job.sampling.n > self.batch_size:
                self.carried = job
                break
            batch.append(job)
            rows += job.sampling.n
        return batch

    def _run(self, batch: list[Job]) -> None:
        batch = [job for job in batch if not job.gone.is_set()]
        if not batch:
            return
        try:
            results = self.generate([job.rows_request() for job in batch])
        except Exception as exc:  # one failed call fails its jobs, never the server
            for job in batch:
                job.events.put(Failed(f"{type(exc).__name__}: {exc}"))
            return
        for job, completions in zip(batch, results):
            job.events.put(Finished(completions))
