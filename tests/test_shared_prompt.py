"""Chosen and rejected sharing one copy of their prompt in one row: the layout by hand, the log-probs
and gradients against the obvious two-row computation on every architecture sharing is allowed for,
and the refusals (ALiBi, sliding windows, untested models) with their reasons."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import first_fast

from xlpo.data.batching import collate_pairs, pad_sequences, prompt_sharing_blocker, shared_prompt_rows, two_row_layout
from xlpo.data.records import load_preferences
from xlpo.data.tokenize import PairTokenizer
from xlpo.logprobs import (SHARED_PROMPT_MODEL_TYPES, naive_completion_logprobs, sequence_logprobs,
                           shared_prompt_unsupported)

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


TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512)
ROPE_FACTORS = dict(short_factor=[1.0, 1.1, 1.2, 1.3], long_factor=[2.0, 3.0, 4.0, 5.0])  # head_dim 8: 4 each


def _tiny(model_type: str, tokenizer, attn: str, **config):
    """A random 2-layer model of `model_type` on the real tokenizer's vocabulary, in fp32."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    settings = dict(TINY, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if model_type.startswith("gemma") or model_type == "qwen3":
        settings["head_dim"] = 8  # their configs default to a head_dim of 128-256
    if model_type == "gemma3":  # the multimodal Gemma-3 (4B and larger) with a tiny vision tower
        from transformers import Gemma3Config

        vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      image_size=28, patch_size=14)
        model_config = Gemma3Config(text_config=dict(settings, **config), vision_config=vision, mm_tokens_per_image=4)
    else:
        model_config = AutoConfig.for_model(model_type, **dict(settings, **config))
    return AutoModelForCausalLM.from_config(model_config, attn_implementation=attn).float()


def _pairs(tokenizer, n: int = 3):
    pairs, _ = PairTokenizer(tokenizer).encode_all(load_preferences(FIXTURE))
    return pairs[:n]


def _longest(pairs, shared: bool) -> int:
    """The longest shared row ([prompt | chosen | rejected]) or two-row row (prompt + one answer)."""
    return max(len(p.prompt_ids) + (len(p.chosen_ids) + len(p.rejected_ids) if shared
                                    else max(len(p.chosen_ids), len(p.rejected_ids))) for p in pairs)


def _run(model, compute, weights):
    model.zero_grad()
    out = compute()
    (out.sum * weights).sum().backward()
    return out, {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def _two_row_obvious(model, pairs, pad_id):
    """The obvious version: one row per sequence, full logits, log_softmax everywhere."""
    prompts = [p.prompt_ids for p in pairs]
    ids, attention, completion = pad_sequences(prompts + prompts, [p.chosen_ids for p in pairs]
                                               + [p.rejected_ids for p in pairs], pad_id)
    return naive_completion_logprobs(model, ids, attention, completion)


def _assert_shared_equals_two_rows(model, pairs, pad_id):
    """Shared rows give the two-row log-probs and the gradient of every parameter, in fp32."""
    shared = collate_pairs(pairs, list(range(len(pairs))), pad_id, 1.0, share_prompt=True)
    two = collate_pairs(pairs, list(range(len(pairs))), pad_id, 1.0, share_prompt=False)
    assert shared.rows.input_ids.shape[0] == len(pairs) and two.rows.input_ids.shape[0] == 2 * len(pairs)
    weights = torch.linspace(-1.0, 1.5, 2 * len(pairs))
    got, got_grads = _run(model, lambda: sequence_logprobs(model, shared.rows, chunk_size=64), weights)
    want, want_grads = _run(model, lambda: _two_row_obvious(model, pairs, pad_id), weights)
    assert torch.allclose(got.sum, want.sum, atol=1e-4, rtol=1e-5), (got.sum - want.sum).abs().max()
    assert got.tokens.tolist() == want.tokens.tolist()
    for name, grad in want_grads.items():
        if grad is None:  # e.g. a vision tower the text never reaches
            assert got_grads[name] is None, name
            continue
        # fp32 sums of many terms round at ~1e-6 of the largest gradient (embeddings reach ~20): the
        # absolute tolerance follows each tensor's scale. A real difference is of the gradient's own size.
        scale = max(1.0, float(grad.abs().max()))
        assert torch.allclose(got_grads[name], grad, atol=1e-5 * scale, rtol=1e-3), \
            (name, float((got_grads[name] - grad).abs().max()), scale)


# (model type, attention) for every architecture on the allow-list. Gemma 2 has no SDPA support in
# transformers (soft-capped attention scores): eager only.
ARCHITECTURES = [("llama", "sdpa"), ("llama", "eager"), ("qwen2", "sdpa"), ("qwen2", "eager"), ("gemma2", "eager"),
                 ("mistral", "sdpa"), ("qwen3", "sdpa"), ("gemma", "sdpa"), ("gemma3_text", "eager"),
                 ("gemma3", "sdpa"), ("phi3", "eager"), ("olmo2", "sdpa")]


@pytest.mark.parametrize("family,attn", first_fast(ARCHITECTURES))
def test_shared_rows_give_the_two_row_logprobs_and_gradients(tokenizer, family, attn):
    # Gemma 2 and 3 keep their default sliding windows (4,096), longer than these rows.
    model = _tiny(family, tokenizer, attn)
    pairs = _pairs(tokenizer)
    assert shared_prompt_unsupported(model, _longest(pairs, shared=False)) is None
    _assert_shared_equals_two_rows(model, pairs, tokenizer.pad_token_id)


def test_every_allowed_architecture_is_tested():
    assert {family for family, _ in ARCHITECTURES} == SHARED_PROMPT_MODEL_TYPES


def _original_length(pairs, sequences: str) -> int:
    """"fit": every prompt + answer fits the original context but the shared rows do not (were the
    frequencies to follow the row width, only the shared rows would be rescaled); "exceed": both are beyond it."""
    original = _longest(pairs, shared=False) if sequences == "fit" else len(pairs[0].prompt_ids) // 2
    assert _longest(pairs, shared=True) > original
    return original


LINEAR = dict(rope_type="linear", factor=2.0)
LLAMA3 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, rope_theta=10000.0)
YARN = dict(rope_type="yarn", factor=4.0)
DYNAMIC = dict(rope_type="dynamic", factor=2.0)
LONGROPE = dict(rope_type="longrope", **ROPE_FACTORS)


