"""Per-pair scoring (`score_pairs`) against the naive path, one pair at a time."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from xlpo.data.batching import pad_sequences
from xlpo.data.records import load_preferences
from xlpo.data.tokenize import PairTokenizer
from xlpo.pair_logps import score_pairs
from xlpo.logprobs import naive_completion_logprobs


def test_score_pairs_matches_one_pair_at_a_time(tiny_model_dir, tokenizer):
    from pathlib import Path

    records = load_preferences(Path(__file__).parent / "fixtures" / "prefs_small.jsonl")
    pairs, _ = PairTokenizer(tokenizer).encode_all(records)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = score_pairs(model, pairs, tokenizer.pad_token_id, batch_size=5).rows(pairs)
    assert [r["id"] for r in rows] == [p.id for p in pairs]
    for pair, row in zip(pairs, rows):
        ids, attention, completion = pad_sequences([pair.prompt_ids] * 2, [pair.chosen_ids, pair.rejected_ids],
                                                   tokenizer.pad_token_id)
        with torch.no_grad():
            want = naive_completion_logprobs(model, ids, attention, completion)
        assert row["logp_chosen"] == pytest.approx(float(want.sum[0]), abs=1e-4)
        assert row["logp_rejected"] == pytest.approx(float(want.sum[1]), abs=1e-4)
        assert (row["tokens_chosen"], row["tokens_rejected"]) == (len(pair.chosen_ids), len(pair.rejected_ids))
        assert row["lang"] == pair.lang


def test_score_pairs_only_scores_the_given_pairs(tiny_model_dir, tokenizer):
    """A process's shard of the precomputed reference: the other pairs stay 0 for the cross-process sum."""
    from pathlib import Path

    records = load_preferences(Path(__file__).parent / "fixtures" / "prefs_small.jsonl")
    pairs, _ = PairTokenizer(tokenizer).encode_all(records)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.train()
    full = score_pairs(model, pairs, tokenizer.pad_token_id, batch_size=3).stacked()
    odd = score_pairs(model, pairs, tokenizer.pad_token_id, batch_size=3, only=range(1, len(pairs), 2)).stacked()
    assert torch.equal(odd[0::2], torch.zeros_like(odd[0::2]))
    torch.testing.assert_close(odd[1::2], full[1::2], atol=1e-4, rtol=0)
    assert model.training, "score_pairs restores the model's training mode"
