"""One Hugging Face `generate` call for many server requests, each with its own sampling settings.

Rows (request x choice) share the call; each row keeps its own temperature, top_p, seed, max_tokens and
text, which is handed to its listener as it grows and never ends in half a multi-byte character.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from xlpo.generation import Completion, IncrementalText, render_prompt, stop_token_ids

@dataclass(frozen=True)
class Sampling:
    """How one request wants its `n` choices generated (temperature 0 = greedy)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0


@dataclass
class RowsRequest:
    """What the generator needs from a request: its messages, its settings, where its text goes."""

    messages: list[dict]
    sampling: Sampling
    on_text: Callable[[int, str], None] = lambda choice, text: None  # (choice index, new text)
    cancelled: Callable[[], bool] = lambda: False  # the client left: stop its rows early


def row_generator(seed: int, choice: int, device: torch.device) -> torch.Generator:
    """The random stream of one choice of one request: the same (seed, choice) always samples alike."""
    digest = hashlib.sha256(f"{seed}:{choice}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


class RowSampler(LogitsProcessor):
    """Samples each sampled row with its own temperature, top_p (transformers' warpers) and generator.

    `generate` runs greedy (argmax), so this turns a sampled row's scores into 0 at the drawn token and
    -inf elsewhere; greedy rows pass through. Sampling per row, from the row's own generator, keeps a
    request's reply independent of which other requests shared its call.
    """

    def __init__(self, rows: list[tuple[Sampling, int]], device: torch.device):
        self.rows = []
        for sampling, choice in rows:
            if sampling.temperature == 0:
                self.rows.append(None)
                continue
            warpers = [TemperatureLogitsWarper(float(sampling.temperature))]
            if sampling.top_p < 1:
                warpers.append(TopPLogitsWarper(float(sampling.top_p)))
            self.rows.append((warpers, row_generator(sampling.seed, choice, device)))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores
        for r, row in enumerate(self.rows):
            if row is None:
                continue
            warpers, generator = row
            warped = scores[r:r + 1]
            for warper in warpers:
                warped = warper(input_ids[r:r + 1], warped)
            token = torch.multinomial(warped.softmax(dim=-1), 1, generator=generator)[0, 0]
            if out is scores:
                out = scores.clone()
            out[r] = float("-inf")
            out[r, token] = 0.0
        return out


class RowTracker(StoppingCriteria):
    """Follows every row token by token: its text, its length, and whether it has finished.

    `generate` calls a stopping criterion once per step, right after the new tokens are appended, so this
    is the one place that sees each row's token as it is made. A row finishes at a stop token ("stop"),
    at its own max_tokens ("length"), or when its client has gone; finished rows are ignored after that.
    """

    def __init__(self, tokenizer, rows: list[tuple[RowsRequest, int]], prompt_width: int, stop_ids: set[int]):
        self.rows, self.prompt_width, self.stop_ids = rows, prompt_width, stop_ids
        self.texts = [IncrementalText(tokenizer) for _ in rows]
        self.lengths = [0] * len(rows)
        self.reasons: list[str | None] = [None] * len(rows)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        tokens = input_ids[:, -1].tolist()
        for r, (request, choice) in enumerate(self.rows):
            if self.reasons[r] is not None:
                continue
            self.lengths[r] = input_ids.shape[1] - self.prompt_width
            if tokens[r] in self.stop_ids:
                self._finish(r, "stop")
                continue
            piece = self.texts[r].push(tokens[r])
            if piece:
                request.on_text(choice, piece)
            if self.lengths[r] >= request.sampling.max_tokens:
                self._finish(r, "length")
            elif request.cancelled():
                self._finish(r, "cancelled")
        return torch.tensor([reason is not None for reason in self.reasons], device=input_ids.device)

    def _finish(self, r: int, reason: str) -> None:
        self.reasons[r] = reason
        request, choice = self.rows[r]
        piece = self.texts[r].finish()
        if piece:
            request.on_text(choice, piece)


class BatchGenerator:
    """Generates every choice of every request in one `model.generate` call (left padding, per-row settings)."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.stop_ids = stop_token_ids(model, tokenizer)

    @torch.no_grad()
    def __call__(self, requests: list[RowsRequest]) -> list[list[Completion]]:
        tok, model = self.tokenizer, self.model
        rows = [(request, choice) for request in requests for choice in range(request.sampling.n)]
        texts = [render_prompt(tok, request.messages) for request, _ in rows]
        device = next(model.parameters()).device
        side, tok.padding_side = tok.padding_side, "left"  # decoder-only models continue from the right edge
        try:
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        finally:
            tok.padding_side = side
        width = enc["input_ids"].shape[1]
        tracker = RowTracker(tok, rows, width, self.stop_ids)
        sampler = RowSampler([(request.sampling, choice) for request, choice in rows], device)
        was_training = model.training
        model.eval()
        try:
            model.generate(**enc, max_new_tokens=max(r.sampling.max_tokens for r in requests), do_sample=False,
                           temperature=None, top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
                           logits_processor=LogitsProcessorList([sampler]),
                           stopping_criteria=StoppingCriteriaList([tracker]))
        finally:
            model.train(was_training)
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        completions = [Completion(text.text, int(prompt_tokens[r]), tracker.lengths[r], tracker.reasons[r] or "length")
                       for r, text in enumerate(tracker.texts)]
        out, start = [], 0
        for request in requests:
            out.append(completions[start:start + request.sampling.n])
            start += request.sampling.n
        return out