# Linear, llama3 and yarn frequencies are fixed by the config; dynamic NTK and long-rope depend on the
# largest position id in the batch, so they are tested on both sides of the original length.
@pytest.mark.parametrize("rope,sequences", first_fast([(LINEAR, "exceed"), (LLAMA3, "exceed"), (YARN, "exceed"),
                                            (DYNAMIC, "fit"), (DYNAMIC, "exceed"), (LONGROPE, "fit"),
                                            (LONGROPE, "exceed")]),
                         ids=lambda x: x if isinstance(x, str) else x["rope_type"])
def test_rotary_scaling_beyond_the_original_length(tokenizer, rope, sequences):
    """Rows longer than the original context: restarted position ids keep the largest position id
    (from which transformers picks dynamic and long-rope frequencies) equal to the two-row one."""
    pairs = _pairs(tokenizer)
    original = _original_length(pairs, sequences)
    if rope["rope_type"] in ("linear", "dynamic"):
        model = _tiny("llama", tokenizer, "sdpa", rope_parameters=rope, max_position_embeddings=original)
    else:
        model = _tiny("llama", tokenizer, "sdpa", max_position_embeddings=4 * original,
                      rope_parameters=dict(rope, original_max_position_embeddings=original))
    assert shared_prompt_unsupported(model, _longest(pairs, shared=False)) is None
    _assert_shared_equals_two_rows(model, pairs, tokenizer.pad_token_id)
    if rope["rope_type"] in ("dynamic", "longrope"):
        _assert_rescaled_only_beyond_the_original_length(model, pairs, tokenizer.pad_token_id, sequences)


def _assert_rescaled_only_beyond_the_original_length(model, pairs, pad_id, sequences):
    """The equality above is not vacuous: the frequencies did change with the batch's positions."""
    rotary = model.model.rotary_emb
    shared = collate_pairs(pairs, list(range(len(pairs))), pad_id, 1.0, share_prompt=True)
    with torch.no_grad():
        sequence_logprobs(model, shared.rows)
        assert torch.equal(rotary.inv_freq, rotary.original_inv_freq) == (sequences == "fit")
        # Two rows padded to the shared width get positions up to that width: rescaled.
        padded = two_row_layout([p.prompt_ids for p in pairs], [p.chosen_ids for p in pairs],
                                [p.rejected_ids for p in pairs], pad_id, pad_to_multiple_of=_longest(pairs, shared=True))
        sequence_logprobs(model, padded)
        assert not torch.equal(rotary.inv_freq, rotary.original_inv_freq)


@pytest.mark.parametrize("sequences", ["fit", "exceed"])
def test_phi3_long_rope(tokenizer, sequences):
    pairs = _pairs(tokenizer)
    original = _original_length(pairs, sequences)
    rope = dict(rope_type="longrope", original_max_position_embeddings=original, **ROPE_FACTORS)
    model = _tiny("phi3", tokenizer, "sdpa", rope_parameters=rope, max_position_embeddings=4 * original)
    assert shared_prompt_unsupported(model, _longest(pairs, shared=False)) is None
    _assert_shared_equals_two_rows(model, pairs, tokenizer.pad_token_id)


@pytest.mark.parametrize("family,attn", first_fast([("mistral", "sdpa"), ("gemma2", "eager"), ("gemma3_text", "sdpa"),
                                         ("gemma3", "eager")]))
