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
    # Under mixed precision the model's outputs come back in fp32 while a frozen head may be bf16.
    return _ChunkedTargetLogprob.apply(hidden.to(weight.dtype), weight, bias, targets, chunk, softcap)


def _unwrap(model):
    # DDP / DeepSpeed engines keep the real module in `.module`.
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def output_head(model):
    """(weight, bias, softcap) of a plain linear output layer whose weight this process holds whole, or None
    when the head is unusual, sharded (see `sharded_output_head`), or no decoder separate from the head can
    be found (`last_hidden_state` reads the decoder's output)."""
    found = _linear_head(model)
    if found is None or not _is_local_dense(found[0].weight):
        return None
    head, softcap = found
    return head.weight, head.bias, softcap


def sharded_output_head(model):
    """(the output layer, softcap) when its weight is sharded across processes (DeepSpeed ZeRO-3, FSDP2), else None."""
    found = _linear_head(model)
    return None if found is None or _is_local_dense(found[0].weight) else found


def _linear_head(model):
    """(output layer, softcap) of a plain linear output layer the chunked head can compute, or None."""
    inner = _unwrap(model)
    config = getattr(inner, "config", None)
    if inner.get_decoder() is inner:
        return None
    head = inner.get_output_embeddings()
    if head is None or not isinstance(head, torch.nn.Linear):
        return None
    # Heads that rescale logits after the projection are computed the ordinary way.
    for attr in ("logit_scale", "logits_scaling", "output_multiplier_scale"):
        if getattr(config, attr, None) not in (None, 1, 1.0):
            return None
    return head, getattr(config, "final_logit_softcapping", None)


def _is_local_dense(weight) -> bool:
    """False for weights sharded across processes (FSDP DTensors, DeepSpeed ZeRO-3 placeholders): reading
    them outside their module's call gives a shard."""
    if type(weight).__name__ == "DTensor" or hasattr(weight, "ds_id"):
        return False
    return weight.dim() == 2 and weight.numel() > 0


@dataclass
class ScoredRows:
    """Model input rows and which of their tokens to score, for any row layout.

    The output at flat position `sources[k]` (row * width + column) predicts token `targets[k]`,
    whose log-prob counts towards sequence `sequences[k]`. Two layouts produce these: one row per
    sequence (`from_completion_mask`), and chosen and rejected sharing one copy of their prompt in
    one row (`xlpo.data.batching.shared_prompt_rows`), where the rows need a 4D attention mask
    and explicit position ids.
    """

    input_ids: Tensor  # (R, L)
    attention_mask: Tensor | None  # (R, L) padding mask, or (R, 1, L, L) bool: True = may attend
    position_ids: Tensor | None  # (R, L), or None for 0..L-1
    sources: Tensor  # (M,) long
    targets: Tensor  # (M,) long
    sequences: Tensor  # (M,) long, in [0, num_sequences)
    num_sequences: int

    @classmethod
    def from_completion_mask(cls, input_ids: Tensor, attention_mask: Tensor | None,
                             completion_mask: Tensor) -> "ScoredRows":
        """One sequence per row: token t of row i is scored from position t-1 where completion_mask[i, t]."""
        rows, cols = torch.nonzero(completion_mask[:, 1:], as_tuple=True)
        width = input_ids.shape[1]
        return cls(input_ids, attention_mask, None, sources=rows * width + cols, targets=input_ids[rows, cols + 1],
                   sequences=rows, num_sequences=input_ids.shape[0])

    def to(self, device) -> "ScoredRows":
        move = (lambda t: None if t is None else t.to(device))
        return ScoredRows(self.input_ids.to(device), move(self.attention_mask), move(self.position_ids),
                          self.sources.to(device), self.targets.to(device), self.sequences.to(device),
                          self.num_sequences)

    def token_counts(self) -> Tensor:
        """(num_sequences,) float32: scored tokens per sequence."""
        return torch.bincount(self.sequences, minlength=self.num_sequences).float()


# Architectures whose shared rows tests/test_shared_prompt.py proves equal to two rows (values and
# gradients): their positions come only from rotary embeddings of `position_ids`, and SDPA/eager attention
# takes the 4D mask as given. Anything else gets two rows: being wrong silently costs more than the saving.
SHARED_PROMPT_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                                       "gemma3", "phi3", "olmo2"})
# Rotary variants tested. "dynamic" and "longrope" choose their frequencies from the largest position id
# in the batch, which restarted position ids keep equal to that of the longest two-row row.
SHARED_PROMPT_ROPE_TYPES = frozenset({"default", "linear", "dynamic", "llama3", "longrope", "yarn"})


