"""The protocol logic of `xlpo serve`, apart from HTTP: a validated request becomes a job for the
engine, and the engine's events become an OpenAI `chat.completion` or its stream of chunks.

Every limit is checked before a request is queued: the model's context length (prompt tokens +
max_tokens, answered as OpenAI does, with the numbers), the cache a batch may hold, and the queue
length (503 with Retry-After when full). A request that has not finished within its timeout is
cancelled and answered 504.
"""

from __future__ import annotations

import asyncio
import copy
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from jinja2 import TemplateError

from xlpo.generation import Completion, render_prompt
from xlpo.serve.engine import BatchingEngine, Busy, Event, Failed, Finished, Job, TextPiece
from xlpo.serve.generation import Sampling
from xlpo.serve.protocol import ChatCompletionRequest, RequestError, parse_request


@dataclass(frozen=True)
class Limits:
    max_tokens: int = 4096  # the largest max_tokens a request may ask for
    default_max_tokens: int = 512  # when a request gives none (less where the context has less room)
    context_length: int | None = None  # prompt + completion tokens the model takes; None: not checked
    max_batch_tokens: int | None = None  # cache positions one request may need (n x (prompt + max_tokens))
    request_timeout: float = 600.0  # seconds from arrival to the last token


class Inbox:
    """A job's events, handed from the engine's thread to the coroutine answering the request."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.queue = loop, asyncio.Queue()

    def put(self, event: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop has closed (server shutting down): nobody is listening
            pass


class PromptLength:
    """Prompt tokens of a conversation as generation counts them (chat template, no added specials).

    Counts with its own copy of the tokenizer (a fast tokenizer must not be used from two threads
    while the engine pads with it). A text longer than `room` tokens could ever hold, judged by its
    bytes and the longest token's bytes, is not tokenized at all: its lower bound is returned.
    """

    def __init__(self, tokenizer):
        self.tokenizer = copy.deepcopy(tokenizer)
        self.lock = threading.Lock()
        pieces = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
        self.max_token_bytes = max(1, *(len(p.encode("utf-8")) for p in pieces))

    def __call__(self, messages: list[dict], room: int | None = None) -> tuple[int, bool]:
        """(tokens, exact); when not exact, tokens is a lower bound above `room`."""
        text = render_prompt(self.tokenizer, messages)
        at_least = math.ceil(len(text.encode("utf-8")) / self.max_token_bytes)
        if room is not None and at_least > room:
            return at_least, False
        with self.lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]), True


@dataclass
class ChatCall:
    """A validated request: the job for the engine, and how the reply is to be sent."""

    job: Job
    include_usage: bool = False  # stream only: a last chunk with token usage
    timeout: float = 600.0
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.started + self.timeout - time.monotonic()


class ChatService:
    def __init__(self, engine: BatchingEngine, served_name: str, limits: Limits = Limits(),
                 prompt_length: Callable[[list[dict], int | None], tuple[int, bool]] | None = None):
        self.engine, self.served_name, self.limits = engine, served_name, limits
        self.prompt_length = prompt_length  # None: prompts are not measured (no context check)

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.served_name, "object": "model", "owned_by": "xlpo"}]}

    def parse(self, body: object) -> ChatCall:
        """A call from a decoded JSON body (validation, then `prepare`)."""
        return self.prepare(parse_request(body))

    def prepare(self, request: ChatCompletionRequest) -> ChatCall:
        """Checks what depends on this server (model name, limits, the prompt's length) and builds the job."""
        if request.model is not None and request.model != self.served_name:
            raise RequestError(f"model '{request.model}' is not served here (this server serves "
                               f"'{self.served_name}')", 404, "model_not_found")
        limits = self.limits
        max_tokens = request.requested_max_tokens
        if max_tokens is not None and max_tokens > limits.max_tokens:
            raise RequestError(f"max_tokens: at most {limits.max_tokens} on this server, got {max_tokens}")
        messages = [m.model_dump() for m in request.messages]
        prompt_tokens, exact = self._measure(messages, max_tokens)
        n = request.n or 1
        if max_tokens is None:  # the default, or less: what room the context and the batch's cache leave
            room = [limits.default_max_tokens, *([limits.context_length - prompt_tokens] if limits.context_length else []),
                    *([limits.max_batch_tokens // n - prompt_tokens] if limits.max_batch_tokens else [])]
            max_tokens = max(1, min(room))
        if limits.context_length is not None and prompt_tokens + max_tokens > limits.context_length:
            raise RequestError(
                f"This model's maximum context length is {limits.context_length} tokens. However, you requested "
                f"{'at least ' if not exact else ''}{prompt_tokens + max_tokens} tokens ({'at least ' if not exact else ''}"
                f"{prompt_tokens} in the messages, {max_tokens} in the completion). Please reduce the length of the "
                "messages or completion.", 400, "context_length_exceeded")
        if limits.max_batch_tokens is not None and n * (prompt_tokens + max_tokens) > limits.max_batch_tokens:
            raise RequestError(
                f"this request needs n x (prompt + max_tokens) = {n} x ({prompt_tokens} + {max_tokens}) = "
                f"{n * (prompt_tokens + max_tokens)} tokens of cache; this server holds at most "
                f"{limits.max_batch_tokens} per batch: ask for fewer choices or tokens")
        sampling = Sampling(max_tokens=max_tokens, temperature=1.0 if request.temperature is None else request.temperature,
                            top_p=1.0 if request.top_p is None else request.top_p, n=n, seed=request.seed or 0)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return ChatCall(Job(messages, sampling, stream=bool(request.stream), prompt_tokens=prompt_tokens),
                        include_usage=include_usage, timeout=limits.request_timeout)

    def _measure(self, messages: list[dict], max_tokens: int | None) -> tuple[int, bool]:
        if self.prompt_length is None:
            return 0, True
        context = self.limits.context_length
        room = None if context is None else context - (max_tokens or 1)
        try:
            return self.prompt_length(messages, room)
        except TemplateError as exc:  # this request's 400, not its batch's 500
            raise RequestError(f"the model's chat template rejects these messages: {exc}") from None

    def submit(self, call: ChatCall) -> None:
        """Queues the call's job, its events to the running event loop; 503 when the queue is full."""
        call.job.events = Inbox(asyncio.get_running_loop())
        try:
            self.engine.submit(call.job)
        except Busy as exc:
            wait = max(1, math.ceil(self.engine.estimated_wait()))
            raise RequestError(f"the server is busy ({exc}); retry after {wait} s", 503, "server_overloaded",
                               {"Retry-After": str(wait)}) from None

    async def _next(self, call: ChatCall) -> Event:
        try:
            event = await asyncio.wait_for(call.job.events.queue.get(), max(0.0, call.remaining()))
        except asyncio.TimeoutError:
            call.job.gone.set()  # the engine drops its rows
            raise RequestError(f"the reply did not finish within the server's request timeout "
                               f"({call.timeout:g} s); ask for fewer tokens or retry later", 504, "timeout") from None
        if isinstance(event, Failed):
            raise RequestError(f"generation failed: {event.message}", 500, "server_error")
        return event

    async def reply(self, call: ChatCall) -> dict:
        """Waits for the submitted job and returns its whole `chat.completion` object (no streaming)."""
        while not isinstance(event := await self._next(call), Finished):
            pass
        completions = event.completions
        return {
            **self._envelope(call, "chat.completion"),
            "choices": [{"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                         "finish_reason": c.finish_reason} for i, c in enumerate(completions)],
            "usage": _usage(completions),
        }

    async def chunks(self, call: ChatCall) -> AsyncIterator[dict]:
        """The `chat.completion.chunk` objects of a streamed reply, as the text is generated.

        Each choice opens with its role, then its text pieces; a last chunk per choice carries its
        finish_reason, and with include_usage one more chunk with no choices carries the usage.
        """
        def chunk(choices: list[dict]) -> dict:
            return {**self._envelope(call, "chat.completion.chunk"), "choices": choices,
                    **({"usage": None} if call.include_usage else {})}

        for i in range(call.job.sampling.n):
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None}])
        while isinstance(event := await self._next(call), TextPiece):
            yield chunk([{"index": event.choice, "delta": {"content": event.text}, "logprobs": None,
                          "finish_reason": None}])
        for i, completion in enumerate(event.completions):
            yield chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": completion.finish_reason}])
        if call.include_usage:
            yield {**self._envelope(call, "chat.completion.chunk"), "choices": [], "usage": _usage(event.completions)}

    def _envelope(self, call: ChatCall, kind: str) -> dict:
        return {"id": call.id, "object": kind, "created": call.created, "model": self.served_name}


def _usage(completions: list[Completion]) -> dict:
    prompt_tokens = completions[0].prompt_tokens
    completion_tokens = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
