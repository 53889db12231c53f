"""A client for any OpenAI-compatible chat-completions endpoint (judges, hosted models, `xlpo serve`),
on the official `openai` SDK.

The SDK retries what is worth retrying (connection errors, timeouts, 408/409/429/5xx, honouring
Retry-After) with backoff, times requests out and raises typed errors; this module adds what it does
not do: a limit on concurrency and request rate (every attempt, retries included, waits its turn), a
response cache keyed by the whole request so a rerun costs nothing, and one-line reasons per failed
item. The API key is read from the environment variable named and appears in no log, error, cache or
result file; without one no Authorization header is sent (and never OPENAI_API_KEY from the environment).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import openai
from openai.types.chat import ChatCompletion

from xlpo.clients.chat import ChatReply, ChatRequest, request_key
from xlpo.errors import UserError
from xlpo.fileio import write_json

# Headers the SDK fills from OPENAI_ORG_ID / OPENAI_PROJECT_ID: never sent to a third-party endpoint.
_NO_OPENAI_ACCOUNT = {"OpenAI-Organization": openai.Omit(), "OpenAI-Project": openai.Omit()}


@dataclass(frozen=True)
class EndpointSettings:
    base_url: str  # up to and including /v1, e.g. http://127.0.0.1:8000/v1
    model: str
    api_key_env: str | None = None  # name of the environment variable holding the key
    max_concurrency: int = 4
    requests_per_minute: float | None = None  # None = no limit
    max_retries: int = 5  # retries after the first attempt (the SDK's backoff: 0.5 s doubling, at most 8 s)
    timeout_s: float = 300.0
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

    def __init__(self, settings: EndpointSettings):
        self.settings = settings
        self.limiter = _RateLimiter(settings.requests_per_minute)
        self.cache = ResponseCache(settings.cache_dir) if settings.cache_dir else None
        self._auth_failure: str | None = None
        self._attempts = threading.local()  # attempts of the request this thread is making
        api_key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        if settings.api_key_env and not api_key:
            raise UserError(f"the API key variable {settings.api_key_env} is not set in the environment")
        # Without a key the SDK still wants one; the placeholder is never sent (see _extra_headers).
        self.client = openai.OpenAI(
            base_url=settings.base_url, api_key=api_key or "no-key", max_retries=settings.max_retries,
            timeout=settings.timeout_s, default_headers=_NO_OPENAI_ACCOUNT,
            http_client=openai.DefaultHttpxClient(event_hooks={"request": [self._before_attempt]}))
        self._extra_headers = {} if api_key else {"Authorization": openai.Omit()}

    def describe(self) -> dict:
        return self.settings.describe()

    def _before_attempt(self, request) -> None:
        """Runs before every HTTP attempt the SDK makes, its retries included."""
        self.limiter.wait()
        self._attempts.count = getattr(self._attempts, "count", 0) + 1

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
        reply = self._ask(payload)
        if reply.ok and self.cache is not None:
            self.cache.put(key, payload, reply)
        return reply

    def _ask(self, payload: dict) -> ChatReply:
        if self._auth_failure:
            return ChatReply(text=None, error=self._auth_failure)
        url = self.settings.base_url.rstrip("/") + "/chat/completions"
        self._attempts.count = 0
        try:
            completion = self.client.chat.completions.create(**payload, extra_headers=self._extra_headers)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            self._auth_failure = (f"{url} refused the credentials (HTTP {exc.status_code}); "
                                  f"check {self.settings.api_key_env or 'the API key variable'}")
            return ChatReply(text=None, error=self._auth_failure)
        except openai.APIStatusError as exc:
            return ChatReply(text=None, error=f"HTTP {exc.status_code}: {_error_message(exc)}{self._tries()}")
        except openai.APIConnectionError as exc:  # refused, reset, timed out: the text may hold headers
            return ChatReply(text=None, error=f"{type(exc).__name__} contacting {url}{self._tries()}")
        except openai.APIError:
            return ChatReply(text=None, error="the endpoint's reply is not a chat completion")
        return _reply_from(completion)

    def _tries(self) -> str:
        count = getattr(self._attempts, "count", 1)
        return f" (gave up after {count} attempts)" if count > 1 else ""


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body  # the reply's "error" object when there is one, else its JSON or text
    message = body.get("message") if isinstance(body, dict) else body
    return str(message if message is not None else body or exc.message)[:300].replace("\n", " ")


def _reply_from(completion) -> ChatReply:
    if not isinstance(completion, ChatCompletion) or not completion.choices:
        return ChatReply(text=None, error="the endpoint's reply is not a chat completion")
    choice = completion.choices[0]
    text = choice.message.content if choice.message is not None else None
    if not isinstance(text, str):
        return ChatReply(text=None, error="the endpoint's reply has no message content")
    usage = completion.usage.model_dump(exclude_none=True) if completion.usage is not None else {}
    usage["finish_reason"] = choice.finish_reason
    return ChatReply(text=text, usage=usage, top_logprobs=_first_top_logprobs(choice))


def _first_top_logprobs(choice) -> list[dict] | None:
    """The first token's alternatives in OpenAI's `logprobs.content[0].top_logprobs`, or None."""
    try:
        found = choice.logprobs.content[0].top_logprobs
        return [{"token": str(t.token), "logprob": float(t.logprob)} for t in found]
    except (AttributeError, IndexError, TypeError, ValueError):
        return None  # an endpoint that ignores `logprobs` (e.g. xlpo serve) answers with text only
