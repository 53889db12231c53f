"""The server's scheduler: one thread owns the model and runs waiting requests together in batches.

A batch starts with the oldest waiting request and takes the next ones in arrival order while their
rows (n each) fit in `batch_size` and the batch's cache fits in `max_batch_tokens`, waiting at most
`max_wait` seconds for more to arrive. At most `max_waiting` requests wait; one more is refused
(`Busy`) instead of growing the queue without bound.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

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


class Inbox(Protocol):
    """Where a job's events go; `put` is called from the engine's thread."""

    def put(self, event: Event) -> None: ...


@dataclass
class Job:
    """One chat request inside the server; its replies arrive as events (text pieces only if `stream`).

    `prompt_tokens` is the prompt's length as the server counted it (0: not counted), which sizes the
    job's share of the batch's cache.
    """

    messages: list[dict]
    sampling: Sampling
    stream: bool = False
    prompt_tokens: int = 0
    events: Inbox = field(default_factory=queue.Queue)
    gone: threading.Event = field(default_factory=threading.Event)  # set when the client has left

    def rows_request(self) -> RowsRequest:
        return RowsRequest(self.messages, self.sampling, self._on_text, self.gone.is_set)

    def _on_text(self, choice: int, text: str) -> None:
        if self.stream:
            self.events.put(TextPiece(choice, text))


def batch_tokens(jobs: list[Job]) -> int:
    """The token positions a batch of jobs holds in the cache at its end: every row is left-padded to
    the longest prompt and runs to the largest max_tokens of the batch."""
    rows = sum(job.sampling.n for job in jobs)
    return rows * (max(job.prompt_tokens for job in jobs) + max(job.sampling.max_tokens for job in jobs))


class Busy(Exception):
    """The queue is full: the request is refused and may be retried later."""


_STOP = object()


class BatchingEngine:
    """Runs `generate(list[RowsRequest]) -> list[list[Completion]]` on batches of submitted jobs, in one thread."""

    def __init__(self, generate: Callable[[list[RowsRequest]], list[list[Completion]]],
                 batch_size: int = 8, max_wait: float = 0.02, max_waiting: int | None = None,
                 max_batch_tokens: int | None = None):
        if batch_size < 1 or max_wait < 0 or (max_waiting is not None and max_waiting < 1):
            raise ValueError("batch_size and max_waiting must be >= 1 and max_wait >= 0")
        self.generate, self.batch_size, self.max_wait = generate, batch_size, max_wait
        self.max_waiting, self.max_batch_tokens = max_waiting, max_batch_tokens
        self.waiting: queue.Queue = queue.Queue()
        self.carried: Job | None = None  # the job that did not fit in the last batch: it starts the next
        self.count_lock = threading.Lock()
        self.queued = 0  # jobs submitted and not yet taken into a batch
        self.batch_seconds = 0.0  # how long recent batches took (a moving average), for estimated_wait
        self.thread = threading.Thread(target=self._loop, name="xlpo-serve-engine", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Job:
        with self.count_lock:
            if self.max_waiting is not None and self.queued >= self.max_waiting:
                raise Busy(f"{self.queued} requests are already waiting")
            self.queued += 1
        self.waiting.put(job)
        return job

    def estimated_wait(self) -> float:
        """Seconds until the waiting jobs have run, if each batch takes as long as recent ones did."""
        return math.ceil((self.queued + 1) / self.batch_size) * self.batch_seconds

    def close(self) -> None:
        self.waiting.put(_STOP)
        self.thread.join()

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _take(self, timeout: float | None) -> Job | object:
        """The next waiting job whose client has not left (or _STOP); queue.Empty after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.waiting.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            if job is _STOP:
                return job
            with self.count_lock:
                self.queued -= 1
            if not job.gone.is_set():  # a request that timed out or was left while waiting takes no place
                return job

    def _fits(self, batch: list[Job], job: Job) -> bool:
        if sum(j.sampling.n for j in batch) + job.sampling.n > self.batch_size:
            return False
        return self.max_batch_tokens is None or batch_tokens([*batch, job]) <= self.max_batch_tokens

    def _next_batch(self) -> list[Job] | None:
        first = self.carried if self.carried is not None else self._take(None)
        self.carried = None
        if first is _STOP:
            return None
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while sum(j.sampling.n for j in batch) < self.batch_size:
            try:
                job = self._take(max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is _STOP or not self._fits(batch, job):
                self.carried = job
                break
            batch.append(job)
        return batch

    def _run(self, batch: list[Job]) -> None:
        batch = [job for job in batch if not job.gone.is_set()]
        if not batch:
            return
        start = time.monotonic()
        try:
            results = self.generate([job.rows_request() for job in batch])
        except Exception as exc:  # one failed call fails its jobs, never the server
            for job in batch:
                job.events.put(Failed(f"{type(exc).__name__}: {exc}"))
            return
        finally:
            took = time.monotonic() - start
            self.batch_seconds = took if not self.batch_seconds else 0.8 * self.batch_seconds + 0.2 * took
        for job, completions in zip(batch, results):
            job.events.put(Finished(completions))
