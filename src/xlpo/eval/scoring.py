"""Score preference pairs with a model and summarise reward accuracy per language.

Reward accuracy follows the CAPO paper (Appendix B): the share of pairs whose chosen response
scores higher than the rejected one under the model itself. The paper's definition is ambiguous
between summed and per-token-mean log-probs, so both are reported.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from xlpo.data.batching import collate_pairs, prompt_sharing_blocker
from xlpo.data.tokenize import TokenizedPair
from xlpo.logprobs import sequence_logprobs


@torch.no_grad()
def score_pairs(model, pairs: list[TokenizedPair], pad_id: int, batch_size: int = 8, device=None,
                chunk_size: int | None = None, share_prompt: bool = True) -> list[dict]:
    """Per pair: id, lang, summed log-probs and token counts of chosen and rejected.

    With `share_prompt` (and a model whose attention allows it) each pair's prompt is computed once.
    """
    device = device or next(model.parameters()).device
    share_prompt = share_prompt and prompt_sharing_blocker(model, pairs) is None
    was_training = model.training
    model.eval()
    rows: dict[int, dict] = {}
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)  # similar lengths: little padding
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        chunk = [pairs[i] for i in idx]
        batch = collate_pairs(pairs, idx, pad_id, 1.0, share_prompt=share_prompt)
        out = sequence_logprobs(model, batch.rows.to(device), chunk_size)
        sums, tokens = out.sum.cpu().tolist(), out.tokens.cpu().tolist()
        n = len(chunk)
        for k, (i, pair) in enumerate(zip(idx, chunk)):
            rows[i] = {"id": pair.id, "lang": pair.lang, "logp_chosen": sums[k], "logp_rejected": sums[n + k],
                       "tokens_chosen": int(tokens[k]), "tokens_rejected": int(tokens[n + k])}
    model.train(was_training)
    return [rows[i] for i in range(len(pairs))]


def accuracy_by_language(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{lang or 'all': {pairs, acc_sum, acc_mean}}: chosen beats rejected by summed / per-token-mean log-prob."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["lang"] or "unknown"].append(row)
        groups["all"].append(row)
    table = {}
    for lang, items in sorted(groups.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        sum_wins = sum(r["logp_chosen"] > r["logp_rejected"] for r in items)
        mean_wins = sum(r["logp_chosen"] / r["tokens_chosen"] > r["logp_rejected"] / r["tokens_rejected"]
                        for r in items)
        table[lang] = {"pairs": len(items), "acc_sum": sum_wins / len(items), "acc_mean": mean_wins / len(items)}
    return table
