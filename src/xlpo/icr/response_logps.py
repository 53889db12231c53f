"""Summed log-probs of N sampled responses to one prompt (ICR's reward scoring), the prompt forwarded once.

The prompt (all but its last token) is run once to fill a KV cache; the cache is repeated for a
batch of responses, and each row then runs [last prompt token] + response on top of it, so the
first response token is scored from the prompt's last position exactly as in a full forward.
Naive scoring (prompt + response per row, same kernels) is kept for tests and the benchmark: both
agree with `xlpo.logprobs.completion_logprobs` to float precision. Tokens are formatted exactly as
training formats them (`PairTokenizer`), end-of-turn token included.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from xlpo.data.batching import pad_sequences
from xlpo.data.tokenize import PairTokenizer
from xlpo.logprobs import ScoredRows, sequence_logprobs
from xlpo.models import eval_mode


class ResponseEncoder:
    """Prompt text and token ids, and response token ids, as the trainer will see them."""

    def __init__(self, tokenizer, chat_format: str = "tokenizer"):
        # No length limits here: scoring sees every response; training applies its own limits.
        self.pairs = PairTokenizer(tokenizer, chat_format, max_length=10**9, max_prompt_length=10**9 - 1)
        self.tokenizer = tokenizer

    def prompt_text(self, instruction: str) -> str:
        """The text generation continues from (chat template with the generation prompt)."""
        return self.pairs.prompt_text(instruction)

    def prompt_ids(self, prompt_text: str) -> list[int]:
        return self.pairs.encode_prompt(prompt_text)

    def response_ids(self, instruction: str, response: str, prompt_text: str | None = None) -> list[int]:
        """The response's tokens, ending with the end-of-turn token (scored like any other)."""
        prompt_text = self.prompt_text(instruction) if prompt_text is None else prompt_text
        return self.pairs.encode_completion(self.pairs.completion_text(instruction, prompt_text, response))


@dataclass
class GroupLogps:
    sums: list[float]
    tokens: list[int]


def _rows_logprobs(model, input_ids, completion_mask, past, chunk_size):
    """Summed log-probs of the completion tokens of right-padded rows, after an optional prefix cache.

    No attention mask is passed: with right padding no real token ever attends to a pad (attention is
    causal), and positions run on from the prefix, so a mask changes nothing but the speed (an explicit
    mask sends SDPA to a slower kernel on CPU). Pads' own outputs are never read.
    """
    rows = ScoredRows.from_completion_mask(input_ids, None, completion_mask)
    return sequence_logprobs(model, rows, chunk_size, past_key_values=past).sum


@torch.no_grad()
def shared_prompt_logprobs(model, prompt_ids: list[int], responses: list[list[int]], pad_id: int,
                           batch_size: int = 16, chunk_size: int | None = None) -> GroupLogps:
    """Summed log p(response | prompt) for every response, the prompt forwarded once.

    Rows are right-padded to the longest response of their batch; `batch_size` bounds how many
    responses (and copies of the prompt's cache) are in memory at once.
    """
    if not prompt_ids:
        raise ValueError("shared_prompt_logprobs needs at least one prompt token")
    device = next(model.parameters()).device
    with eval_mode(model):
        prefix = prompt_ids[:-1]
        cache = None
        if prefix:
            ids = torch.tensor([prefix], dtype=torch.long, device=device)
            cache = model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
        sums = [0.0] * len(responses)
        order = sorted(range(len(responses)), key=lambda i: -len(responses[i]))  # similar lengths together
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            last = [(prompt_ids[-1],)] * len(idx)
            input_ids, _, completion = (t.to(device) for t in pad_sequences(
                last, [tuple(responses[i]) for i in idx], pad_id))
            past = None
            if cache is not None:
                past = copy.deepcopy(cache)  # the forward appends to the cache: keep the prefix intact
                past.batch_repeat_interleave(len(idx))
            values = _rows_logprobs(model, input_ids, completion, past, chunk_size)
            for row, i in enumerate(idx):
                sums[i] = float(values[row])
    return GroupLogps(sums=sums, tokens=[len(r) for r in responses])


@torch.no_grad()
def naive_prompt_logprobs(model, prompt_ids: list[int], responses: list[list[int]], pad_id: int,
                          batch_size: int = 16, chunk_size: int | None = None) -> GroupLogps:
    """The same values with prompt + response forwarded for every response (the baseline: same kernels,
    no cache)."""
    device = next(model.parameters()).device
    sums: list[float] = []
    with eval_mode(model):
        for start in range(0, len(responses), batch_size):
            batch = [tuple(r) for r in responses[start:start + batch_size]]
            input_ids, _, completion = pad_sequences([tuple(prompt_ids)] * len(batch), batch, pad_id)
            values = _rows_logprobs(model, input_ids.to(device), completion.to(device), None, chunk_size)
            sums.extend(float(v) for v in values)
    return GroupLogps(sums=sums, tokens=[len(r) for r in responses])
