"""`xlpo serve`: an OpenAI-compatible chat-completions server over a model and optional adapter.

Binds to 127.0.0.1 unless told otherwise. One request generates at a time (the model is not
thread-safe); requests are validated and answered with OpenAI-style error bodies.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from xlpo.generation import GenerationSettings

MAX_BODY_BYTES = 16 * 1024 * 1024
ROLES = ("system", "user", "assistant")


class RequestError(ValueError):
    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.kind = status, kind


class ChatService:
    """The protocol logic, separate from HTTP so that it is testable without sockets."""

    def __init__(self, generator, served_name: str, max_tokens_limit: int = 4096, default_max_tokens: int = 512):
        self.generator = generator
        self.served_name = served_name
        self.max_tokens_limit = max_tokens_limit
        self.default_max_tokens = default_max_tokens
        self.lock = threading.Lock()

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.served_name, "object": "model", "owned_by": "xlpo"}]}

    def chat(self, body: object) -> dict:
        messages, settings = self.parse(body)
        with self.lock:
            completions = self.generator.generate_detailed([messages], settings)[0]
        prompt_tokens = completions[0].prompt_tokens
        completion_tokens = sum(c.completion_tokens for c in completions)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.served_name,
            "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                         "finish_reason": c.finish_reason} for i, c in enumerate(completions)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def parse(self, body: object) -> tuple[list[dict], GenerationSettings]:
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.served_name:
            raise RequestError(f"model '{model}' is not served here (this server serves '{self.served_name}')",
                               404, "model_not_found")
        if body.get("stream"):
            raise RequestError("stream=true is not supported; send stream=false")
        messages = _messages(body.get("messages"))
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
        settings = GenerationSettings(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, n=n,
                                      seed=seed, batch_size=1)
        return messages, settings


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


def make_handler(service: ChatService, api_key: str | None):
    class Handler(BaseHTTPRequestHandler):
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
            self._send(exc.status, {"error": {"message": str(exc), "type": exc.kind, "code": exc.status}})

        def _authorised(self) -> bool:
            if api_key is None:
                return True
            given = self.headers.get("Authorization", "")
            if hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return True
            self._error(RequestError("missing or wrong API key", 401, "authentication_error"))
            return False

        def do_GET(self):
            if self.path.rstrip("/") in ("/health", "/v1/health"):
                self._send(200, {"status": "ok"})
            elif self.path.rstrip("/") == "/v1/models":
                if self._authorised():
                    self._send(200, service.models())
            else:
                self._error(RequestError(f"no route {self.path}", 404, "not_found"))

        def do_POST(self):
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(RequestError(f"no route {self.path}", 404, "not_found"))
                return
            if not self._authorised():
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if length > MAX_BODY_BYTES:
                    raise RequestError("request body too large", 413)
                try:
                    body = json.loads(self.rfile.read(length).decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise RequestError("the request body is not valid JSON") from None
                self._send(200, service.chat(body))
            except RequestError as exc:
                self._error(exc)
            except Exception as exc:  # a generation failure must not kill the server
                self._error(RequestError(f"generation failed: {type(exc).__name__}: {exc}", 500, "server_error"))

    return Handler


def make_server(service: ChatService, host: str = "127.0.0.1", port: int = 8000,
                api_key_env: str | None = None) -> ThreadingHTTPServer:
    """A bound, not yet serving, HTTP server (port 0 picks a free port: see `server.server_address`)."""
    from xlpo.errors import UserError

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