def shared_prompt_unsupported(model, longest_sequence: int) -> str | None:
    """Why chosen and rejected cannot share their prompt in one row on `model`, or None when they can.

    `longest_sequence` is the longest prompt + answer. Sharing is allowed only where tested exact:
    an architecture in SHARED_PROMPT_MODEL_TYPES with SDPA or eager attention (flash-attention and
    other kernels take no custom mask), a tested rotary variant, no Hub model code (it may build its
    own masks), and no sliding window shorter than a sequence (the 4D mask replaces the model's own).
    Text settings are read from `get_text_config()`: multimodal models keep them in `text_config`.
    """
    config = getattr(_unwrap(model), "config", None)
    text = _text_config(config)
    impl = getattr(text, "_attn_implementation", None) or getattr(config, "_attn_implementation", None)
    if impl not in ("sdpa", "eager"):
        return f"attention implementation '{impl}' takes no custom attention mask"
    if getattr(config, "auto_map", None):
        return "model code from the Hub (auto_map) may build its own attention masks"
    model_type = getattr(config, "model_type", None)
    if _uses_alibi(text):
        return f"'{model_type}' uses ALiBi, whose position biases follow the distance in the row, not position ids"
    if model_type not in SHARED_PROMPT_MODEL_TYPES:
        return f"model type '{model_type}' is not among those tested exact with shared rows"
    untested = sorted(_rope_types(text) - SHARED_PROMPT_ROPE_TYPES)
    if untested:
        return f"rotary scaling '{untested[0]}' is not among those tested exact with shared rows"
    window = getattr(text, "sliding_window", None)
    if isinstance(window, int) and getattr(text, "use_sliding_window", True) and window < longest_sequence:
        return f"sliding window {window} is shorter than the longest prompt + answer ({longest_sequence} tokens)"
    return None


