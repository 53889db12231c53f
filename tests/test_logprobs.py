"""The chunked completion log-probs against the obvious full-logits computation: values and gradients,
for plain, PEFT-wrapped and engine-wrapped models, keeping only the decoder's last hidden state."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from transformers import AutoModelForCausalLM

from xlpo.data.batching import pad_sequences
from xlpo.logprobs import completion_logprobs, naive_completion_logprobs, token_logprobs


def _naive_token_logprobs(hidden, weight, bias, targets, softcap=None):
    logits = hidden @ weight.T
    if bias is not None:
        logits = logits + bias
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    return torch.log_softmax(logits.float(), -1).gather(1, targets[:, None]).squeeze(1)


@pytest.mark.parametrize("rows,chunk", [(1, 1), (7, 3), (16, 16), (13, 100)])
@pytest.mark.parametrize("with_bias,softcap", [(False, None), (True, None), (False, 5.0)])
def test_token_logprobs_matches_naive_values_and_grads(rows, chunk, with_bias, softcap):
    torch.manual_seed(rows * 7 + chunk)
    vocab, hidden_size = 37, 8
    h = torch.randn(rows, hidden_size, dtype=torch.float64).float().requires_grad_()
    w = torch.randn(vocab, hidden_size).requires_grad_()
    b = torch.randn(vocab).requires_grad_() if with_bias else None
    t = torch.randint(0, vocab, (rows,))
    upstream = torch.randn(rows)

    got = token_logprobs(h, w, b, t, chunk_size=chunk, softcap=softcap)
    grads = torch.autograd.grad((got * upstream).sum(), [x for x in (h, w, b) if x is not None])
    want = _naive_token_logprobs(h, w, b, t, softcap)
    want_grads = torch.autograd.grad((want * upstream).sum(), [x for x in (h, w, b) if x is not None])

    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for g, wg in zip(grads, want_grads):
        torch.testing.assert_close(g, wg, atol=1e-5, rtol=1e-4)


def test_token_logprobs_frozen_head_computes_no_weight_grad():
    h = torch.randn(5, 4, requires_grad=True)
    w = torch.randn(11, 4)  # frozen, as under LoRA
    out = token_logprobs(h, w, None, torch.randint(0, 11, (5,)), chunk_size=2)
    out.sum().backward()
    assert h.grad is not None and w.grad is None


def _awkward_batch(tokenizer):
    # Rows of very different prompt and completion lengths, including a one-token completion.
    prompts = [tuple(range(10, 13)), tuple(range(20, 41)), tuple(range(5, 6)), tuple(range(50, 58))]
    completions = [tuple(range(100, 117)), (7,), tuple(range(300, 302)), tuple(range(900, 931))]
    return pad_sequences(prompts, completions, tokenizer.pad_token_id)


@pytest.mark.parametrize("chunk", [1, 5, None])
def test_completion_logprobs_matches_full_logits(tiny_model_dir, tokenizer, chunk):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    input_ids, attention, completion = _awkward_batch(tokenizer)

    got = completion_logprobs(model, input_ids, attention, completion, chunk_size=chunk)
    params = [p for p in model.parameters()]
    got_grads = torch.autograd.grad(got.sum.sum(), params, allow_unused=True)
    want = naive_completion_logprobs(model, input_ids, attention, completion)
    want_grads = torch.autograd.grad(want.sum.sum(), params, allow_unused=True)

    torch.testing.assert_close(got.sum, want.sum, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.tokens, torch.tensor([17.0, 1.0, 2.0, 31.0]))
    for (name, _), g, wg in zip(model.named_parameters(), got_grads, want_grads):
        if wg is None:
            assert g is None or torch.count_nonzero(g) == 0, name
            continue
        torch.testing.assert_close(g, wg, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_completion_logprobs_ignores_padding(tiny_model_dir, tokenizer):
    """A row's result does not depend on what else is in the batch (right padding, masks)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    input_ids, attention, completion = _awkward_batch(tokenizer)
    batch = completion_logprobs(model, input_ids, attention, completion).sum
    for row in range(input_ids.shape[0]):
        n = int(attention[row].sum())
        alone = completion_logprobs(model, input_ids[row:row + 1, :n], attention[row:row + 1, :n],
                                    completion[row:row + 1, :n]).sum
        torch.testing.assert_close(alone, batch[row:row + 1], atol=1e-5, rtol=1e-5)


