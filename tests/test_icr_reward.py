"""ICR's pure parts on hand-computed cases: prefix, rewards, alpha grid search, pairs, judge accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from xlpo.errors import UserError
from xlpo.icr import reward as rw
from xlpo.icr.prompts import crosslingual_instruction, language_name, language_prefix, translate_prompt
from xlpo.icr.stats import (describe, judge_prompt, judge_requests, judged_accuracy, parse_judge_reply,
                            read_judge_labels, run_judge, verdict_for)


def test_prefix_is_the_papers_exact_text_and_english_has_none():
    assert language_prefix("es") == ("Please answer the following instruction using only Spanish, unless explicitly "
                                     "instructed to respond in a different language.\n\n")
    assert crosslingual_instruction("What is 2+2?", "de") == (
        "Please answer the following instruction using only German, unless explicitly instructed to respond in a "
        "different language.\n\nWhat is 2+2?")
    assert language_prefix("en") == ""
    assert crosslingual_instruction("What is 2+2?", "en") == "What is 2+2?"


def test_language_full_names():
    expected = {"en": "English", "es": "Spanish", "de": "German", "fr": "French", "ru": "Russian", "zh": "Chinese",
                "sw": "Swahili", "th": "Thai", "bn": "Bengali"}
    assert {code: language_name(code) for code in expected} == expected
    assert language_name("yo", {"yo": "Yoruba"}) == "Yoruba"
    assert "using only Yoruba," in language_prefix("yo", {"yo": "Yoruba"})
    with pytest.raises(UserError, match="unknown language 'xx'"):
        language_prefix("xx")


def test_translate_prompt_wraps_the_response():
    assert translate_prompt("Hola") == ("Please translate the following sentences into English. The input sentences "
                                        "are wrapped by <sentence> and </sentence>:\n\n<sentence>\nHola\n</sentence>")


def test_implicit_reward_on_hand_computed_numbers():
    rewards = rw.implicit_rewards([-10.0, -20.0], [-12.0, -15.0], beta=0.1)
    np.testing.assert_allclose(rewards, [0.2, -0.5])
    # beta * (delta - alpha * chars): 0.1 * (2 - 0.01 * 100) = 0.1 ; 0.1 * (-5 - 0.01 * 10) = -0.51
    np.testing.assert_allclose(rw.penalised_rewards(rewards, [100, 10], alpha=0.01, beta=0.1), [0.1, -0.51])


def test_pair_selection_argmax_argmin_first_on_ties():
    assert rw.select_pair([0.3, -1.0, 2.0, 0.0]) == (2, 1)
    assert rw.select_pair([1.0, 1.0, 0.0, 0.0]) == (0, 2)
    assert rw.select_pair([0.0, 0.0, 0.0]) == (0, 0)


def test_alpha_grid_is_the_authors():
    grid = rw.alpha_grid()
    assert len(grid) == 1000 and grid[0] == 0.0 and grid[1] == 0.001 and grid[-1] == 0.999
    assert 0.056 in grid.tolist()


def test_alpha_fit_on_a_hand_made_case():
    # Group A: deltas (10, 5, 0), lengths (100, 10, 50). Group B: deltas (0, 1), lengths (10, 20).
    # alpha < 0.0556: A picks 100 vs 50 (+50), B 20 vs 10 (+10): mean +30.
    # 0.0556 < alpha < 0.1: A picks 10 vs 50 (-40), B +10: mean -15  <- smallest |gap|
    # 0.1 < alpha < 0.2: A -40, B 10 vs 20 (-10): -25;   alpha > 0.2: A 10 vs 100 (-90), B -10: -50.
    deltas = [[10.0, 5.0, 0.0], [0.0, 1.0]]
    lengths = [[100, 10, 50], [10, 20]]
    gaps = rw.length_gaps(deltas, lengths, [0.0, 0.05, 0.056, 0.09, 0.15, 0.3])
    np.testing.assert_allclose(gaps, [30, 30, -15, -15, -25, -50])
    fit = rw.fit_length_penalty(deltas, lengths)
    assert fit.alpha == pytest.approx(0.056)  # the first grid point of the best interval
    assert fit.length_gap == pytest.approx(-15) and fit.gap_at_zero == pytest.approx(30) and fit.groups == 2


def test_alpha_zero_when_lengths_are_already_balanced():
    # argmax and argmin at alpha = 0 have equal lengths: no penalty needed.
    fit = rw.fit_length_penalty([[1.0, 0.0, -1.0]], [[10, 30, 10]])
    assert fit.alpha == 0.0 and fit.length_gap == 0.0


def test_alpha_ties_go_to_the_smallest_alpha():
    # Every alpha gives |gap| = 10 (+10 below 0.2, -10 above): the smallest alpha, 0, wins.
    fit = rw.fit_length_penalty([[2.0, 0.0]], [[20, 10]])
    assert fit.alpha == 0.0 and fit.length_gap == 10.0
    assert rw.length_gaps([[2.0, 0.0]], [[20, 10]], [0.3])[0] == -10.0
    # A custom grid is searched as given.
    assert rw.fit_length_penalty([[2.0, 0.0]], [[20, 10]], grid=[0.5, 0.3]).alpha == 0.5


def test_alpha_fit_handles_groups_of_different_sizes():
    fit = rw.fit_length_penalty([[1.0, 0.0], [3.0, 2.0, 1.0]], [[5, 5], [9, 1, 9]])
    assert fit.alpha == 0.0 and fit.length_gap == 0.0


def test_describe():
    d = describe([1, 2, 3, 4])
    assert d["n"] == 4 and d["mean"] == 2.5 and d["min"] == 1 and d["max"] == 4 and d["median"] == 2.5
    assert describe([]) == {"n": 0}


def _pairs():
    return [{"id": f"p{i}-{lang}", "lang": lang, "prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"}
            for lang in ("en", "es") for i in range(4)]


def test_judged_accuracy_counts_ties_as_half():
    verdicts = {"crosslingual/p0-en": "chosen", "crosslingual/p1-en": "chosen", "crosslingual/p2-en": "rejected",
                "crosslingual/p3-en": "tie", "crosslingual/p0-es": "rejected", "multilingual/p1-es": "chosen"}
    acc = judged_accuracy(_pairs(), verdicts, "crosslingual")
    intervals = {k: acc["en"].pop(k) for k in ("accuracy_ci", "accuracy_no_ties_ci")}
    assert acc["en"] == {"judged": 4, "chosen": 2, "rejected": 1, "ties": 1, "accuracy": 2.5 / 4,
                         "accuracy_no_ties": 2 / 3}
    assert intervals["accuracy_ci"][0] <= 2.5 / 4 <= intervals["accuracy_ci"][1]
    assert acc["es"]["judged"] == 1 and acc["es"]["accuracy"] == 0.0  # the multilingual verdict is not R_c's


def test_judge_requests_randomise_order_and_map_back():
    requests = judge_requests(_pairs(), per_language=3, seed=0, names={"en": "English", "es": "Spanish"},
                              kind="crosslingual")
    assert len(requests) == 6 and {r["lang"] for r in requests} == {"en", "es"}
    assert {r["answer1"] for r in requests} == {"chosen", "rejected"}  # both orders occur
    first = requests[0]
    assert first["id"].startswith("crosslingual/") and "<instruction>\nq" in first["prompt"]
    assert "given instruction in English" in first["prompt"] or "given instruction in Spanish" in first["prompt"]
    assert verdict_for(first, "tie") == "tie"
    assert verdict_for(first, "answer1") == first["answer1"]
    assert verdict_for(first, "answer2") != first["answer1"]

    # A judge that always recognises the "good" answer agrees with every pair.
    def judge(request):
        return "answer1" if "<answer1>\ngood" in request["prompt"] else "answer2"

    verdicts = run_judge(judge, requests)
    assert set(verdicts.values()) == {"chosen"}
    assert judged_accuracy(_pairs(), verdicts, "crosslingual")["es"]["accuracy"] == 1.0


def test_judge_prompt_and_reply_parsing():
    text = judge_prompt("Spanish", "Di hola", "hola", "adiós")
    assert text.startswith("You are a helpful following assistant") and "<answer2>\nadiós\n</answer2>" in text
    assert text.endswith("Preferred: <'answer1' or 'answer2' or 'tie'>")
    assert parse_judge_reply("Comparison: the first is better.\nPreferred: answer1") == "answer1"
    assert parse_judge_reply("Comparison: equal.\n\nPreferred: 'tie'") == "tie"
    assert parse_judge_reply("I like both") is None


def test_judge_labels_file(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"id": "crosslingual/a-es", "preferred": "chosen"}\n\n{"id": "crosslingual/b-es", "preferred": "tie"}\n')
    assert read_judge_labels(path) == {"crosslingual/a-es": "chosen", "crosslingual/b-es": "tie"}
    path.write_text('{"id": "x", "preferred": "chosen"}\n{"id": "y", "preferred": "answer1"}\n')
    with pytest.raises(UserError, match=r"labels.jsonl:2: expected"):
        read_judge_labels(path)


def test_groups_without_a_pair_do_not_count():
    # At alpha = 0.2 both responses of the group tie exactly (2 - 0.2*20 = 0 - 0.2*10): no pair, no gap.
    assert np.isnan(rw.length_gaps([[2.0, 0.0]], [[20, 10]], [0.2])[0])
    # With a second group the tied one is left out of the mean.
    assert rw.length_gaps([[2.0, 0.0], [1.0, 0.0]], [[20, 10], [5, 7]], [0.2])[0] == -2.0
    # All-equal rewards: alpha 0 gives no pair, the smallest positive alpha pairs shortest vs longest.
    fit = rw.fit_length_penalty([[0.0, 0.0, 0.0]], [[5, 9, 7]])
    assert fit.alpha == 0.001 and fit.length_gap == -4.0 and np.isnan(fit.gap_at_zero)
