"""`xlpo serve`: an OpenAI-compatible chat-completions server over a model and optional adapter.

Binds to 127.0.0.1 unless told otherwise. Requests are validated here, answered whole or streamed as
Server-Sent Events, and generated in batches by `BatchingEngine` (the only thread that runs the model).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jinja2 import TemplateError

from xlpo.errors import UserError
from xlpo.generation import Completion
from xlpo.serve.engine import BatchingEngine, Failed, Finished, Job, TextPiece
from xlpo.serve.generation import Sampling

MAX_BODY_BYTES = 16 * 1024 * 1024
ROLES = ("system", "user", "assistant")


class RequestError(ValueError):
    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.kind = status, kind


@dataclass
class ChatCall:
    """A validated request: the job for the engine, and how the reply is to be sent."""

    job: Job
    include_usage: bool = False  # stream only: a last chunk with token usage
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))


class ChatService:
    """The protocol logic, separate from HTTP so that it is testable without sockets."""

    def __init__(self, engine: BatchingEngine, served_name: str, max_tokens_limit: int = 4096,
                 default_max_tokens: int = 512, render: Callable[[list[dict]], str] | None = None):
        self.engine = engine
        self.served_name = served_name
        self.max_tokens_limit = max_tokens_limit
        self.default_max_tokens = default_max_tokens
        self.render = render  # the chat template: messages it rejects are this request's 400, not its batch's 500

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.served_name, "object": "model", "owned_by": "xlpo"}]}

    def submit(self, call: ChatCall) -> None:
        self.engine.submit(call.job)

    def reply(self, call: ChatCall) -> dict:
        """Waits for the submitted job and returns its whole `chat.completion` object (no streaming)."""
        while True:
            event = call.job.events.get()
            if isinstance(event, Failed):
                raise RequestError(f"generation failed: {event.message}", 500, "server_error")
            if isinstance(event, Finished):
                break
        completions = event.completions
        return {
            **self._envelope(call, "chat.completion"),
            "choices": [{"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                         "finish_reason": c.finish_reason} for i, c in enumerate(completions)],
            "usage": _usage(completions),
        }

    def chunks(self, call: ChatCall) -> Iterator[dict]:
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
        while True:
            event = call.job.events.get()
            if isinstance(event, Failed):
                raise RequestError(f"generation failed: {event.message}", 500, "server_error")
            if isinstance(event, TextPiece):
                yield chunk([{"index": event.choice, "delta": {"content": event.text}, "logprobs": None,
                              "finish_reason": None}])
                continue
            for i, completion in enumerate(event.completions):
                yield chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": completion.finish_reason}])
            if call.include_usage:
                yield {**self._envelope(call, "chat.completion.chunk"), "choices": [],
                       "usage": _usage(event.completions)}
            return

    def _envelope(self, call: ChatCall, kind: str) -> dict:
        return {"id": call.id, "object": kind, "created": call.created, "model": self.served_name}

    def parse(self, body: object) -> ChatCall:
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.served_name:
            raise RequestError(f"model '{model}' is not served here (this server serves '{self.served_name}')",
                               404, "model_not_found")
        stream, include_usage = _stream_settings(body)
        messages = _messages(body.get("messages"))
        if self.render is not None:
            try:
                self.render(messages)
            except TemplateError as exc:
                raise RequestError(f"the model's chat template rejects these messages: {exc}") from None
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens", self.default_max_tokens))
        if max_tokens is None:
            max_tokens = self.default_max_tokens
        if not _is_int(max_tokens) or not 1 <= max_tokens <= self.max_tokens_limit:
            raise RequestError(f"max_tokens must be an integer from 1 to {self.max_tokens_limit}")
        temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
        top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
        if top_p == 0:
            raise RequestError("top_p must be greater than 0")
        n = body.get("n", 1) or 1
        if not _is_int(n) or not 1 <= n <= 16:
            raise RequestError("n must be an integer from 1 to 16")
        seed = body.get("seed")
        if seed is None:
            seed = 0
        if not _is_int(seed):
            raise RequestError("seed must be an integer")
        sampling = Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, n=n, seed=seed)
        return ChatCall(Job(messages, sampling, stream=stream), include_usage=include_usage)


def _usage(completions: list[Completion]) -> dict:
    prompt_tokens = completions[0].prompt_tokens
    completion_tokens = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _stream_settings(body: dict) -> tuple[bool, bool]:
    """(stream, include_usage) from `stream` and `stream_options`, as OpenAI validates them."""
    stream = body.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestError("stream must be true or false")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise RequestError("stream_options is only allowed when stream is true")
    if not isinstance(options, dict):
        raise RequestError("stream_options must be an object")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise RequestError("stream_options.include_usage must be true or false")
    return stream, include_usage


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def _messages(raw) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages must be a non-empty list")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RequestError(f"messages[{i}].role must be one of {', '.join(ROLES)}")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text parts are meaningful to a text model
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise RequestError(f"messages[{i}].content parts must all be text parts")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise RequestError(f"messages[{i}].content must be a string")
        messages.append({"role": message["role"], "content": content})
    if messages[-1]["role"] == "assistant":
        raise RequestError("the last message must be a user or system message")
    return messages


class ChatHandler(BaseHTTPRequestHandler):
    """The HTTP side of `xlpo serve`: routes, the API key, JSON replies and SSE streams (one thread per request)."""

    service: ChatService  # set on the subclass `make_handler` returns: the server builds a handler per request
    api_key: str | None = None
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # one line per request, never headers (they hold the key)
        sys.stderr.write(f"xlpo serve: {self.command} {self.path} {args[1] if len(args) > 1 else ''}\n")

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, exc: RequestError) -> None:
        self._send(exc.status, _error_body(exc))

    def _stream(self, call: ChatCall) -> None:
        """Server-Sent Events in HTTP/1.1 chunks: one `data:` event per chunk object, then [DONE].

        A failure after the headers went out can only be told in the stream: an `error` event,
        as OpenAI does (its SDK raises it). A client that leaves stops its rows at the next token.
        """
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            try:
                for chunk in self.service.chunks(call):
                    self._event(json.dumps(chunk, ensure_ascii=False))
                self._event("[DONE]")
            except RequestError as exc:
                self._event(json.dumps(_error_body(exc), ensure_ascii=False))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            call.job.gone.set()
            self.close_connection = True

    def _event(self, data: str) -> None:
        payload = f"data: {data}\n\n".encode("utf-8")
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        self.wfile.flush()

    def _authorised(self) -> bool:
        if self.api_key is None:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
            return True
        self._error(RequestError("missing or wrong API key", 401, "authentication_error"))
        return False

    def do_GET(self):
        if self.path.rstrip("/") in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        elif self.path.rstrip("/") == "/v1/models":
            if self._authorised():
                self._send(200, self.service.models())
        else:
            self._error(RequestError(f"no route {self.path}", 404, "not_found"))

    def do_POST(self):
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(RequestError(f"no route {self.path}", 404, "not_found"))
            return
        if not self._authorised():
            return
        try:
            call = self.service.parse(self._body())
            self.service.submit(call)
            if call.job.stream:
                self._stream(call)
            else:
                self._send(200, self.service.reply(call))
        except RequestError as exc:
            self._error(exc)

    def _body(self) -> object:
        length = int(self.headers.get("Content-Length", "0"))
        if length > MAX_BODY_BYTES:
            raise RequestError("request body too large", 413)
        try:
            return json.loads(self.rfile.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RequestError("the request body is not valid JSON") from None


def make_handler(service: ChatService, api_key: str | None) -> type[ChatHandler]:
    """A handler class bound to `service` and the API key (None: no key asked)."""
    return type("BoundChatHandler", (ChatHandler,), {"service": service, "api_key": api_key})


def _error_body(exc: RequestError) -> dict:
    return {"error": {"message": str(exc), "type": exc.kind, "code": exc.status}}


def make_server(service: ChatService, host: str = "127.0.0.1", port: int = 8000,
                api_key_env: str | None = None) -> ThreadingHTTPServer:
    """A bound, not yet serving, HTTP server (port 0 picks a free port: see `server.server_address`)."""
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise UserError(f"--api-key-env {api_key_env}: that environment variable is not set")
    try:
        server = ThreadingHTTPServer((host, port), make_handler(service, api_key))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    server.daemon_threads = True
    return server


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