def test_mask_is_dropped_only_for_right_padding():
    from xlpo.logprobs import _mask_if_needed

    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert _mask_if_needed(right) is None and _mask_if_needed(None) is None
    assert _mask_if_needed(left) is left


def test_in_place_logsumexp_matches_torch_and_keeps_infinities():
    from xlpo.logprobs import _logsumexp_in_place

    torch.manual_seed(0)
    logits = torch.randn(5, 1000, dtype=torch.float64) * 30 + 500  # large values: needs the max shift
    logits[1, :10] = float("-inf")  # some impossible tokens
    logits[2] = float("-inf")  # a row where every token is impossible
    expected = torch.logsumexp(logits, dim=-1)
    got = _logsumexp_in_place(logits.clone())
    assert torch.allclose(got[[0, 1, 3, 4]], expected[[0, 1, 3, 4]], rtol=0, atol=1e-10)
    assert got[2] == float("-inf") and expected[2] == float("-inf")


def _spy_on_layer_outputs(model) -> list:
    """Weak references to every decoder layer's output, filled as the model runs."""
    outputs = []
    for layer in model.model.layers:
        layer.register_forward_hook(
            lambda _m, _a, out: outputs.append(weakref.ref(out[0] if isinstance(out, tuple) else out)))
    return outputs


def test_only_the_last_hidden_state_outlives_the_forward(tokenizer, monkeypatch):
    """Without grad (the reference pass, scoring) no layer's hidden states are alive while the head
    runs: `output_hidden_states=True` kept all of them (at 8B, 33 x batch x length x 4,096 values)."""
    import xlpo.logprobs as logprobs

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2))
    with torch.no_grad():
        want = naive_completion_logprobs(model, *_awkward_batch(tokenizer))
    layer_outputs = _spy_on_layer_outputs(model)
    alive_at_head = []
    real_head = logprobs.token_logprobs

    def head_counting_live_states(*args, **kwargs):
        gc.collect()
        alive_at_head.append(sum(ref() is not None for ref in layer_outputs))
        return real_head(*args, **kwargs)

    monkeypatch.setattr(logprobs, "token_logprobs", head_counting_live_states)
    with torch.no_grad():
        got = completion_logprobs(model, *_awkward_batch(tokenizer))
    torch.testing.assert_close(got.sum, want.sum, atol=1e-5, rtol=1e-5)
    assert len(layer_outputs) == 6 and alive_at_head == [0]


class _Engine(torch.nn.Module):
    """Stands in for DDP / a DeepSpeed engine: the real model in `.module`, calls counted."""

    def __init__(self, module):
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, **kwargs):
        self.calls += 1
        return self.module(**kwargs)


@pytest.mark.parametrize("wrapping", ["peft", "engine", "engine+peft"])
def test_wrapped_models_are_called_through_their_own_forward(tiny_model_dir, tokenizer, wrapping):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    if "peft" in wrapping:  # non-zero LoRA weights, so the adapter changes the result
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    outer = _Engine(model) if "engine" in wrapping else model
    batch = _awkward_batch(tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]

    got = completion_logprobs(outer, *batch, chunk_size=5)
    got_grads = torch.autograd.grad(got.sum.sum(), params, allow_unused=True)
    want = naive_completion_logprobs(model, *batch)
    want_grads = torch.autograd.grad(want.sum.sum(), params, allow_unused=True)

    torch.testing.assert_close(got.sum, want.sum, atol=1e-5, rtol=1e-5)
    for g, wg in zip(got_grads, want_grads):
        torch.testing.assert_close(g, wg, atol=1e-5, rtol=1e-4)
    if "engine" in wrapping:
        assert outer.calls == 1  # its forward (and so its hooks) ran
