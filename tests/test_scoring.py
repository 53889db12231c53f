"""Per-pair scoring and per-language reward accuracy, against hand-computed values and the naive path."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from xlpo.data.batching import pad_sequences
from xlpo.data.records import load_preferences
from xlpo.data.tokenize import PairTokenizer
from xlpo.eval.scoring import accuracy_by_language, score_pairs
from xlpo.logprobs import naive_completion_logprobs


def test_accuracy_by_language_by_hand():
    rows = [
        # de: chosen wins on the sum (-10 > -12) but loses per token (-10/2 = -5 < -12/4 = -3)
        {"lang": "de", "logp_chosen": -10.0, "logp_rejected": -12.0, "tokens_chosen": 2, "tokens_rejected": 4},
        # de: loses on both
        {"lang": "de", "logp_chosen": -20.0, "logp_rejected": -5.0, "tokens_chosen": 4, "tokens_rejected": 5},
        # zh: loses on the sum, wins per token (-9/9 = -1 > -6/3 = -2)
        {"lang": "zh", "logp_chosen": -9.0, "logp_rejected": -6.0, "tokens_chosen": 9, "tokens_rejected": 3},
        # no language: ties count as losses
        {"lang": None, "logp_chosen": -4.0, "logp_rejected": -4.0, "tokens_chosen": 2, "tokens_rejected": 2},
    ]
    table = accuracy_by_language(rows)
    assert list(table) == ["de", "unknown", "zh", "all"]
    assert table["de"] == {"pairs": 2, "acc_sum": 0.5, "acc_mean": 0.0}
    assert table["zh"] == {"pairs": 1, "acc_sum": 0.0, "acc_mean": 1.0}
    assert table["unknown"] == {"pairs": 1, "acc_sum": 0.0, "acc_mean": 0.0}
    assert table["all"] == {"pairs": 4, "acc_sum": 0.25, "acc_mean": 0.25}


def test_score_pairs_matches_one_pair_at_a_time(tiny_model_dir, tokenizer):
    from pathlib import Path

    records = load_preferences(Path(__file__).parent / "fixtures" / "prefs_small.jsonl")
    pairs, _ = PairTokenizer(tokenizer).encode_all(records)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = score_pairs(model, pairs, tokenizer.pad_token_id, batch_size=5)
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