def _text_config(config):
    """The settings of the language model: `text_config` for multimodal models, else the config itself."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _uses_alibi(text) -> bool:
    # Bloom always uses ALiBi; Falcon has a flag; MPT keeps it in attn_config.
    attn_config = getattr(text, "attn_config", None)
    return (getattr(text, "model_type", None) == "bloom" or bool(getattr(text, "alibi", False))
            or bool(getattr(attn_config, "alibi", False)))


def _rope_types(text) -> set[str]:
    """Every rotary variant a config names; per-layer-type settings (Gemma-3) are a dict of dicts."""
    params = getattr(text, "rope_parameters", None) or {}
    nested = bool(params) and all(isinstance(v, dict) for v in params.values())
    groups = params.values() if nested else [params]
    return {group.get("rope_type", "default") for group in groups}


def sequence_logprobs(model, rows: ScoredRows, chunk_size: int | None = None,
                      past_key_values=None) -> CompletionLogps:
    """Summed log-prob of each sequence's scored tokens (see `ScoredRows`).

    The model is called through its own forward (so DDP/DeepSpeed/FSDP/PEFT hooks run); the decoder's
    last hidden state feeds the chunked head. `past_key_values`: the KV cache of a prefix that every
    row continues (one copy per row; positions run on from it), e.g. a prompt shared by N responses.
    """
    cache = {} if past_key_values is None else {"past_key_values": past_key_values, "use_cache": True}
    inputs = dict(input_ids=rows.input_ids, position_ids=rows.position_ids,
                  attention_mask=_attention_for(model, rows.attention_mask), **cache)
    head = output_head(model)
    if head is not None:
        weight, bias, softcap = head
        hidden = last_hidden_state(model, **inputs)
        per_token = token_logprobs(hidden.flatten(0, 1)[rows.sources], weight, bias, rows.targets, chunk_size,
                                   softcap)
    elif (sharded := sharded_output_head(model)) is not None:
        per_token = _sharded_head_logprobs(model, *sharded, inputs, rows, chunk_size)
    else:
        return naive_sequence_logprobs(model, rows, **cache)
    sums = torch.zeros(rows.num_sequences, dtype=per_token.dtype, device=per_token.device)
    return CompletionLogps(sum=sums.index_add(0, rows.sequences, per_token), tokens=rows.token_counts())


def _sharded_head_logprobs(model, head: torch.nn.Linear, softcap: float | None, inputs: dict, rows: ScoredRows,
                           chunk_size: int | None) -> Tensor:
    """The chunked head where the output layer's weight is sharded (DeepSpeed ZeRO-3, FSDP2).

    The weight is whole only inside the layer's own call, where the engine gathers it (once; for the
    backward pass, again when the gradient reaches the call's output). So the model's own call of its
    output layer computes the scored tokens' log-probs instead of logits: it gets every position's
    hidden state (`logits_to_keep=0`) and returns what `token_logprobs` returns. What the model makes of
    that "logits" afterwards is discarded; the call's output as the engine's hooks return it (with their
    backward hooks attached) is what comes back.
    """
    def chunked(hidden):
        return token_logprobs(hidden.flatten(0, 1)[rows.sources], head.weight, head.bias, rows.targets,
                              chunk_size, softcap)

    returned: list[Tensor] = []
    handle = head.register_forward_hook(lambda _module, _args, output: returned.append(output))
    head.forward = chunked  # the instance's forward, for this call only; the engine's hooks still run around it
    try:
        model(**{"use_cache": False, **inputs}, logits_to_keep=0)
    finally:
        del head.forward
        handle.remove()
    if len(returned) != 1:
        raise RuntimeError(f"expected one call of the output layer per forward, saw {len(returned)}")
    return returned[0]


def last_hidden_state(model, **inputs) -> Tensor:
    """The decoder's final (normalised) hidden states, (R, L, H), from a call of `model` itself.

    Calling the outer model keeps the DDP/DeepSpeed/PEFT forward hooks; a forward hook on the decoder
    picks up its output, so no other layer's states are kept (`output_hidden_states=True` would hold
    every layer's: GBs at 8B without grad), and logits are computed for one position only.
    """
    captured: list[Tensor] = []
    handle = _unwrap(model).get_decoder().register_forward_hook(
        lambda _module, _args, output: captured.append(output[0]))
    try:
        model(**{"use_cache": False, **inputs}, logits_to_keep=1)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"expected one decoder call per forward, saw {len(captured)}")
    return captured[0]


def naive_sequence_logprobs(model, rows: ScoredRows, **cache) -> CompletionLogps:
    """Full logits, then log-softmax at the scored positions: for heads the chunked path cannot read."""
    logits = model(input_ids=rows.input_ids, attention_mask=_attention_for(model, rows.attention_mask),
                   position_ids=rows.position_ids, **{"use_cache": False, **cache}).logits
    picked = logits.flatten(0, 1)[rows.sources].to(_accumulation_dtype(logits))
    per_token = torch.log_softmax(picked, dim=-1).gather(1, rows.targets[:, None]).squeeze(1)
    sums = torch.zeros(rows.num_sequences, dtype=per_token.dtype, device=per_token.device)
    return CompletionLogps(sum=sums.index_add(0, rows.sequences, per_token), tokens=rows.token_counts())


def _attention_for(model, mask: Tensor | None) -> Tensor | None:
    """What the model's forward gets: no mask for right padding, a 4D mask in the form its attention reads."""
    if mask is None or mask.dim() == 2:
        return _mask_if_needed(mask)
    config = _text_config(getattr(_unwrap(model), "config", None))
    if getattr(config, "_attn_implementation", None) == "eager":
        # Eager attention adds the mask to the scores: 0 where allowed, the dtype's minimum elsewhere.
        dtype = getattr(_unwrap(model), "dtype", torch.float32)
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
    return mask


def _mask_if_needed(attention_mask: Tensor | None) -> Tensor | None:
    """None for right-padded batches: under causal attention no real token sees the padding after
    it, and without a mask PyTorch's SDPA takes its faster causal path (same values, ~7% faster)."""
    if attention_mask is None or bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all()):
        return None
    return attention_mask


def completion_logprobs(model, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor,
                        chunk_size: int | None = None) -> CompletionLogps:
    """Summed log-prob of the tokens where `completion_mask` is True, per row.

    `completion_mask[i, t]` marks token t of row i as a completion token: it is scored as
    predicted from position t-1.
    """
    return sequence_logprobs(model, ScoredRows.from_completion_mask(input_ids, attention_mask, completion_mask),
                             chunk_size)


def naive_completion_logprobs(model, input_ids: Tensor, attention_mask: Tensor,
                              completion_mask: Tensor) -> CompletionLogps:
    """The obvious full-logits computation: the reference the chunked path is tested against."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = logits.to(_accumulation_dtype(logits))
    logps = torch.log_softmax(logits[:, :-1], dim=-1)
    per_token = logps.gather(2, input_ids[:, 1:, None]).squeeze(2)
    target_mask = completion_mask[:, 1:]
    return CompletionLogps(sum=(per_token * target_mask).sum(1), tokens=target_mask.sum(1).to(per_token.dtype))
