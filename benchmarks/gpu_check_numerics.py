"""gpu_check.py's numerics: chunked log-probs against full logits, the shared-prompt row against two
rows (SDPA and eager), in fp32 and bf16, on a random Llama with Llama-3's vocabulary.

Every bf16 result is also compared with the fp32 two-row full-logits result of the same weights,
the "truth": a bf16 path passes when its error against the truth is no more than twice that of
the plain bf16 computation (full logits, two rows), i.e. when it adds nothing beyond bf16 rounding.
"""

from __future__ import annotations

import random
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from xlpo.data.batching import shared_prompt_rows, two_row_layout
from xlpo.logprobs import naive_sequence_logprobs, sequence_logprobs, shared_prompt_unsupported

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FP32_VALUE_RTOL = 1e-5  # fp32 sums of ~100-300 log-probs, relative to the largest magnitude
FP32_GRAD_RTOL = 1e-4  # relative norm of the gradient difference over all parameters


def llama_config(vocab: int, shape: dict, tokenizer) -> LlamaConfig:
    hidden = shape["hidden"]
    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=shape.get("intermediate", 4 * hidden),
                       num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                       num_key_value_heads=shape["kv_heads"], max_position_embeddings=4096,
                       tie_word_embeddings=shape.get("tie", False), bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def model_copy(config, state: dict, dtype: torch.dtype, attn: str, device: str):
    """The same random weights in `dtype`, with attention implementation `attn`."""
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=dtype)
    model.load_state_dict(state)
    return model.train()


