"""A client for any OpenAI-compatible chat-completions endpoint: judges, hosted models, `xlpo serve`.

Retries transient failures with backoff, limits concurrency and request rate, and keeps a
response cache keyed by the whole request so a rerun costs nothing. The API key is read from an
environment variable at request time and appears in no log, error, cache or result file.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

from xlpo.clients.chat import ChatReply, ChatRequest, request_key
from xlpo.errors import UserError
from xlpo.fileio import write_json

# Worth retrying: rate limits, timeouts and server-side failures. Everything else is the request's fault.
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class EndpointSettings:
    base_url: str  # up to and including /v1, e.g. http://127.0.0.1:8000/v1
    model: str
    api_key_env: str | None = None  # name of the environment variable holding the key
    max_concurrency: int = 4
    requests_per_minute: float | None = None  # None = no limit
    max_retries: int = 5
    timeout_s: float = 300.0
    backoff_s: float = 1.0  # first retry waits about this long, doubling each time (capped at 60 s)
    cache_dir: Path | None = None  # None = no response cache

    def describe(self) -> dict:
        return {"kind": "endpoint", "base_url": self.base_url, "model": self.model,
                "api_key_env": self.api_key_env}


class _RateLimiter:
    """Spaces request starts at least 60/rpm seconds apart across all worker threads."""

    def __init__(self, requests_per_minute: float | None):
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        time.sleep(max(0.0, start - now))


class ResponseCache:
    """One JSON file per successful reply, named by the hash of the whole request."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # absent, or unreadable: ask again rather than trust it

    def put(self, key: str, payload: dict, reply: ChatReply) -> None:
        write_json(self._path(key), {"request": payload, "text": reply.text, "usage": reply.usage,
                                     "top_logprobs": reply.top_logprobs})


class EndpointBackend:
    """`ChatBackend` over HTTP: POST {base_url}/chat/completions, one request per item."""

    def __init__(self, settings: EndpointSettings, session=None):
        self.settings = settings
        self.session = session or requests.Session()
        self.limiter = _RateLimiter(settings.requests_per_minute)
        self.cache = ResponseCache(settings.cache_dir) if settings.cache_dir else None
        self._auth_failure: str | None = None
        if settings.api_key_env and not os.environ.get(settings.api_key_env):
            raise UserError(f"the API key variable {settings.api_key_env} is not set in the environment")

    def describe(self) -> dict:
        return self.settings.describe()

    def payload(self, request: ChatRequest) -> dict:
        body = {"model": self.settings.model, "messages": request.messages,
                "temperature": request.temperature, "max_tokens": request.max_tokens}
        if request.seed is not None:
            body["seed"] = request.seed
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.top_logprobs is not None:
            body.update(logprobs=True, top_logprobs=request.top_logprobs)
        return body

    def complete_many(self, requests: list[ChatRequest],
                      progress: Callable[[int], None] | None = None) -> list[ChatReply]:
        def one(request: ChatRequest) -> ChatReply:
            reply = self.complete(request)
            if progress is not None:
                progress(1)
            return reply

        with ThreadPoolExecutor(max_workers=max(1, self.settings.max_concurrency)) as pool:
            replies = list(pool.map(one, requests))
        if self._auth_failure:
            raise UserError(self._auth_failure)
        return replies

    def complete(self, request: ChatRequest) -> ChatReply:
        payload = self.payload(request)
        key = request_key({"base_url": self.settings.base_url.rstrip("/"), **payload})
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return ChatReply(text=hit["text"], cached=True, usage=hit.get("usage", {}),
                             top_logprobs=hit.get("top_logprobs"))
        reply = self._post_with_retries(payload)
        if reply.ok and self.cache is not None:
            self.cache.put(key, payload, reply)
        return reply

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.settings.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.settings.api_key_env, '')}"
        return headers

    def _post_with_retries(self, payload: dict) -> ChatReply:
        url = self.settings.base_url.rstrip("/") + "/chat/completions"
        error, retry_after = "not attempted", None
        for attempt in range(self.settings.max_retries + 1):
            if self._auth_failure:
                return ChatReply(text=None, error=self._auth_failure)
            if attempt:
                time.sleep(self._backoff(attempt, retry_after))
            retry_after = None
            self.limiter.wait()
            try:
                response = self.session.post(url, json=payload, headers=self._headers(),
                                             timeout=self.settings.timeout_s)
            except requests.RequestException as exc:
                error = f"{type(exc).__name__} contacting {url}"  # the exception text may hold headers
                continue
            if response.status_code in (401, 403):
                self._auth_failure = (f"{url} refused the credentials (HTTP {response.status_code}); "
                                      f"check {self.settings.api_key_env or 'the API key variable'}")
                return ChatReply(text=None, error=self._auth_failure)
            if response.status_code != 200:
                error = f"HTTP {response.status_code}: {_error_message(response)}"
                if response.status_code not in RETRY_STATUS:
                    return ChatReply(text=None, error=error)
                retry_after = _retry_after(response)
                continue
            return _parse_completion(response)
        return ChatReply(text=None, error=f"{error} (gave up after {self.settings.max_retries + 1} attempts)")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, 120.0)
        base = min(self.settings.backoff_s * 2 ** (attempt - 1), 60.0)
        return base * (0.5 + random.random() / 2)  # jitter keeps parallel workers from retrying in step


def _retry_after(response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


def _error_message(response) -> str:
    try:
        body = response.json()
        message = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("error")
        return str(message or body)[:300].replace("\n", " ")
    except ValueError:
        return response.text[:300].replace("\n", " ")


def _parse_completion(response) -> ChatReply:
    try:
        body = response.json()
        choice = body["choices"][0]
        text = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ChatReply(text=None, error="the endpoint's reply is not a chat completion")
    if not isinstance(text, str):
        return ChatReply(text=None, error="the endpoint's reply has no message content")
    usage = dict(body.get("usage") or {})
    usage["finish_reason"] = choice.get("finish_reason")
    return ChatReply(text=text, usage=usage, top_logprobs=_first_top_logprobs(choice))


def _first_top_logprobs(choice: dict) -> list[dict] | None:
    """The first token's alternatives in OpenAI's `logprobs.content[0].top_logprobs`, or None."""
    try:
        found = choice["logprobs"]["content"][0]["top_logprobs"]
        return [{"token": str(t["token"]), "logprob": float(t["logprob"])} for t in found]
    except (KeyError, IndexError, TypeError, ValueError):
        return None  # an endpoint that ignores `logprobs` (e.g. xlpo serve) answers with text only
