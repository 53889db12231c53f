"""The HTTP side of `xlpo serve`: a FastAPI app on uvicorn, as vLLM's OpenAI-compatible server is built.

FastAPI parses and validates the JSON body (the pydantic models of `serve.protocol`), Starlette streams
Server-Sent Events and notices a streaming client that leaves, uvicorn speaks HTTP and bounds the
connections. What is xlpo's own: the API key check, the body-size limit, errors in OpenAI's shape,
and cancelling a request whose client has gone. Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import os
import socket
import threading

import uvicorn
from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from xlpo.errors import UserError
from xlpo.serve.protocol import ChatCompletionRequest, RequestError, describe_error
from xlpo.serve.service import ChatCall, ChatService

MAX_BODY_BYTES = 4 * 1024 * 1024  # the longest context of a served model fits with room to spare
MAX_CONNECTIONS = 256  # uvicorn answers 503 beyond this many open connections and requests together
DRAIN_LIMIT = 64 * 1024 * 1024  # an oversized body is read to its end (then dropped) up to this size


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is a 413 in OpenAI's error shape, sent after the body
    has been read and dropped (a server that closes early makes the client see a reset connection, not
    the answer). FastAPI's own `max_body_size` answers in plain text without draining: the SDK then
    shows no message."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        size = 0

        async def counted():
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.limit:
                    while message.get("more_body") and int(declared or 0) <= DRAIN_LIMIT:
                        message = await receive()
                    raise HTTPException(413, f"request body too large: more than {self.limit} bytes")
            return message

        await self.app(scope, counted, send)


def _error_response(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), exc.status, headers=exc.headers)


async def _client_left(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(request: Request, call: ChatCall, reply) -> dict | None:
    """The reply, or None once the client has gone (its job is then cancelled)."""
    answer, left = asyncio.ensure_future(reply), asyncio.ensure_future(_client_left(request))
    try:
        await asyncio.wait({answer, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
        if not answer.done():
            call.job.gone.set()
            answer.cancel()
    return answer.result() if not answer.cancelled() else None


async def _sse(service: ChatService, call: ChatCall):
    """Server-Sent Events: one `data:` event per chunk object, then [DONE].

    A failure after the headers went out can only be told in the stream: an `error` event, as
    OpenAI does (its SDK raises it).
    """
    try:
        async for chunk in service.chunks(call):
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"
    except RequestError as exc:
        yield f"data: {json.dumps(exc.body(), ensure_ascii=False)}\n\n"


class _Stream(StreamingResponse):
    """A streamed reply whose job is cancelled when the response ends for any reason: Starlette stops
    sending when the client disconnects, and the engine then drops the job's rows at the next token."""

    def __init__(self, service: ChatService, call: ChatCall):
        super().__init__(_sse(service, call), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.job = call.job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.gone.set()


def build_app(service: ChatService, api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The app: POST /v1/chat/completions, GET /v1/models, GET /health. `api_key` None: no key asked."""
    app = FastAPI(title="xlpo serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    def authorised(authorization: str | None = Header(None)) -> None:
        if api_key is not None and not hmac.compare_digest((authorization or "").encode(),
                                                           f"Bearer {api_key}".encode()):
            raise RequestError("missing or wrong API key", 401, "authentication_error")

    @app.get("/health")
    @app.get("/v1/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    def models() -> dict:
        return service.models()

    @app.post("/v1/chat/completions", dependencies=[Depends(authorised)])
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        call = await run_in_threadpool(service.prepare, body)  # renders and counts the prompt: off the loop
        service.submit(call)
        if call.job.stream:
            return _Stream(service, call)
        reply = await _unless_client_leaves(request, call, service.reply(call))
        return JSONResponse(reply if reply is not None else {})  # None: nobody is left to read it

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = exc.errors()[0]
        loc = tuple(error.get("loc", ()))
        return _error_response(RequestError(describe_error(loc[1:] if loc[:1] == ("body",) else loc,
                                                           error.get("msg", ""), error.get("type", ""))))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
        kind = "not_found" if exc.status_code in (404, 405) else "invalid_request_error"
        return _error_response(RequestError(str(message), exc.status_code, kind))

    return app


class Server:
    """uvicorn serving an app on a socket bound beforehand (so port 0 is known, and a busy port is a
    UserError); `serve_forever` blocks, `shutdown` (from another thread) stops it and waits."""

    def __init__(self, app: FastAPI, sock: socket.socket, log_level: str = "info", access_log: bool = True):
        self.socket = sock
        self.server_address = sock.getsockname()[:2]
        sock.listen(2048)  # connections from now on wait in the backlog until uvicorn's loop accepts them
        config = uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="off",
                                limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=5,
                                timeout_graceful_shutdown=5)
        self.uvicorn = uvicorn.Server(config)
        self.stopped = threading.Event()

    def serve_forever(self) -> None:
        try:
            self.uvicorn.run(sockets=[self.socket])
        finally:
            self.stopped.set()

    def shutdown(self) -> None:
        self.uvicorn.should_exit = True
        self.stopped.wait(30)

    def server_close(self) -> None:
        self.socket.close()


def api_key_from(api_key_env: str | None) -> str | None:
    """The key a client must send, read from the environment variable named (None: no key asked)."""
    if not api_key_env:
        return None
    api_key = os.environ.get(api_key_env)
    if not api_key:
        raise UserError(f"--api-key-env {api_key_env}: that environment variable is not set")
    return api_key


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (0: a free port), or a UserError when that address is taken."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def make_server(service: ChatService, host: str = "127.0.0.1", port: int = 8000, api_key_env: str | None = None,
                max_body_bytes: int = MAX_BODY_BYTES, log_level: str = "warning") -> Server:
    """A bound, not yet serving, server (port 0 picks a free port: see `server.server_address`)."""
    app = build_app(service, api_key_from(api_key_env), max_body_bytes)
    return Server(app, bind_socket(host, port), log_level, access_log=log_level in ("info", "debug"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
