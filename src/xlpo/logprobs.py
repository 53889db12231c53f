"""Log-probabilities of completions given prompts, without ever materialising full logits.

The model body runs once over chosen and rejected rows together; the output projection and
log-softmax then run only on completion positions, in chunks, and the backward pass recomputes
each chunk's logits instead of storing them, so memory for the head is O(chunk x vocab).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Target ~128 MB of fp32 logits per chunk; at Llama-3's vocabulary (128,256) that is 261 rows.
_CHUNK_BYTES = 128 * 2**20


@dataclass
class CompletionLogps:
    """Per-row results: summed log-prob of the completion tokens and how many there are."""

    sum: Tensor  # (N,) float32, differentiable when computed with grad
    tokens: Tensor  # (N,) float32 counts

    @property
    def mean(self) -> Tensor:
        return self.sum / self.tokens.clamp(min=1)


def auto_chunk_size(vocab_size: int) -> int:
    return int(max(64, min(4096, _CHUNK_BYTES // (4 * vocab_size))))


class _ChunkedTargetLogprob(torch.autograd.Function):
    """log_softmax(hidden @ W.T + bias)[target] per row, chunked, with recomputation in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size: int, softcap: float | None):
        rows = hidden.shape[0]
        acc = _accumulation_dtype(hidden)
        out = torch.empty(rows, dtype=acc, device=hidden.device)
        lse_all = torch.empty(rows, dtype=acc, device=hidden.device)
        buffer = None
        for start in range(0, rows, chunk_size):
            end = min(start + chunk_size, rows)
            logits, buffer = _chunk_logits(hidden[start:end], weight, bias, softcap, buffer)
            target_logits = logits.gather(1, targets[start:end, None]).squeeze(1)
            lse = _logsumexp_in_place(logits)
            out[start:end] = target_logits - lse
            lse_all[start:end] = lse
        ctx.save_for_backward(hidden, weight, bias, targets, lse_all)
        ctx.chunk_size, ctx.softcap = chunk_size, softcap
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, targets, lse_all = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        acc = _accumulation_dtype(hidden)
        grad_w = torch.zeros_like(weight, dtype=acc) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=acc) if (need_b and bias is not None) else None
        grad_out = grad_out.to(acc)
        buffer = None
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            end = min(start + ctx.chunk_size, hidden.shape[0])
            h = hidden[start:end]
            logits, buffer = _chunk_logits(h, weight, bias, ctx.softcap, buffer)
            g_rows = grad_out[start:end]
            # d logp[t] / d logits = onehot(t) - softmax; computed in place in the logits buffer.
            grad_logits = logits.sub_(lse_all[start:end, None]).exp_().mul_(-g_rows[:, None])
            grad_logits.scatter_add_(1, targets[start:end, None], g_rows[:, None])
            if ctx.softcap is not None:
                raw = h @ weight.T if bias is None else torch.addmm(bias, h, weight.T)
                grad_logits.mul_(1 - torch.tanh(raw.to(acc) / ctx.softcap) ** 2)
            grad_logits_w = grad_logits.to(weight.dtype)
            if need_h:
                grad_h[start:end] = (grad_logits_w @ weight).to(hidden.dtype)
            if need_w:
                grad_w.addmm_(grad_logits_w.T.to(acc), h.to(acc))
            if grad_b is not None:
                grad_b += grad_logits.sum(0)
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        grad_b = grad_b.to(bias.dtype) if grad_b is not None else None
        return grad_h, grad_w, grad_b, None, None, None


def _logsumexp_in_place(logits: Tensor) -> Tensor:
    """logsumexp over the vocabulary, overwriting `logits` (a chunk nothing else reads afterwards).

    torch.logsumexp would allocate a second chunk-sized temporary for exp(logits - max): at a
    128k vocabulary that doubles the head's peak memory.
    """
    peak = logits.amax(dim=-1, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))  # an all -inf row stays -inf
    return logits.sub_(peak).exp_().sum(dim=-1).log_().add_(peak.squeeze(-1))


def _accumulation_dtype(hidden: Tensor) -> torch.dtype:
    # Softmax statistics in fp32 for fp32/bf16/fp16 models; fp64 stays fp64 (used to check precision).
    return torch.float64 if hidden.dtype == torch.float64 else torch.float32


