"""A `ChatBackend` over a model loaded in this process (Hugging Face generation, or vLLM).

Requests that share sampling settings are generated together in batches; the model loads on
first use, so building a backend for a run that turns out to be finished costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby

from xlpo.bench.chat import ChatReply, ChatRequest
from xlpo.generation import Completion, GenerationSettings, VLLMSettings


class LocalBackend:
    def __init__(self, model: str = "embedded", adapter: str | None = None, dtype: str = "auto",
                 backend: str = "auto", batch_size: int = 8, trust_remote_code: bool = False, generator=None,
                 engine: VLLMSettings = VLLMSettings()):
        self.model, self.adapter, self.dtype = model, adapter, dtype
        self.backend, self.batch_size, self.trust_remote_code = backend, batch_size, trust_remote_code
        self.engine = engine
        self._generator = generator

    @property
    def generator(self):
        if self._generator is None:
            from xlpo.generation import make_generator

            self._generator = make_generator(self.model, self.adapter, self.dtype, self.backend,
                                             self.trust_remote_code, self.engine)
        return self._generator

    def describe(self) -> dict:
        return {"kind": "local", "model": self.model, "adapter": self.adapter, "dtype": self.dtype,
                "backend": self.backend, "batch_size": self.batch_size}

    def complete_many(self, requests: list[ChatRequest],
                      progress: Callable[[int], None] | None = None) -> list[ChatReply]:
        replies: list[ChatReply] = []
        # Consecutive requests with the same sampling settings form one generate call; its seed is
        # the first request's, so the same requests in the same order always give the same text.
        for (temperature, max_tokens), group in groupby(requests, key=lambda r: (r.temperature, r.max_tokens)):
            group = list(group)
            settings = GenerationSettings(max_new_tokens=max_tokens, temperature=temperature,
                                          seed=group[0].seed or 0, batch_size=self.batch_size)
            completions = self.generator.generate_detailed([r.messages for r in group], settings, progress)
            replies.extend(_reply(c[0]) for c in completions)
        return replies


def _reply(completion: Completion) -> ChatReply:
    usage = {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
             "finish_reason": completion.finish_reason}
    return ChatReply(text=completion.text, usage=usage)
