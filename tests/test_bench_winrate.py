"""Judged win rates: the Figure 11 prompt, safe filling, order randomisation, verdict parsing, SDs, runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chat_fakes import FakeBackend
from xlpo.bench.winrate import (JUDGE_PROMPT, candidate_position, outcome_for_candidate, pairwise_prompt,
                                parse_verdict, run_winrate, run_xlsum_winrate, summarize, table,
                                xlsum_judge_prompt)
from xlpo.bench.xlsum import run_xlsum, summary_prompt
from xlpo.clients.chat import ChatReply
from xlpo.errors import UserError
from xlpo.fileio import iter_jsonl

FIXTURES = Path(__file__).parent / "fixtures" / "xlsum"

# Typed from the CAPO paper's Figure 11.
FIGURE_11 = (
    "Which of the following answers is the best one for given instruction in [LANGUAGE]. A good answer "
    "should follow these rules:\n"
    "\n"
    "1) It should be in [LANGUAGE]\n"
    "2) It should answer the request in the instruction\n"
    "3) It should be factually and semantically comprehensible\n"
    "4) It should be grammatically correct and fluent.\n"
    "\n"
    "Instruction: Generate a one sentence summary of the text below in [LANGUAGE].\n"
    "\n"
    "[TEXT]\n"
    "\n"
    "Answer (A): [SUMMARY_A]\n"
    "Answer (B): [SUMMARY_B]\n"
    "\n"
    "FIRST provide a one-sentence comparison of the two answers, explaining which you prefer and why.\n"
    "\n"
    "SECOND, on a new line, state only 'Answer (A)' or 'Answer (B)' or 'TIE'.\n"
    "\n"
    "Your response should use the format:\n"
    "\n"
    "Comparison: <one-sentence comparison and explanation>\n"
    "\n"
    "Preferred: <'Answer (A)' or 'Answer (B)' or 'TIE'>"
)


# --- the prompt ----------------------------------------------------------------------------------

def test_judge_prompt_is_figure_11_verbatim():
    assert JUDGE_PROMPT == FIGURE_11


def test_judge_prompt_filled_by_hand():
    prompt = xlsum_judge_prompt("French", "Le texte.", "Résumé un.", "Résumé deux.")
    assert prompt.startswith("Which of the following answers is the best one for given instruction in French. ")
    assert "1) It should be in French\n" in prompt
    assert ("Instruction: Generate a one sentence summary of the text below in French.\n\nLe texte.\n\n"
            "Answer (A): Résumé un.\nAnswer (B): Résumé deux.\n\nFIRST") in prompt
    assert "[" not in prompt.replace("<'Answer (A)'", "")  # every placeholder filled


def test_data_text_is_never_substituted_again():
    text = "Article quoting [SUMMARY_A] and [LANGUAGE] and [TEXT]."
    prompt = xlsum_judge_prompt("English", text, "A says [TEXT] and [SUMMARY_B]", "B says [SUMMARY_A]")
    assert "\n\nArticle quoting [SUMMARY_A] and [LANGUAGE] and [TEXT].\n\n" in prompt
    assert "Answer (A): A says [TEXT] and [SUMMARY_B]\nAnswer (B): B says [SUMMARY_A]\n" in prompt
    assert prompt.count("Article quoting") == 1 and "in English." in prompt


def test_generic_prompt_with_xlsum_instruction_is_figure_11():
    for code, name, text in [("zh", "Chinese", "正文[TEXT]"), ("en", "English", "Body.\n\nMore.")]:
        assert pairwise_prompt(name, summary_prompt(code, text), "a", "b") == xlsum_judge_prompt(name, text, "a", "b")
    generic = pairwise_prompt("German", "Write a haiku about [LANGUAGE].", "x", "y")
    assert "Instruction: Write a haiku about [LANGUAGE].\n\nAnswer (A): x\nAnswer (B): y" in generic


# --- verdict parsing -----------------------------------------------------------------------------

@pytest.mark.parametrize("reply, verdict", [
    ("Comparison: A is fluent.\n\nPreferred: Answer (A)", "A"),
    ("Comparison: B is better.\nPreferred: Answer (B)", "B"),
    ("Comparison: both fine.\n\nPreferred: TIE", "TIE"),
    ("Preferred: Answer (A)", "A"),  # the comparison line is not required
    ("  Preferred:   Answer (B)  \n", "B"),
    ("Comparison: x\nPreferred: 'Answer (A)'", "A"),
    ('Comparison: x\nPreferred: "Answer (B)"', "B"),
    ("Comparison: x\nPreferred: \u2018Answer (A)\u2019", "A"),
    ("Comparison: x\nPreferred: \u201cTIE\u201d", "TIE"),
    ("Comparison: x\nPreferred: Answer (A).", "A"),
    ("Comparison: x\nPreferred: 'Answer (B)'.", "B"),
    ("Comparison: x\nPREFERRED: answer (b)", "B"),
    ("Comparison: x\npreferred : Tie", "TIE"),
    ("**Comparison:** x\n\n**Preferred:** Answer (A)", "A"),
    ("Comparison: I prefer (B). Preferred: Answer (B) is in the sentence.\nPreferred: Answer (A)", "A"),
    ("Comparison: Answer (B) is wrong.\r\nPreferred: Answer (A)\r\n", "A"),
])
def test_parse_verdict_accepts(reply, verdict):
    assert parse_verdict(reply) == (verdict, "")


@pytest.mark.parametrize("reply, why", [
    ("Comparison: A is better.", "no 'Preferred:' line"),
    ("", "no 'Preferred:' line"),
    ("I prefer (A).", "no 'Preferred:' line"),
    ("Comparison: x\nPreferred answer: Answer (A)", "no 'Preferred:' line"),
    ("Comparison: x\nPreferred:\nAnswer (A)", "unrecognised verdict ''"),
    ("Comparison: x\nPreferred: Answer A", "unrecognised verdict 'Answer A'"),
    ("Comparison: x\nPreferred: (A)", "unrecognised"),
    ("Comparison: x\nPreferred: A", "unrecognised"),
    ("Comparison: x\nPreferred: Answer (A) or Answer (B)", "unrecognised"),
    ("Comparison: x\nPreferred: Answer (A) because it is fluent", "unrecognised"),
    ("Comparison: x\nPreferred: Answer (C)", "unrecognised"),
    ("Comparison: x\nPreferred: <'Answer (A)' or 'Answer (B)' or 'TIE'>", "unrecognised"),
    ("Comparison: x\nPreferred: Answer (A)\nPreferred: Answer (B)", "2 'Preferred:' lines"),
    ("Comparison: x\nPreferred: Answer (A)\nPreferred: Answer (A)", "2 'Preferred:' lines"),
])
def test_parse_verdict_rejects(reply, why):
    verdict, note = parse_verdict(reply)
    assert verdict is None and note.startswith(why)


# --- order and mapping ---------------------------------------------------------------------------

def test_order_is_seeded_recorded_and_balanced():
    keys = [f"en/item-{i}" for i in range(200)]
    positions = [candidate_position(0, key) for key in keys]
    assert positions == [candidate_position(0, key) for key in keys]
    assert 70 <= positions.count("A") <= 130
    assert positions != [candidate_position(1, key) for key in keys]


@pytest.mark.parametrize("verdict, position, outcome", [
    ("A", "A", "win"), ("B", "A", "lose"), ("A", "B", "lose"), ("B", "B", "win"), ("TIE", "A", "tie"),
    ("TIE", "B", "tie"),
])
def test_verdict_maps_back_through_the_swap(verdict, position, outcome):
    assert outcome_for_candidate(verdict, position) == outcome


# --- aggregation ---------------------------------------------------------------------------------

def test_sd_matches_the_papers_example():
    # two runs of 50 items: 25 then 26 wins, no ties -> 50% and 52%: mean 51, SD sqrt(2) = 1.41
    runs = [["win"] * 25 + ["lose"] * 25, ["win"] * 26 + ["lose"] * 24]
    stats = summarize(runs)
    assert stats["win"] == pytest.approx(51.0) and stats["win_sd"] == pytest.approx(1.41421356)
    assert stats["lose"] == pytest.approx(49.0) and stats["lose_sd"] == pytest.approx(1.41421356)
    assert stats["tie"] == 0 and stats["tie_sd"] == 0


def test_percentages_over_parseable_items_and_counts_apart():
    stats = summarize([["win", "win", "tie", "lose", "unparseable", "failed"]])
    assert (stats["win"], stats["tie"], stats["lose"]) == (50.0, 25.0, 25.0)
    assert stats["win_sd"] is None and (stats["unparseable"], stats["failed"]) == (1, 1)
    assert stats["per_repeat"][0]["parseable"] == 4
    # a repeat with nothing parseable has no percentage and stays out of the mean
    stats = summarize([["win", "lose"], ["failed"], ["win", "win"]])
    assert stats["win"] == pytest.approx(75.0) and stats["win_sd"] == pytest.approx(35.35533906)
    assert stats["failed"] == 1 and stats["per_repeat"][1]["win_pct"] is None


# --- generic run ---------------------------------------------------------------------------------

def answer_line(prompt: str, label: str) -> str:
    return re.search(rf"^Answer \({label}\): (.*)$", prompt, re.MULTILINE).group(1)


def always_a(request):
    return ChatReply(text="Comparison: A reads better.\n\nPreferred: Answer (A)")


def test_run_winrate_maps_positions_and_counts(tmp_path):
    items = {f"k{i}": f"Say hello number {i}." for i in range(8)}
    language = {key: ("en" if i < 5 else "fr") for i, key in enumerate(items)}
    cand = {key: f"cand {key}" for key in items}
    base = {key: f"base {key}" for key in items}
    base["k7"] = None  # baseline failed: excluded, counted
    judge = FakeBackend(always_a)
    result = run_winrate(items, cand, base, tmp_path, judge, language_of=language, seed=3, echo=None,
                         candidate_name="capo", baseline_name="llama")
    judged = [key for key in items if key != "k7"]
    wins = {key for key in judged if candidate_position(3, key) == "A"}
    res = result["results"]
    assert res["all"]["win"] == pytest.approx(100 * len(wins) / 7)
    assert res["all"]["lose"] == pytest.approx(100 * (7 - len(wins)) / 7)
    assert (res["all"]["n"], res["all"]["excluded"], res["excluded_keys"]) == (7, 1, ["k7"])
    assert (res["languages"]["fr"]["n"], res["languages"]["fr"]["excluded"]) == (2, 1)
    for request in judge.requests:  # the candidate's answer sits where the recorded order says
        key = next(k for k in judged if f"Say hello number {k[1:]}." in request.messages[0]["content"])
        slot = candidate_position(3, key)
        assert answer_line(request.messages[0]["content"], slot) == f"cand {key}"
        assert request.seed == 3 and request.temperature == 0.0
    rows = [row for _, row in iter_jsonl(tmp_path / "judgments.jsonl")]
    assert [row["key"] for row in rows] == judged
    for row in rows:
        assert row["outcome"] == ("win" if row["key"] in wins else "lose") and row["verdict"] == "A"
        assert row["system_a"] == ("capo" if row["candidate_position"] == "A" else "llama")
    assert result["config"]["candidate"] == "capo" and result["config"]["order_seeds"] == [3]
    with pytest.raises(UserError, match="no language name for 'xx'"):
        run_winrate({"a": "x"}, {"a": "1"}, {"a": "2"}, tmp_path, judge, language_of=lambda k: "xx", echo=None)


def test_repeats_are_distinct_requests_and_reruns_reuse_everything(tmp_path):
    items = {f"k{i}": f"Task {i}." for i in range(6)}
    answers = {key: f"answer {key}" for key in items}
    judge = FakeBackend(always_a)
    first = run_winrate(items, answers, {k: v + "!" for k, v in answers.items()}, tmp_path, judge,
                        language_of=lambda key: "en", repeats=3, seed=10, echo=None)
    assert len(judge.requests) == 18 and {r.seed for r in judge.requests} == {10, 11, 12}
    per_repeat = first["results"]["all"]["per_repeat"]
    for repeat in range(3):
        expected = sum(candidate_position(10 + repeat, key) == "A" for key in items)
        assert per_repeat[repeat]["win"] == expected
    calls = judge.calls
    again = run_winrate(items, answers, {k: v + "!" for k, v in answers.items()}, tmp_path, judge,
                        language_of=lambda key: "en", repeats=3, seed=10, echo=None)
    assert judge.calls == calls and again["results"] == first["results"]
    run_winrate(items, answers, {k: v + "!" for k, v in answers.items()}, tmp_path, judge,
                language_of=lambda key: "en", repeats=4, seed=10, echo=None)
    assert len(judge.requests) == 24 and {r.seed for r in judge.requests[18:]} == {13}


# --- XL-Sum end to end ---------------------------------------------------------------------------

def summariser(tag, fail_ids=()):
    def reply(request):
        article = request.messages[0]["content"].split("\n\n", 1)[1]
        if any(article.startswith(prefix) for prefix in fail_ids):
            return ChatReply(text=None, error="HTTP 500")
        return ChatReply(text=f"{tag}: {article[:20]}")
    return reply


def content_judge(request):
    """Prefers the GOOD answer wherever it is; says something unparseable about one article."""
    prompt = request.messages[0]["content"]
    if "Two hundred volunteers" in prompt or "About two hundred volunteers" in prompt:
        return ChatReply(text="Comparison: both are fine.\nI prefer (A).")
    if "城市公园" in prompt:
        return ChatReply(text=None, error="HTTP 429")
    winner = "A" if answer_line(prompt, "A").startswith("GOOD") else "B"
    return ChatReply(text=f"Comparison: {winner} is right.\n\nPreferred: Answer ({winner})")


def test_xlsum_winrate_end_to_end(tmp_path):
    capo_dir, llama_dir = tmp_path / "capo", tmp_path / "llama"
    run_xlsum(FIXTURES, ["en", "zh"], None, capo_dir, FakeBackend(summariser("GOOD")), seed=1, echo=None)
    # llama fails on the bakery article (en-006): that item is excluded from judging
    run_xlsum(FIXTURES, ["en", "zh"], None, llama_dir, FakeBackend(summariser("BAD", ["A family bakery"])),
              seed=1, echo=None)
    judge = FakeBackend(content_judge, model="gpt-4o")
    out = tmp_path / "winrate"
    result = run_xlsum_winrate(capo_dir / "summaries.jsonl", llama_dir, out, judge, repeats=2, seed=0, echo=None)
    res = result["results"]
    en, zh = res["languages"]["en"], res["languages"]["zh"]
    # en: 5 judged (en-006 excluded); en-002 unparseable in both repeats; the other 4 always won
    assert (en["n"], en["excluded"], en["unparseable"], en["failed"]) == (5, 1, 2, 0)
    assert (en["win"], en["tie"], en["lose"], en["win_sd"]) == (100.0, 0.0, 0.0, 0.0)
    # zh: zh-001 judge failures in both repeats; 3 wins each repeat
    assert (zh["n"], zh["failed"], zh["win"]) == (4, 2, 100.0)
    assert res["all"]["per_repeat"][0]["win"] == 7 and res["excluded_keys"] == ["en/en-006"]
    assert (result["config"]["candidate"], result["config"]["baseline"]) == ("capo", "llama")
    assert result["config"]["judge"] == {"kind": "fake", "model": "gpt-4o"}

    rows = [row for _, row in iter_jsonl(out / "judgments.jsonl")]
    assert len(rows) == 2 * 9 and {row["repeat"] for row in rows} == {0, 1}
    for row in rows:
        assert set(row) >= {"key", "language", "repeat", "candidate_position", "reply", "verdict", "outcome"}
        assert row["candidate_position"] == candidate_position(row["repeat"], row["key"])
    # the judge saw the Figure 11 prompt with the article and the two summaries in the recorded order
    first = judge.requests[0]
    row = rows[0]
    article = next(r for _, r in iter_jsonl(FIXTURES / "english_test.jsonl") if r["id"] == row["key"][3:])["text"]
    ours, theirs = f"GOOD: {article[:20]}", f"BAD: {article[:20]}"
    a, b = (ours, theirs) if row["candidate_position"] == "A" else (theirs, ours)
    assert first.messages[0]["content"] == xlsum_judge_prompt("English", article, a, b)

    calls = judge.calls  # rerun: only the two failed judgments are asked again
    run_xlsum_winrate(capo_dir / "summaries.jsonl", llama_dir, out, judge, repeats=2, seed=0, echo=None)
    assert judge.calls == calls + 1 and len(judge.requests) == 18 + 2

    title, columns, table_rows = table(result)
    assert columns == ["language", "win %", "tie %", "lose %", "SD win", "SD tie", "SD lose", "n", "unparseable",
                       "failed", "excluded"]
    assert [r[0] for r in table_rows] == ["en", "zh", "all"] and table_rows[0][7:] == [5, 2, 0, 1]
    assert "capo vs llama" in title


def test_xlsum_winrate_needs_the_same_items(tmp_path):
    backend = FakeBackend(summariser("S"))
    run_xlsum(FIXTURES, ["en"], 2, tmp_path / "a", backend, seed=0, echo=None)
    run_xlsum(FIXTURES, ["en"], 3, tmp_path / "b", backend, seed=0, echo=None)
    third = next(r for _, r in iter_jsonl(tmp_path / "b" / "summaries.jsonl") if r["key"] not in
                 {row["key"] for _, row in iter_jsonl(tmp_path / "a" / "summaries.jsonl")})["key"]
    with pytest.raises(UserError, match=rf"{re.escape(str(tmp_path / 'a'))}: no summary for item {third}"):
        run_xlsum_winrate(tmp_path / "a", tmp_path / "b", tmp_path / "w", backend, echo=None)
    run_xlsum(FIXTURES, ["en"], 2, tmp_path / "c", backend, seed=0, max_text_chars=30, echo=None)
    with pytest.raises(UserError, match="summarised from different text"):
        run_xlsum_winrate(tmp_path / "a", tmp_path / "c", tmp_path / "w", backend, echo=None)
