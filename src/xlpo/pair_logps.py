"""Summed log-probs of the chosen and rejected completion of every preference pair, under one model.

The one scoring loop behind `xlpo eval rewards` and the trainer's precomputed reference: pairs are
batched by length (little padding), and each pair's prompt is computed once when the model allows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from xlpo.data.batching import collate_pairs, prompt_sharing_blocker
from xlpo.data.tokenize import TokenizedPair
from xlpo.logprobs import sequence_logprobs
from xlpo.models import eval_mode


@dataclass
class PairLogps:
    """Per pair, in the order of the pairs given: summed log-probs (float32) and completion token counts."""

    chosen: Tensor
    rejected: Tensor
    chosen_tokens: Tensor
    rejected_tokens: Tensor

    def stacked(self) -> Tensor:
        """(N, 2): chosen and rejected summed log-probs side by side."""
        return torch.stack([self.chosen, self.rejected], dim=1)

    def rows(self, pairs: list[TokenizedPair]) -> list[dict]:
        """One dict per pair: id, lang, logp_chosen, logp_rejected, tokens_chosen, tokens_rejected."""
        return [{"id": p.id, "lang": p.lang, "logp_chosen": float(self.chosen[i]),
                 "logp_rejected": float(self.rejected[i]), "tokens_chosen": int(self.chosen_tokens[i]),
                 "tokens_rejected": int(self.rejected_tokens[i])} for i, p in enumerate(pairs)]


@torch.no_grad()
def score_pairs(model, pairs: list[TokenizedPair], pad_id: int, batch_size: int = 8, chunk_size: int | None = None,
                share_prompt: bool = True, only: Iterable[int] | None = None,
                progress: Callable[[int], None] | None = None) -> PairLogps:
    """Log-probs of every pair under `model` (in eval mode), or only of the pairs `only` (others stay 0).

    With `share_prompt` (and a model whose attention allows it) each pair's prompt is computed once.
    `progress(k)` is called after each batch of k pairs.
    """
    device = next(model.parameters()).device
    share_prompt = share_prompt and prompt_sharing_blocker(model, pairs) is None
    sums = torch.zeros(len(pairs), 2, dtype=torch.float32)
    tokens = torch.zeros(len(pairs), 2, dtype=torch.long)
    order = sorted(range(len(pairs)) if only is None else only, key=lambda i: pairs[i].length)
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = collate_pairs(pairs, idx, pad_id, 1.0, share_prompt=share_prompt)
            out = sequence_logprobs(model, batch.rows.to(device), chunk_size)
            n = len(idx)
            sums[idx] = out.sum.float().cpu().view(2, n).T
            tokens[idx] = out.tokens.long().cpu().view(2, n).T
            if progress is not None:
                progress(n)
    return PairLogps(sums[:, 0], sums[:, 1], tokens[:, 0], tokens[:, 1])
