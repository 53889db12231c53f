"""A `ChatBackend` over a model loaded in this process (Hugging Face generation, or vLLM).

Requests that share sampling settings are generated together in batches; the model loads on
first use, so building a backend for a run that turns out to be finished costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby

import torch

from xlpo.clients.chat import ChatReply, ChatRequest
from xlpo.generation import Completion, GenerationSettings, PromptEncoder, VLLMSettings, make_generator
from xlpo.models import check_adapter, eval_mode


class LocalBackend:
    def __init__(self, model: str = "embedded", adapter: str | None = None, dtype: str = "auto",
                 backend: str = "auto", batch_size: int = 8, trust_remote_code: bool = False, generator=None,
                 engine: VLLMSettings = VLLMSettings()):
        if adapter and generator is None:
            check_adapter(adapter)  # a broken adapter is one line before anything runs, not after hours of it
        self.model, self.adapter, self.dtype = model, adapter, dtype
        self.backend, self.batch_size, self.trust_remote_code = backend, batch_size, trust_remote_code
        self.engine = engine
        self._generator = generator

    @property
    def generator(self):
        if self._generator is None:
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
        settings_of = lambda r: (r.temperature, r.max_tokens, r.top_p, r.top_logprobs)  # noqa: E731
        for (temperature, max_tokens, top_p, top_logprobs), group in groupby(requests, key=settings_of):
            group = list(group)
            messages = [r.messages for r in group]
            alternatives = self.first_token_logprobs(messages, top_logprobs) if top_logprobs else None
            if alternatives is not None and max_tokens == 1 and temperature == 0:
                # Greedy one-token replies are the most likely first token: no second pass needed.
                special = set(self.generator.tokenizer.all_special_tokens)  # generate() drops them from text
                replies.extend(ChatReply(text="" if a[0]["token"] in special else a[0]["token"].strip(), top_logprobs=a)
                               for a in alternatives)
                if progress is not None:
                    progress(len(group))
                continue
            settings = GenerationSettings(max_new_tokens=max_tokens, temperature=temperature,
                                          top_p=1.0 if top_p is None else top_p,
                                          seed=group[0].seed or 0, batch_size=self.batch_size)
            completions = self.generator.generate_detailed(messages, settings, progress)
            replies.extend(_reply(c[0], a) for c, a in zip(completions, alternatives or [None] * len(group)))
        return replies

    @torch.no_grad()
    def first_token_logprobs(self, messages: list, k: int) -> list[list[dict]] | None:
        """The k most likely first reply tokens of each conversation, [{"token", "logprob"}] most likely
        first (what OpenAI's `top_logprobs` reports); None for generators without a Hugging Face model."""
        model, tok = getattr(self.generator, "model", None), getattr(self.generator, "tokenizer", None)
        if model is None or tok is None:
            return None
        encode = PromptEncoder(tok)  # the same prompt tokens (one BOS) that generation continues from
        side, tok.padding_side = tok.padding_side, "left"  # the last position is every prompt's end
        out = []
        try:
            device = next(model.parameters()).device
            with eval_mode(model):
                for start in range(0, len(messages), self.batch_size):
                    ids = encode(messages[start:start + self.batch_size], chat=True)
                    enc = tok.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(device)
                    # Left padding: positions count real tokens only, as generate() counts them.
                    positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
                    logits = model(**enc, position_ids=positions).logits[:, -1, :].float()
                    values, top = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
                    out.extend([{"token": tok.decode([i]), "logprob": float(v)} for v, i in zip(row_v, row_i.tolist())]
                               for row_v, row_i in zip(values, top))
        finally:
            tok.padding_side = side
        return out


def _reply(completion: Completion, top_logprobs: list[dict] | None = None) -> ChatReply:
    usage = {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
             "finish_reason": completion.finish_reason}
    return ChatReply(text=completion.text, usage=usage, top_logprobs=top_logprobs)
