"""A chat backend with canned replies, shared by the benchmark tests."""

from __future__ import annotations

from xlpo.clients.chat import ChatReply


class FakeBackend:
    """Answers each request with `reply(request)` (a str, or a ChatReply for failures); records every
    request and counts the complete_many calls."""

    def __init__(self, reply, model: str = "fake-model"):
        self.reply, self.model = reply, model
        self.requests, self.calls = [], 0

    def complete_many(self, requests, progress=None):
        self.calls += 1
        self.requests.extend(requests)
        replies = [self.reply(request) for request in requests]
        return [r if isinstance(r, ChatReply) else ChatReply(text=r) for r in replies]

    def describe(self):
        return {"kind": "fake", "model": self.model}
