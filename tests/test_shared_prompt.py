"""Chosen and rejected sharing one copy of their prompt in one row: the layout by hand, and the
log-probs and gradients against the obvious two-row computation on tiny models of three families."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from xlpo.data.batching import collate_pairs, shared_prompt_rows, two_row_layout
from xlpo.data.records import load_preferences
from xlpo.data.tokenize import PairTokenizer
from xlpo.logprobs import naive_completion_logprobs, sequence_logprobs, shared_prompt_unsupported

FIXTURE = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"
PAD = 0


def _matrix(text: str) -> list[list[bool]]:
    return [[c == "1" for c in line.split()[0]] for line in text.strip().splitlines()]


def test_layout_by_hand():
    # Pair 0: prompt (11 12), chosen (21 22), rejected (31). Pair 1: prompt (13), chosen (23), rejected (33 34).
    rows = shared_prompt_rows([(11, 12), (13,)], [(21, 22), (23,)], [(31,), (33, 34)], PAD)
    assert rows.input_ids.tolist() == [[11, 12, 21, 22, 31], [13, 23, 33, 34, PAD]]
    # Rejected tokens continue from the prompt's positions, as if the chosen tokens were not there.
    assert rows.position_ids.tolist()[0] == [0, 1, 2, 3, 2]
    assert rows.position_ids.tolist()[1][:4] == [0, 1, 1, 2]
    assert rows.attention_mask.shape == (2, 1, 5, 5) and rows.attention_mask.dtype == torch.bool
    assert rows.attention_mask[0, 0].tolist() == _matrix("""
        10000  p0 sees itself
        11000  p1
        11100  c0 sees the prompt and itself
        11110  c1
        11001  r0 sees the prompt, not the chosen tokens
    """)
    assert rows.attention_mask[1, 0].tolist() == _matrix("""
        10000  p0
        11000  c0
        10100  r0
        10110  r1
        00001  padding sees only itself
    """)
    # Sequences 0-1 are the chosen ones, 2-3 the rejected ones; each token scored from its predecessor
    # within its own sequence (the first rejected token from the prompt's last position).
    assert rows.num_sequences == 4
    assert rows.targets.tolist() == [21, 22, 31, 23, 33, 34]
    assert rows.sources.tolist() == [1, 2, 1, 5 + 0, 5 + 0, 5 + 2]
    assert rows.sequences.tolist() == [0, 0, 2, 1, 3, 3]
    assert rows.token_counts().tolist() == [2, 1, 1, 2]


def test_without_a_prompt_the_first_tokens_are_not_scored_as_in_two_rows():
    shared = shared_prompt_rows([()], [(21, 22)], [(31, 32, 33)], PAD)
    two = two_row_layout([()], [(21, 22)], [(31, 32, 33)], PAD)
    assert shared.token_counts().tolist() == two.token_counts().tolist() == [1, 2]
    assert shared.targets.tolist() == [22, 32, 33]
    assert shared.sources.tolist() == [0, 2, 3]


def _tiny(family: str, tokenizer, attn: str):
    from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  pad_token_id=tokenizer.pad_token_id, attn_implementation=attn)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False))
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:  # Gemma 2: logit soft-capping, query pre-scaling, a sliding window longer than these rows
        model = Gemma2ForCausalLM(Gemma2Config(**common, head_dim=8, sliding_window=256))
    return model.float()


def _pairs(tokenizer):
    pairs, _ = PairTokenizer(tokenizer).encode_all(load_preferences(FIXTURE))
    return pairs[:5]


# Gemma 2 has no SDPA support in transformers (soft-capped attention scores): eager only.
@pytest.mark.parametrize("family,attn", [("llama", "sdpa"), ("llama", "eager"), ("qwen2", "sdpa"), ("qwen2", "eager"),
                                         ("gemma2", "eager")])
def test_shared_rows_give_the_two_row_logprobs_and_gradients(tokenizer, family, attn):
    model = _tiny(family, tokenizer, attn)
    pairs = _pairs(tokenizer)
    assert shared_prompt_unsupported(model, 10**4 if family != "gemma2" else 200) is None
    shared = collate_pairs(pairs, list(range(len(pairs))), tokenizer.pad_token_id, 1.0, share_prompt=True)
    two = collate_pairs(pairs, list(range(len(pairs))), tokenizer.pad_token_id, 1.0, share_prompt=False)
    assert shared.rows.input_ids.shape[0] == len(pairs) and two.rows.input_ids.shape[0] == 2 * len(pairs)
    weights = torch.linspace(-1.0, 1.5, 2 * len(pairs))

    def run(rows, fn):
        model.zero_grad()
        out = fn(rows)
        (out.sum * weights).sum().backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters()}

    got, got_grads = run(shared.rows, lambda rows: sequence_logprobs(model, rows, chunk_size=7))
    # The obvious version: one row per sequence, full logits, log_softmax everywhere.
    prompts = [p.prompt_ids for p in pairs]
    from xlpo.data.batching import pad_sequences

    ids, attention, completion = pad_sequences(prompts + prompts, [p.chosen_ids for p in pairs]
                                               + [p.rejected_ids for p in pairs], tokenizer.pad_token_id)
    want, want_grads = run(None, lambda _: naive_completion_logprobs(model, ids, attention, completion))
    assert torch.allclose(got.sum, want.sum, atol=1e-4, rtol=1e-5), (got.sum - want.sum).abs().max()
    assert got.tokens.tolist() == want.tokens.tolist()
    for name, grad in want_grads.items():
        assert torch.allclose(got_grads[name], grad, atol=1e-5, rtol=1e-3), name


def test_shared_prompt_unsupported_names_the_reason():
    def fake(**config):
        return SimpleNamespace(config=SimpleNamespace(**config))

    assert shared_prompt_unsupported(fake(_attn_implementation="sdpa"), 100) is None
    assert shared_prompt_unsupported(fake(_attn_implementation="eager"), 100) is None
    assert "flash_attention_2" in shared_prompt_unsupported(fake(_attn_implementation="flash_attention_2"), 100)
    assert "sliding window 64" in shared_prompt_unsupported(fake(_attn_implementation="sdpa", sliding_window=64), 100)
    assert shared_prompt_unsupported(fake(_attn_implementation="sdpa", sliding_window=128), 100) is None
    assert shared_prompt_unsupported(fake(_attn_implementation="sdpa", sliding_window=64, use_sliding_window=False),
                                     100) is None
    assert "auto_map" in shared_prompt_unsupported(fake(_attn_implementation="sdpa", auto_map={"AutoModel": "x.Y"}), 10)
