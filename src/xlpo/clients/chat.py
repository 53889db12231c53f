"""Chat requests and replies, and the one interface every model behind a benchmark speaks.

A benchmark never knows whether it talks to a local Hugging Face model, vLLM, `xlpo serve` or a
hosted judge: it hands a list of `ChatRequest`s to a `ChatBackend` and gets one `ChatReply` each,
in order. A failed item carries its error and no text; nothing is ever filled in for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

Messages = list[dict[str, str]]  # [{"role": "system" | "user" | "assistant", "content": str}]


@dataclass(frozen=True)
class ChatRequest:
    messages: Messages
    temperature: float = 0.0  # 0 = greedy
    max_tokens: int = 1024
    seed: int | None = None  # per-item seed for sampling; recorded with the output
    top_p: float | None = None  # nucleus sampling; None = the backend's default (1.0)
    top_logprobs: int | None = None  # also return the k most likely first tokens with their log-probs

    def to_dict(self) -> dict:
        # The optional fields appear only when set, so requests made before they existed keep their
        # hashes (and every cache and resumable stage file stays valid).
        out = asdict(self)
        for name in ("top_p", "top_logprobs"):
            if out[name] is None:
                del out[name]
        return out


@dataclass
class ChatReply:
    text: str | None  # None when the request failed
    error: str | None = None  # one-line reason when it failed
    cached: bool = False  # answered from the response cache
    usage: dict = field(default_factory=dict)
    # With ChatRequest.top_logprobs: the first generated position's most likely tokens,
    # [{"token": str, "logprob": float}], most likely first; None when the backend gave none.
    top_logprobs: list[dict] | None = None

    @property
    def ok(self) -> bool:
        return self.text is not None


class ChatBackend(Protocol):
    def complete_many(self, requests: list[ChatRequest],
                      progress: Callable[[int], None] | None = None) -> list[ChatReply]:
        """One reply per request, in order; `progress(k)` after k more are done."""
        ...

    def describe(self) -> dict:
        """What produced the replies (model, adapter, endpoint): saved with results, never secrets."""
        ...


def request_key(payload: dict) -> str:
    """A stable hash of a whole request (endpoint, model, messages, sampling), for caches."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