def test_a_sliding_window_longer_than_every_sequence_is_exact_and_a_shorter_one_refused(tokenizer, family, attn):
    """The window only matters when a prompt + answer exceeds it: a window between the longest two-row
    row and the longest shared row keeps sharing exact; a shorter one is refused (read from
    text_config for the multimodal Gemma-3, whose top-level config has no window)."""
    pairs = _pairs(tokenizer)
    longest = _longest(pairs, shared=False)
    assert _longest(pairs, shared=True) > longest
    model = _tiny(family, tokenizer, attn, sliding_window=longest)
    assert shared_prompt_unsupported(model, longest) is None
    _assert_shared_equals_two_rows(model, pairs, tokenizer.pad_token_id)
    short = _tiny(family, tokenizer, attn, sliding_window=longest - 1)
    reason = prompt_sharing_blocker(short, pairs)
    assert reason == f"sliding window {longest - 1} is shorter than the longest prompt + answer ({longest} tokens)"


def test_multimodal_gemma3_window_is_read_from_its_text_config(tokenizer):
    model = _tiny("gemma3", tokenizer, "sdpa", sliding_window=16)
    assert getattr(model.config, "sliding_window", None) is None  # what the old check read
    assert "sliding window 16" in shared_prompt_unsupported(model, 100)
    assert shared_prompt_unsupported(model, 16) is None


def _alibi_model(kind: str, tokenizer):
    from transformers import BloomConfig, FalconConfig, MptConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    vocab = len(tokenizer)
    config = {"mpt": lambda: MptConfig(vocab_size=vocab, d_model=32, n_heads=4, n_layers=2),
              "bloom": lambda: BloomConfig(vocab_size=vocab, hidden_size=32, n_head=4, n_layer=2),
              "falcon": lambda: FalconConfig(vocab_size=vocab, hidden_size=32, num_attention_heads=4,
                                             num_hidden_layers=2, alibi=True)}[kind]()
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").float()


@pytest.mark.parametrize("kind", ["mpt", "bloom", "falcon"])
def test_alibi_models_get_two_rows_with_the_reason(tokenizer, kind):
    reason = shared_prompt_unsupported(_alibi_model(kind, tokenizer), 10)
    assert reason == f"'{kind}' uses ALiBi, whose position biases follow the distance in the row, not position ids"


def test_alibi_shared_rows_would_be_wrong(tokenizer):
    """Why MPT must not share: its ALiBi bias sees the rejected tokens' distance in the row."""
    model = _alibi_model("mpt", tokenizer)
    pairs = _pairs(tokenizer)
    shared = collate_pairs(pairs, list(range(len(pairs))), tokenizer.pad_token_id, 1.0, share_prompt=True)
    with torch.no_grad():
        got = sequence_logprobs(model, shared.rows).sum
        want = _two_row_obvious(model, pairs, tokenizer.pad_token_id).sum
    n = len(pairs)
    assert torch.allclose(got[:n], want[:n], atol=1e-4)  # chosen answers are exact
    assert (got[n:] - want[n:]).abs().max() > 1e-2  # rejected ones are not


def test_shared_prompt_unsupported_names_the_reason():
    def fake(**config):
        return SimpleNamespace(config=SimpleNamespace(**{"model_type": "llama", **config}))

    assert shared_prompt_unsupported(fake(_attn_implementation="sdpa"), 100) is None
    assert shared_prompt_unsupported(fake(_attn_implementation="eager"), 100) is None
    assert "flash_attention_2" in shared_prompt_unsupported(fake(_attn_implementation="flash_attention_2"), 100)
    assert "sliding window 64" in shared_prompt_unsupported(fake(_attn_implementation="sdpa", sliding_window=64), 100)
    assert shared_prompt_unsupported(fake(_attn_implementation="sdpa", sliding_window=128), 100) is None
    assert shared_prompt_unsupported(fake(_attn_implementation="sdpa", sliding_window=64, use_sliding_window=False),
                                     100) is None
    assert "auto_map" in shared_prompt_unsupported(fake(_attn_implementation="sdpa", auto_map={"AutoModel": "x.Y"}), 10)
    # Only what the tests prove exact is shared: other architectures and rotary variants get two rows.
    assert shared_prompt_unsupported(fake(_attn_implementation="sdpa", model_type="gpt2"), 10) == \
        "model type 'gpt2' is not among those tested exact with shared rows"
    assert shared_prompt_unsupported(fake(_attn_implementation="sdpa", rope_parameters={"rope_type": "mrope"}), 10) == \
        "rotary scaling 'mrope' is not among those tested exact with shared rows"
    per_layer = {"full_attention": {"rope_type": "default"}, "sliding_attention": {"rope_type": "su"}}
    assert "'su'" in shared_prompt_unsupported(fake(_attn_implementation="sdpa", rope_parameters=per_layer), 10)