def random_pairs(n: int, prompt: int, answer: int, vocab: int, seed: int = 0):
    """Token ids of n pairs with different prompt and answer lengths (never all equal: padding is exercised)."""
    rng = random.Random(seed)

    def ids(longest: int) -> tuple[int, ...]:
        return tuple(rng.randrange(3, vocab) for _ in range(rng.randint(max(2, longest // 2), longest)))

    return [ids(prompt) for _ in range(n)], [ids(answer) for _ in range(n)], [ids(answer) for _ in range(n)]


def forward_backward(model, rows, fn, weights: torch.Tensor, device: str) -> dict:
    """Values of fn(model, rows) (per-sequence summed log-probs), the gradient of weights . values for
    every parameter, and the peak memory of the forward and backward (CUDA)."""
    model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    values = fn(model, rows).sum
    (values * weights).sum().backward()
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    peak = None
    if device == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    model.zero_grad(set_to_none=True)
    return {"values": values.detach().float(), "grads": grads, "peak_mb": peak}


def timed(model, rows, fn, weights, device: str, repeats: int) -> float | None:
    """Median seconds of forward + backward, after one warm-up when repeating (None when repeats is 0)."""
    times = []
    for i in range(repeats + (repeats > 1)):
        if device == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        (fn(model, rows).sum * weights).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - tic)
        model.zero_grad(set_to_none=True)
    return statistics.median(times[repeats > 1:]) if times else None


def attention_ops(model, rows, device: str) -> list[str]:
    """Names of the attention operators and kernels that one forward runs (profiler), most frequent first."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.no_grad(), profile(activities=activities) as prof:
        sequence_logprobs(model, rows)
    words = ("scaled_dot_product", "attention", "flash", "fmha", "efficient", "cudnn", "softmax")
    names = [(e.count, e.key) for e in prof.key_averages() if any(w in e.key.lower() for w in words)]
    return [name[:120] for _, name in sorted(names, reverse=True)[:12]]


def compare(got: dict, want: dict) -> dict:
    """Largest value difference (absolute and relative to the largest |value|) and the relative norm
    of the gradient difference over all parameters, with the worst single tensor."""
    dv = (got["values"] - want["values"]).abs().max().item()
    scale = want["values"].abs().max().item() or 1.0
    num = sum(float((got["grads"][n] - g).pow(2).sum()) for n, g in want["grads"].items())
    den = sum(float(g.pow(2).sum()) for g in want["grads"].values()) or 1.0
    worst = max(((float((got["grads"][n] - g).norm() / g.norm()), n) for n, g in want["grads"].items()
                 if float(g.norm()) > 0), default=(0.0, None))
    return {"value_max_abs": dv, "value_max_rel": dv / scale, "grad_rel_norm": (num / den) ** 0.5,
            "worst_grad_tensor": {"name": worst[1], "rel_norm": worst[0]}}


def finite(*results: dict) -> bool:
    return all(bool(torch.isfinite(r["values"]).all()) and all(bool(torch.isfinite(g).all()) for g in r["grads"].values())
               for r in results)


def agrees(dtype: str, got: dict, plain: dict, truth: dict) -> dict[str, bool]:
    """fp32: got equals plain to fp32 rounding. bf16: got is no further from the fp32 truth than plain."""
    if dtype == "fp32":
        diff = compare(got, plain)
        return {"values_match": diff["value_max_rel"] <= FP32_VALUE_RTOL, "grads_match": diff["grad_rel_norm"] <= FP32_GRAD_RTOL}
    mine, baseline = compare(got, truth), compare(plain, truth)
    return {"values_within_bf16_rounding": mine["value_max_abs"] <= 2 * baseline["value_max_abs"] + 1e-6,
            "grads_within_bf16_rounding": mine["grad_rel_norm"] <= 2 * baseline["grad_rel_norm"] + 1e-6}


def run(section, device: str, vocab: int, shape: dict, tokenizer) -> None:
    config = llama_config(vocab, shape, tokenizer)
    torch.manual_seed(0)
    with torch.device(device):
        state = AutoModelForCausalLM.from_config(config, dtype=torch.float32).state_dict()
    prompts, chosen, rejected = random_pairs(shape["pairs"], shape["prompt"], shape["answer"], len(tokenizer))
    pad = tokenizer.pad_token_id
    two = two_row_layout(prompts, chosen, rejected, pad).to(device)
    shared = shared_prompt_rows(prompts, chosen, rejected, pad).to(device)
    weights = torch.randn(2 * shape["pairs"], generator=torch.Generator().manual_seed(1)).to(device)
    chunk = shape["chunk_size"]
    chunked = lambda m, r: sequence_logprobs(m, r, chunk)  # noqa: E731
    full = lambda m, r: naive_sequence_logprobs(m, r)  # noqa: E731
    truth = {}

    def head(dtype: str) -> dict:
        model = model_copy(config, state, DTYPES[dtype], "sdpa", device)
        plain = forward_backward(model, two, full, weights, device)
        got = forward_backward(model, two, chunked, weights, device)
        if dtype == "fp32":
            truth.update(plain)
        return {"chunk_size": chunk, "rows": int(two.sources.numel()), "vs_full_logits": compare(got, plain),
                "vs_fp32_truth": compare(got, truth), "full_logits_vs_fp32_truth": compare(plain, truth),
                "peak_mb": {"chunked": got["peak_mb"], "full_logits": plain["peak_mb"]},
                "seconds": {"chunked": timed(model, two, chunked, weights, device, shape["repeats"]),
                            "full_logits": timed(model, two, full, weights, device, shape["repeats"])},
                "checks": {"finite": finite(got, plain), **agrees(dtype, got, plain, truth)}}

    def sharing(dtype: str, attn: str) -> dict:
        model = model_copy(config, state, DTYPES[dtype], attn, device)
        plain = forward_backward(model, two, chunked, weights, device)
        got = forward_backward(model, shared, chunked, weights, device)
        longest = max(len(p) + len(c) + len(r) for p, c, r in zip(prompts, chosen, rejected))
        return {"xlpo_would_share": shared_prompt_unsupported(model, longest) is None,
                "vs_two_rows": compare(got, plain), "vs_fp32_truth": compare(got, truth),
                "two_rows_vs_fp32_truth": compare(plain, truth),
                "attention_ops": {"shared": attention_ops(model, shared, device), "two_rows": attention_ops(model, two, device)},
                "seconds": {"shared": timed(model, shared, chunked, weights, device, shape["repeats"]),
                            "two_rows": timed(model, two, chunked, weights, device, shape["repeats"])},
                "tokens": {"shared": int(shared.input_ids.numel()), "two_rows": int(two.input_ids.numel())},
                "checks": {"finite": finite(got, plain), **agrees(dtype, got, plain, truth)}}

    estimate = 20 if device == "cuda" else 0
    section.run("chunked_vs_full_logits/fp32", lambda: head("fp32"), estimate)
    if not truth:
        return  # every later comparison needs the fp32 truth
    section.run("chunked_vs_full_logits/bf16", lambda: head("bf16"), estimate)
    for dtype in DTYPES:
        for attn in ("sdpa", "eager"):
            section.run(f"shared_vs_two_rows/{dtype}/{attn}", lambda d=dtype, a=attn: sharing(d, a), estimate)
