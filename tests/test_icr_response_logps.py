"""Shared-prompt scoring equals naive scoring (prompt + response per row), also through a PEFT adapter."""

from __future__ import annotations

import pytest
import torch

from xlpo.icr.prompts import crosslingual_instruction
from xlpo.icr.response_logps import ResponseEncoder, naive_prompt_logprobs, shared_prompt_logprobs
from xlpo.models import apply_lora, load_model, reference_mode

RESPONSES = ["Cuatro.", "La respuesta es cuatro: dos más dos son cuatro, como sabe todo el mundo.", "", "4",
             "Es un número par, el cuatro, y también un cuadrado perfecto."]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir), "float32")


def _encoded(tokenizer, lang="es"):
    encoder = ResponseEncoder(tokenizer)
    instruction = crosslingual_instruction("What is two plus two?", lang)
    text = encoder.prompt_text(instruction)
    return encoder.prompt_ids(text), [encoder.response_ids(instruction, y, text) for y in RESPONSES]


def test_responses_end_with_the_end_of_turn_token(tokenizer):
    prompt_ids, responses = _encoded(tokenizer)
    assert all(r[-1] == tokenizer.eos_token_id for r in responses)
    assert responses[2] == [tokenizer.eos_token_id]  # an empty response is still scored: its end of turn
    assert tokenizer.decode(prompt_ids).endswith("using only Spanish, unless explicitly instructed to respond in a "
                                                 "different language.\n\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_shared_equals_naive(model, tokenizer, batch_size):
    prompt_ids, responses = _encoded(tokenizer)
    shared = shared_prompt_logprobs(model, prompt_ids, responses, tokenizer.pad_token_id, batch_size)
    naive = naive_prompt_logprobs(model, prompt_ids, responses, tokenizer.pad_token_id, batch_size=3)
    torch.testing.assert_close(torch.tensor(shared.sums), torch.tensor(naive.sums), atol=1e-4, rtol=0)
    assert shared.tokens == naive.tokens == [len(r) for r in responses]


def test_full_logits_path_after_the_prompt_cache_gives_the_same_values(model, tokenizer, monkeypatch):
    """A head the chunked path cannot read goes through the full-logits path, the prompt's cache included."""
    import xlpo.logprobs

    prompt_ids, responses = _encoded(tokenizer)
    chunked = shared_prompt_logprobs(model, prompt_ids, responses, tokenizer.pad_token_id, batch_size=2)
    monkeypatch.setattr(xlpo.logprobs, "output_head", lambda model: None)
    full = shared_prompt_logprobs(model, prompt_ids, responses, tokenizer.pad_token_id, batch_size=2)
    naive = naive_prompt_logprobs(model, prompt_ids, responses, tokenizer.pad_token_id, batch_size=3)
    torch.testing.assert_close(torch.tensor(full.sums), torch.tensor(chunked.sums), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(full.sums), torch.tensor(naive.sums), atol=1e-4, rtol=0)


def test_first_response_token_and_end_of_turn_are_scored(model, tokenizer):
    prompt_ids, responses = _encoded(tokenizer)
    response = responses[0]
    ids = torch.tensor([prompt_ids + response])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0].float(), -1)
    start = len(prompt_ids)
    # Every response token, the first (predicted from the prompt's last position) and the end of turn included.
    expected = sum(float(logps[start - 1 + j, tok]) for j, tok in enumerate(response))
    got = shared_prompt_logprobs(model, prompt_ids, [response], tokenizer.pad_token_id).sums[0]
    assert got == pytest.approx(expected, abs=1e-4)


def test_both_equal_the_training_log_probs(model, tokenizer):
    """The trainer's completion_logprobs (with its padding mask) gives the same sums."""
    from xlpo.data.batching import pad_sequences
    from xlpo.logprobs import completion_logprobs

    prompt_ids, responses = _encoded(tokenizer)
    tensors = pad_sequences([tuple(prompt_ids)] * len(responses), [tuple(r) for r in responses], tokenizer.pad_token_id)
    with torch.no_grad():
        expected = completion_logprobs(model, *tensors).sum
    shared = shared_prompt_logprobs(model, prompt_ids, responses, tokenizer.pad_token_id, 2)
    torch.testing.assert_close(torch.tensor(shared.sums), expected, atol=1e-4, rtol=0)


def test_one_token_prompt_needs_no_cache(model, tokenizer):
    prompt_ids, responses = _encoded(tokenizer)
    shared = shared_prompt_logprobs(model, prompt_ids[:1], responses, tokenizer.pad_token_id)
    naive = naive_prompt_logprobs(model, prompt_ids[:1], responses, tokenizer.pad_token_id)
    torch.testing.assert_close(torch.tensor(shared.sums), torch.tensor(naive.sums), atol=1e-4, rtol=0)


def test_shared_equals_naive_through_peft_with_and_without_the_adapter(tiny_model_dir, tokenizer):
    torch.manual_seed(0)
    peft_model = apply_lora(load_model(str(tiny_model_dir), "float32"), r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a non-trivial adapter: policy != reference
    peft_model.eval()
    prompt_ids, responses = _encoded(tokenizer, "de")
    pad = tokenizer.pad_token_id
    policy_shared = shared_prompt_logprobs(peft_model, prompt_ids, responses, pad, 2)
    policy_naive = naive_prompt_logprobs(peft_model, prompt_ids, responses, pad)
    with reference_mode(peft_model) as ref:
        ref_shared = shared_prompt_logprobs(ref, prompt_ids, responses, pad, 2)
        ref_naive = naive_prompt_logprobs(ref, prompt_ids, responses, pad)
    torch.testing.assert_close(torch.tensor(policy_shared.sums), torch.tensor(policy_naive.sums), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(ref_shared.sums), torch.tensor(ref_naive.sums), atol=1e-4, rtol=0)
    base = naive_prompt_logprobs(load_model(str(tiny_model_dir), "float32"), prompt_ids, responses, pad)
    torch.testing.assert_close(torch.tensor(ref_shared.sums), torch.tensor(base.sums), atol=1e-4, rtol=0)
    assert max(abs(a - b) for a, b in zip(policy_shared.sums, ref_shared.sums)) > 1e-2  # the adapter matters