def _chunk_logits(h: Tensor, weight: Tensor, bias: Tensor | None, softcap: float | None, buffer: Tensor | None):
    """fp32 logits of one chunk; in fp32 the same buffer is reused (fresh pages cost page faults on CPU)."""
    rows = h.shape[0]
    if h.dtype == torch.float32 and weight.dtype == torch.float32 and softcap is None:
        if buffer is None or buffer.shape[0] < rows:
            buffer = torch.empty(rows, weight.shape[0], dtype=torch.float32, device=h.device)
        logits = buffer[:rows]
        torch.matmul(h, weight.T, out=logits)
        if bias is not None:
            logits.add_(bias)
        return logits, buffer
    logits = (h @ weight.T if bias is None else torch.addmm(bias, h, weight.T)).to(_accumulation_dtype(h))
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    return logits, None


def token_logprobs(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                   chunk_size: int | None = None, softcap: float | None = None) -> Tensor:
    """log p(target_i | hidden_i) for each row of `hidden` (M, H); never holds more than a chunk of logits."""
    chunk = chunk_size or auto_chunk_size(weight.shape[0])
    return _ChunkedTargetLogprob.apply(hidden, weight, bias, targets, chunk, softcap)


def _unwrap(model):
    # DDP / DeepSpeed engines keep the real module in `.module`.
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def output_head(model):
    """(weight, bias, softcap) of a plain linear output layer, or None when the head is unusual."""
    inner = _unwrap(model)
    config = getattr(inner, "config", None)
    head = inner.get_output_embeddings()
    if head is None or not isinstance(head, torch.nn.Linear):
        return None
    # Heads that rescale logits after the projection are computed the ordinary way.
    for attr in ("logit_scale", "logits_scaling", "output_multiplier_scale"):
        if getattr(config, attr, None) not in (None, 1, 1.0):
            return None
    if not _is_local_dense(head.weight):
        return None
    return head.weight, head.bias, getattr(config, "final_logit_softcapping", None)


def _is_local_dense(weight) -> bool:
    """False for weights sharded across processes (FSDP DTensors, DeepSpeed ZeRO-3 placeholders):
    reading them outside the engine's forward gives a shard, so those runs use the full-logits path."""
    if type(weight).__name__ == "DTensor" or hasattr(weight, "ds_id"):
        return False
    return weight.dim() == 2 and weight.numel() > 0


def completion_logprobs(model, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor,
                        chunk_size: int | None = None) -> CompletionLogps:
    """Summed log-prob of the tokens where `completion_mask` is True, per row.

    `completion_mask[i, t]` marks token t of row i as a completion token: it is scored as
    predicted from position t-1. The model is called through its own forward (so DDP/DeepSpeed
    hooks run) with logits for one position only; the hidden states feed the chunked head.
    """
    head = output_head(model)
    if head is None:
        return naive_completion_logprobs(model, input_ids, attention_mask, completion_mask)
    weight, bias, softcap = head
    out = model(input_ids=input_ids, attention_mask=_mask_if_needed(attention_mask), output_hidden_states=True,
                logits_to_keep=1, use_cache=False)
    hidden = out.hidden_states[-1]
    target_mask = completion_mask[:, 1:]
    rows = torch.nonzero(target_mask, as_tuple=True)[0]
    selected = hidden[:, :-1][target_mask]
    targets = input_ids[:, 1:][target_mask]
    per_token = token_logprobs(selected, weight, bias, targets, chunk_size, softcap)
    sums = torch.zeros(input_ids.shape[0], dtype=per_token.dtype, device=input_ids.device)
    sums = sums.index_add(0, rows, per_token)
    return CompletionLogps(sum=sums, tokens=target_mask.sum(1).to(sums.dtype))


def _mask_if_needed(attention_mask: Tensor | None) -> Tensor | None:
    """None for right-padded batches: under causal attention no real token sees the padding after
    it, and without a mask PyTorch's SDPA takes its faster causal path (same values, ~7% faster)."""
    if attention_mask is None or bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all()):
        return None
    return attention_mask


def naive_completion_logprobs(model, input_ids: Tensor, attention_mask: Tensor,
                              completion_mask: Tensor) -> CompletionLogps:
    """The obvious full-logits computation: the reference the chunked path is tested against."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = logits.to(_accumulation_dtype(logits))
    logps = torch.log_softmax(logits[:, :-1], dim=-1)
    per_token = logps.gather(2, input_ids[:, 1:, None]).squeeze(2)
    target_mask = completion_mask[:, 1:]
    return CompletionLogps(sum=(per_token * target_mask).sum(1), tokens=target_mask.sum(1).to(per_token.dtype))
