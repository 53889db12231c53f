"""Multilingual MT-Bench: data loading, exact judge prompts, rating parser, scores, failures, reruns.

Backends are fakes defined here that answer from canned rules and record what they were asked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from chat_fakes import FakeBackend
from xlpo.bench.mtbench import (
    DEFAULT_LANGUAGES,
    PAPER_LANGUAGES,
    available_languages,
    derive_seed,
    load_questions,
    resolve_data_root,
    run_mtbench,
    table,
)
from xlpo.bench.mtbench_judge import (
    fill_template,
    find_ratings,
    load_judge_prompts,
    parse_rating,
    summarize_language,
    summarize_languages,
)
from xlpo.clients.chat import ChatReply
from xlpo.errors import UserError


def user_turns(request):
    return [m["content"] for m in request.messages if m["role"] == "user"]


def echo_candidate(request):
    """'A<n> to <question>' where n is the turn; braces test that answers are not re-formatted."""
    turns = user_turns(request)
    return f"A{len(turns)} to {turns[-1]} {{answer}}"


def judge_by_table(ratings, default="Rating: [[5]]"):
    """A judge replying from `ratings`: {(question text, turn): reply} found in the user prompt."""
    def rule(request):
        prompt = request.messages[-1]["content"]
        turn = 2 if "A2 to " in prompt else 1
        for (question, t), reply in ratings.items():
            if t == turn and f"A1 to {question} " in prompt:
                return reply
        return default
    return rule


# ----------------------------------------------------------------------------------------------
# a small hand-made bench in FastChat's layout
# ----------------------------------------------------------------------------------------------

TINY_PROMPTS = [
    {"name": "pair-v2", "type": "pairwise", "system_prompt": "x", "prompt_template": "{question}{answer_a}",
     "output_format": "[[A]]"},
    {"name": "single-v1", "type": "single", "system_prompt": "SYS-GENERAL",
     "prompt_template": "Q:{question}\nA:{answer}", "output_format": "[[rating]]"},
    {"name": "single-math-v1", "type": "single", "system_prompt": "SYS-MATH",
     "prompt_template": "Q:{question}\nREF:{ref_answer_1}\nA:{answer}", "output_format": "[[rating]]"},
    {"name": "single-v1-multi-turn", "type": "single", "system_prompt": "SYS-GENERAL-MT",
     "prompt_template": "Q1:{question_1}\nA1:{answer_1}\nQ2:{question_2}\nA2:{answer_2}",
     "output_format": "[[rating]]"},
    {"name": "single-math-v1-multi-turn", "type": "single", "system_prompt": "SYS-MATH-MT",
     "prompt_template": "Q1:{question_1}\nR1:{ref_answer_1}\nQ2:{question_2}\nR2:{ref_answer_2}\n"
                        "A1:{answer_1}\nA2:{answer_2}", "output_format": "[[rating]]"},
]

TINY_QUESTIONS = [
    {"question_id": 101, "category": "writing", "turns": ["W1", "W2"]},
    {"question_id": 102, "category": "math", "turns": ["M1", "M2"]},
    {"question_id": 103, "category": "roleplay", "turns": ["R1", "R2"]},
]


def write_lines(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")


def tiny_bench(root: Path, questions=TINY_QUESTIONS, references=None, prompts=TINY_PROMPTS, bench="mt_bench") -> Path:
    write_lines(root / "data" / "judge_prompts.jsonl", prompts)
    write_lines(root / "data" / bench / "question.jsonl", questions)
    if references is None:
        references = [{"question_id": 102, "choices": [{"index": 0, "turns": ["REF-M1", "REF-M2"]}]}]
    if references:
        write_lines(root / "data" / bench / "reference_answer" / "gpt-4o.jsonl", references)
    return root


def run_tiny(tmp_path, candidate, judge, out="out", **kwargs):
    kwargs.setdefault("languages", ["en"])
    return run_mtbench(tmp_path / "bench", tmp_path / out, candidate, judge, echo=None, **kwargs)


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------
# the rating parser
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, score, found", [
    ("The answer is fine. Rating: [[7]]", 7.0, [7.0]),
    ("Rating: [[8.5]]", 8.5, [8.5]),
    ("[[10]]", 10.0, [10.0]),
    ("[[1]]", 1.0, [1.0]),
    ("[[5.]]", 5.0, [5.0]),
    ("Rating: [[11]]", None, [11.0]),            # outside 1-10: unparseable, never clipped
    ("Rating: [[0]]", None, [0.0]),
    ("I cannot rate this answer.", None, []),
    ("Rating: [[3]]. On reflection, Rating: [[9]]", 3.0, [3.0, 9.0]),  # FastChat: the first match
    ("Rating: [[11]] ... Rating: [[7]]", None, [11.0, 7.0]),            # the first is out of range
    ("Rating: [[ 6 ]]", None, []),               # FastChat's pattern allows no spaces
    ("Rating: [6]", 6.0, [6.0]),                 # the backup pattern
    ("As noted in [2], ... Rating: [[4]]", 4.0, [4.0]),  # [[n]] anywhere beats an earlier [n]
    ("Rating: [[-3]]", None, []),
    ("Rating: [[7/10]]", None, []),
    ("Rating: 7/10", None, []),
    ("Verdict: [[A]]", None, []),
    ("Rating: [[\uff18]]", 8.0, [8.0]),          # a full-width digit is a digit (\d), read as 8
])
def test_parse_rating(reply, score, found):
    assert parse_rating(reply) == score
    assert find_ratings(reply) == found


# ----------------------------------------------------------------------------------------------
# templates and judge prompts
# ----------------------------------------------------------------------------------------------

def test_fill_template_matches_str_format_and_never_reformats_values():
    template = "{{literal}} Q:{question}\nA:{answer}\n{question}"
    values = {"question": "2+2?", "answer": "It is {answer} and {{x}}"}
    assert fill_template(template, values) == template.format(**values)
    assert fill_template(template, values) == "{literal} Q:2+2?\nA:It is {answer} and {{x}}\n2+2?"


@pytest.mark.parametrize("template, message", [
    ("Q:{question.__class__}", "plain"),
    ("Q:{question!r}", "plain"),
    ("Q:{question:>10}", "plain"),
    ("Q:{question} {secret}", "secret"),
    ("Q:{question", "not a valid template"),
])
def test_bad_judge_templates_are_user_errors(tmp_path, template, message):
    prompts = [dict(p) for p in TINY_PROMPTS]
    prompts[1]["prompt_template"] = template
    write_lines(tmp_path / "judge_prompts.jsonl", prompts)
    with pytest.raises(UserError, match=message):
        load_judge_prompts(tmp_path / "judge_prompts.jsonl")


def test_missing_or_wrong_judge_prompts_are_user_errors(tmp_path):
    write_lines(tmp_path / "a.jsonl", [p for p in TINY_PROMPTS if p["name"] != "single-v1-multi-turn"])
    with pytest.raises(UserError, match="'single-v1-multi-turn' is missing"):
        load_judge_prompts(tmp_path / "a.jsonl")
    wrong = [dict(p, output_format="[[A]]") if p["name"] == "single-v1" else p for p in TINY_PROMPTS]
    write_lines(tmp_path / "b.jsonl", wrong)
    with pytest.raises(UserError, match=r"b.jsonl:2: .*output_format"):
        load_judge_prompts(tmp_path / "b.jsonl")
    write_lines(tmp_path / "c.jsonl", [{k: v for k, v in p.items() if k != "system_prompt"} for p in TINY_PROMPTS])
    with pytest.raises(UserError, match="system_prompt"):
        load_judge_prompts(tmp_path / "c.jsonl")


# ----------------------------------------------------------------------------------------------
# the real data
# ----------------------------------------------------------------------------------------------

def test_languages_of_the_real_data(shared_data):
    root = resolve_data_root(shared_data / "mt-bench")
    langs = available_languages(root)
    assert list(langs) == ["en", "de", "fr", "id", "ja", "pl", "ru", "vi", "zh"]
    assert langs["en"].name == "mt_bench" and langs["ja"].name == "ja_mt_bench"
    assert DEFAULT_LANGUAGES == tuple(lang for lang in PAPER_LANGUAGES if lang in langs)
    with pytest.raises(UserError, match=r"it, es .*available: en, de, fr, id, ja, pl, ru, vi, zh"):
        run_mtbench(shared_data / "mt-bench", Path("/nonexistent"), FakeBackend(model="c", reply=echo_candidate), None,
                    languages=["en", "it", "es"], echo=None)


def test_exact_prompts_on_a_real_question_with_reference(shared_data, tmp_path):
    data = resolve_data_root(shared_data / "mt-bench")
    questions = {q.question_id: q for q in load_questions(data / "mt_bench" / "question.jsonl")}
    refs = {r["question_id"]: r["choices"][0]["turns"] for r in read_jsonl(data / "mt_bench/reference_answer/gpt-4o.jsonl")}
    raw = {p["name"]: p for p in read_jsonl(data / "judge_prompts.jsonl")}
    candidate = FakeBackend(model="cand", reply=echo_candidate)
    judge = FakeBackend(model="judge", reply=lambda r: "Rating: [[6]]")
    run_mtbench(shared_data / "mt-bench", tmp_path, candidate, judge, languages=["en"], question_ids=[111, 81],
                echo=None)

    math, writing = questions[111], questions[81]
    assert math.category == "math" and writing.category == "writing"
    assert math.turns[0] == ("The vertices of a triangle are at points (0, 0), (-1, 1), and (3, 3). "
                             "What is the area of the triangle?")
    q1, q2 = math.turns
    a1, a2 = f"A1 to {q1} {{answer}}", f"A2 to {q2} {{answer}}"
    r1, r2 = refs[111]

    # the candidate: turn 1 alone, turn 2 after turn 1's reply; temperature 0.7, 1024 tokens, seeded
    asked = {(len(user_turns(r)), user_turns(r)[0]): r for r in candidate.requests}
    assert len(candidate.requests) == 4
    t1, t2 = asked[(1, q1)], asked[(2, q1)]
    assert t1.messages == [{"role": "user", "content": q1}]
    assert t2.messages == [{"role": "user", "content": q1}, {"role": "assistant", "content": a1},
                           {"role": "user", "content": q2}]
    assert (t1.temperature, t1.max_tokens, t2.temperature, t2.max_tokens) == (0.7, 1024, 0.7, 1024)
    assert t1.seed == derive_seed(0, "en/111/1") and t2.seed == derive_seed(0, "en/111/2") and t1.seed != t2.seed

    by_user = {r.messages[1]["content"]: r for r in judge.requests}
    assert len(judge.requests) == 4
    assert all((r.temperature, r.max_tokens, r.seed) == (0.0, 2048, None) for r in judge.requests)
    math1 = next(r for r in judge.requests if r.messages[0]["content"] == raw["single-math-v1"]["system_prompt"]
                 and "[The Start of Reference Answer]" in r.messages[1]["content"])
    user = math1.messages[1]["content"]
    assert user.startswith("[Instruction]\nPlease act as an impartial judge")
    assert user.endswith(f"[Question]\n{q1}\n\n[The Start of Reference Answer]\n{r1}\n[The End of Reference Answer]"
                         f"\n\n[The Start of Assistant's Answer]\n{a1}\n[The End of Assistant's Answer]")
    assert user == raw["single-math-v1"]["prompt_template"].format(question=q1, answer=a1, ref_answer_1=r1,
                                                                     ref_answer_2=r2)
    math2 = by_user[
        f"<|The Start of Reference Answer|>\n\n### User:\n{q1}\n\n### Reference answer:\n{r1}\n\n### User:\n{q2}\n\n"
        f"### Reference answer:\n{r2}\n\n<|The End of Reference Answer|>\n\n\n"
        f"<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{q1}\n\n### Assistant A:\n{a1}\n\n"
        f"### User:\n{q2}\n\n### Assistant A:\n{a2}\n\n<|The End of Assistant A's Conversation with User|>"]
    assert math2.messages[0] == {"role": "system", "content": raw["single-math-v1-multi-turn"]["system_prompt"]}
    assert math2.messages[0]["content"].startswith("Please act as an impartial judge and evaluate the quality of the "
                                                   "response provided by an AI assistant to the user question. Your "
                                                   "evaluation should consider correctness")

    w1, w2 = writing.turns
    b1, b2 = f"A1 to {w1} {{answer}}", f"A2 to {w2} {{answer}}"
    gen1 = next(r for r in judge.requests if r.messages[1]["content"].endswith(
        f"[Question]\n{w1}\n\n[The Start of Assistant's Answer]\n{b1}\n[The End of Assistant's Answer]"))
    assert gen1.messages[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert "Reference" not in gen1.messages[1]["content"]
    gen2 = by_user[f"<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{w1}\n\n### Assistant A:\n{b1}"
                   f"\n\n### User:\n{w2}\n\n### Assistant A:\n{b2}\n\n<|The End of Assistant A's Conversation with User|>"]
    assert gen2.messages[0]["content"] == raw["single-v1-multi-turn"]["system_prompt"]

    rows = {r["key"]: r for r in read_jsonl(tmp_path / "judgments.jsonl")}
    assert {k: r["judge_prompt"] for k, r in rows.items()} == {
        "en/81/1": "single-v1", "en/81/2": "single-v1-multi-turn",
        "en/111/1": "single-math-v1", "en/111/2": "single-math-v1-multi-turn"}
    assert all(r["score"] == 6.0 and r["judge_reply"] == "Rating: [[6]]" for r in rows.values())
    config = json.loads((tmp_path / "results.json").read_text())["config"]
    assert (config["seed"], config["temperature"], config["max_tokens"], config["reference_judge"]) == (0, 0.7, 1024, "gpt-4o")


def test_ja_keeps_its_own_question_ids(shared_data, tmp_path):
    data = resolve_data_root(shared_data / "mt-bench")
    ja = load_questions(data / "ja_mt_bench" / "question.jsonl")
    assert [q.question_id for q in ja] == list(range(1, 81))
    assert ja[0].category == "coding"
    ref = next(r for r in read_jsonl(data / "ja_mt_bench/reference_answer/gpt-4o.jsonl") if r["question_id"] == 1)
    judge = FakeBackend(model="judge", reply=lambda r: "[[7]]")
    results = run_mtbench(shared_data / "mt-bench", tmp_path, FakeBackend(model="c", reply=echo_candidate), judge,
                          languages=["en", "ja"], limit=1, echo=None)
    rows = {r["key"]: r for r in read_jsonl(tmp_path / "judgments.jsonl")}
    assert sorted(rows) == ["en/81/1", "en/81/2", "ja/1/1", "ja/1/2"]  # the first question of each bench
    assert rows["ja/1/1"]["judge_prompt"] == "single-math-v1" and rows["ja/1/1"]["with_reference"]
    ja_prompt = next(r.messages[1]["content"] for r in judge.requests if ja[0].turns[0] in r.messages[1]["content"]
                     and "[The Start of Reference Answer]" in r.messages[1]["content"])
    assert f"[The Start of Reference Answer]\n{ref['choices'][0]['turns'][0]}\n[The End" in ja_prompt
    assert results["languages"]["ja"]["bench"] == "ja_mt_bench" and results["languages"]["ja"]["questions"] == 1
    with pytest.raises(UserError, match=r"ja: question ids \[81\].*1-80"):
        run_mtbench(shared_data / "mt-bench", tmp_path / "x", FakeBackend(model="c", reply=echo_candidate), None,
                    languages=["ja"], question_ids=[81], echo=None)


def test_languages_without_references(shared_data, tmp_path):
    judge = FakeBackend(model="judge", reply=lambda r: "[[4]]")
    # ru: no reference files and no math/reasoning/coding questions: every turn gets a general prompt
    results = run_mtbench(shared_data / "mt-bench", tmp_path / "ru", FakeBackend(model="c", reply=echo_candidate), judge,
                          languages=["ru"], limit=5, reference_judge="gpt-4", echo=None)
    rows = read_jsonl(tmp_path / "ru" / "judgments.jsonl")
    assert len(rows) == 10 and {r["judge_prompt"] for r in rows} == {"single-v1", "single-v1-multi-turn"}
    assert results["languages"]["ru"]["judged_without_reference"] == 0
    assert results["languages"]["ru"]["average"] == 4.0
    # id has references for gpt-4-turbo and gpt-4o only: asking for gpt-4 with a math question is refused
    with pytest.raises(UserError, match=r"id: no reference answers .*gpt-4.jsonl.*available there: gpt-4-turbo, gpt-4o"):
        run_mtbench(shared_data / "mt-bench", tmp_path / "id", FakeBackend(model="c", reply=echo_candidate), judge,
                    languages=["id"], question_ids=[111], reference_judge="gpt-4", echo=None)


# ----------------------------------------------------------------------------------------------
# hand-made benches: references, failures, reruns
# ----------------------------------------------------------------------------------------------

def test_missing_or_short_references_are_judged_without_and_counted(tmp_path):
    questions = TINY_QUESTIONS + [{"question_id": 104, "category": "coding", "turns": ["C1", "C2"]},
                                  {"question_id": 105, "category": "reasoning", "turns": ["S1", "S2"]}]
    references = [{"question_id": 102, "choices": [{"index": 0, "turns": ["REF-M1", "REF-M2"]}]},
                  {"question_id": 104, "choices": [{"index": 0, "turns": ["REF-C1"]}]}]  # one turn only; 105: none
    tiny_bench(tmp_path / "bench", questions, references)
    judge = FakeBackend(model="judge", reply=lambda r: "[[8]]")
    messages = []
    results = run_mtbench(tmp_path / "bench", tmp_path / "out", FakeBackend(model="c", reply=echo_candidate), judge,
                          languages=["en"], echo=messages.append)
    rows = {r["key"]: r for r in read_jsonl(tmp_path / "out" / "judgments.jsonl")}
    assert [(k, rows[k]["judge_prompt"], rows[k]["reference_missing"]) for k in sorted(rows)] == [
        ("en/101/1", "single-v1", False), ("en/101/2", "single-v1-multi-turn", False),
        ("en/102/1", "single-math-v1", False), ("en/102/2", "single-math-v1-multi-turn", False),
        ("en/103/1", "single-v1", False), ("en/103/2", "single-v1-multi-turn", False),
        ("en/104/1", "single-math-v1", False), ("en/104/2", "single-v1-multi-turn", True),
        ("en/105/1", "single-v1", True), ("en/105/2", "single-v1-multi-turn", True)]
    assert results["languages"]["en"]["judged_without_reference"] == 3
    assert any("judged without reference: 3" in m for m in messages)
    sent = {r.messages[1]["content"] for r in judge.requests}
    assert "Q:M1\nREF:REF-M1\nA:A1 to M1 {answer}" in sent
    assert "Q1:M1\nR1:REF-M1\nQ2:M2\nR2:REF-M2\nA1:A1 to M1 {answer}\nA2:A2 to M2 {answer}" in sent
    assert "Q:C1\nREF:REF-C1\nA:A1 to C1 {answer}" in sent
    assert "Q:S1\nA:A1 to S1 {answer}" in sent


def test_failures_are_counted_never_scored_and_retried_on_rerun(tmp_path):
    tiny_bench(tmp_path / "bench")

    def flaky_candidate(request):
        turns = user_turns(request)
        if turns == ["W1"] or turns == ["R1", "R2"]:
            return ChatReply(text=None, error="HTTP 500")
        return echo_candidate(request)

    judge_rule = judge_by_table({("M1", 1): "Rating: [[5]]", ("M1", 2): "no rating here",
                                 ("R1", 1): ChatReply(text=None, error="HTTP 503")})
    candidate, judge = FakeBackend(model="c", reply=flaky_candidate), FakeBackend(model="j", reply=judge_rule)
    results = run_tiny(tmp_path, candidate, judge)
    # turn 2 of W (whose turn 1 failed) is never asked
    assert sorted(tuple(user_turns(r)) for r in candidate.requests) == [("M1",), ("M1", "M2"), ("R1",), ("R1", "R2"), ("W1",)]
    assert len(judge.requests) == 3  # M turn 1, M turn 2, R turn 1
    rows = {r["key"]: r for r in read_jsonl(tmp_path / "out" / "judgments.jsonl")}
    assert {k: r["status"] for k, r in rows.items()} == {
        "en/101/1": "generation_failed", "en/101/2": "generation_failed", "en/102/1": "scored",
        "en/102/2": "unparseable", "en/103/1": "judge_failed", "en/103/2": "generation_failed"}
    assert rows["en/101/2"]["error"] == "turn 1 failed, turn 2 not asked: HTTP 500"
    assert rows["en/103/1"]["error"] == "HTTP 503" and rows["en/103/1"]["score"] is None
    assert rows["en/102/2"]["judge_reply"] == "no rating here" and rows["en/102/2"]["score"] is None
    en = results["languages"]["en"]
    assert en["counts"] == {
        "1": {"scored": 1, "unparseable": 0, "judge_failed": 1, "generation_failed": 1, "not_judged": 0},
        "2": {"scored": 0, "unparseable": 1, "judge_failed": 0, "generation_failed": 2, "not_judged": 0}}
    assert (en["turn1"], en["turn2"], en["average"]) == (5.0, None, 5.0)
    assert results["average"] == {"turn1": 5.0, "turn2": None, "average": 5.0}

    # a rerun with working backends asks again only what failed (an unparseable reply is kept)
    candidate2 = FakeBackend(model="c", reply=echo_candidate)
    judge2 = FakeBackend(model="j", reply=judge_by_table({("M1", 1): "Rating: [[5]]", ("W1", 1): "[[9]]", ("W1", 2): "[[7]]",
                                              ("R1", 1): "[[3]]", ("R1", 2): "[[2]]"}))
    results = run_tiny(tmp_path, candidate2, judge2)
    assert sorted(tuple(user_turns(r)) for r in candidate2.requests) == [("R1", "R2"), ("W1",), ("W1", "W2")]
    assert len(judge2.requests) == 4  # W turns 1-2, R turns 1-2
    en = results["languages"]["en"]
    assert en["counts"]["1"]["scored"] == 3 and en["counts"]["2"] == {
        "scored": 2, "unparseable": 1, "judge_failed": 0, "generation_failed": 0, "not_judged": 0}
    assert en["turn1"] == pytest.approx((5 + 9 + 3) / 3) and en["turn2"] == pytest.approx((7 + 2) / 2)
    assert en["average"] == pytest.approx((5 + 9 + 3 + 7 + 2) / 5)


def test_rerun_reuses_everything(tmp_path):
    tiny_bench(tmp_path / "bench")
    rule = judge_by_table({("W1", 1): "[[9]]", ("W1", 2): "[[8]]", ("M1", 1): "[[2]]", ("M1", 2): "[[4]]",
                           ("R1", 1): "[[6]]", ("R1", 2): "[[7]]"})
    candidate, judge = FakeBackend(model="c", reply=echo_candidate), FakeBackend(model="j", reply=rule)
    first = run_tiny(tmp_path, candidate, judge)
    assert (candidate.calls, len(candidate.requests), judge.calls, len(judge.requests)) == (2, 6, 1, 6)
    judgments = (tmp_path / "out" / "judgments.jsonl").read_text()
    candidate2, judge2 = FakeBackend(model="c", reply=echo_candidate), FakeBackend(model="j", reply=rule)
    second = run_tiny(tmp_path, candidate2, judge2)
    assert (candidate2.calls, judge2.calls) == (0, 0)
    assert second == first and (tmp_path / "out" / "judgments.jsonl").read_text() == judgments
    en = second["languages"]["en"]
    assert (en["turn1"], en["turn2"], en["average"]) == (pytest.approx(17 / 3), pytest.approx(19 / 3), pytest.approx(6.0))
    assert en["categories"] == {"math": 3.0, "roleplay": 6.5, "writing": 8.5}
    # another run seed changes every sampling seed, so every answer is asked again
    candidate3 = FakeBackend(model="c", reply=echo_candidate)
    run_tiny(tmp_path, candidate3, FakeBackend(model="j", reply=rule), seed=1)
    assert len(candidate3.requests) == 6 and {r.seed for r in candidate3.requests}.isdisjoint(
        {r.seed for r in candidate.requests})


def test_generation_only_then_judged_later(tmp_path):
    tiny_bench(tmp_path / "bench")
    candidate = FakeBackend(model="c", reply=echo_candidate)
    results = run_tiny(tmp_path, candidate, None, temperature=0.0, max_tokens=64, seed=3)
    assert results["judged"] is False
    assert results["languages"]["en"]["counts"]["1"]["not_judged"] == 3 and results["languages"]["en"]["average"] is None
    assert {(r.temperature, r.max_tokens) for r in candidate.requests} == {(0.0, 64)}
    assert "not judged" in table(results)[0]
    candidate2 = FakeBackend(model="c", reply=echo_candidate)
    results = run_tiny(tmp_path, candidate2, FakeBackend(model="j", reply=lambda r: "[[6]]"), temperature=0.0, max_tokens=64, seed=3)
    assert candidate2.calls == 0 and results["languages"]["en"]["average"] == 6.0


def test_item_seeds_follow_the_documented_formula():
    expected = int.from_bytes(hashlib.sha256(b"7/de/85/2").digest()[:4], "big") & 0x7FFFFFFF
    assert derive_seed(7, "de/85/2") == expected
    assert derive_seed(7, "de/85/2") != derive_seed(8, "de/85/2")


def test_limit_and_question_ids(tmp_path):
    tiny_bench(tmp_path / "bench")
    candidate = FakeBackend(model="c", reply=echo_candidate)
    results = run_tiny(tmp_path, candidate, None, limit=2)
    assert sorted({user_turns(r)[0] for r in candidate.requests}) == ["M1", "W1"]
    assert results["languages"]["en"]["questions"] == 2
    candidate = FakeBackend(model="c", reply=echo_candidate)
    run_tiny(tmp_path, candidate, None, out="ids", question_ids=[103, 102], limit=1)
    assert {user_turns(r)[0] for r in candidate.requests} == {"M1"}  # file order, then the limit
    with pytest.raises(UserError, match="limit"):
        run_tiny(tmp_path, candidate, None, out="zero", limit=0)


@pytest.mark.parametrize("line, message", [
    ({"question_id": 9, "category": "writing"}, r"question.jsonl:2: 'turns'"),
    ({"question_id": 9, "category": "writing", "turns": ["a", "b", "c"]}, "exactly 2"),
    ({"question_id": "9", "category": "writing", "turns": ["a", "b"]}, "question_id"),
    ({"question_id": 101, "category": "writing", "turns": ["a", "b"]}, "appears twice"),
    ("{not json", r"question.jsonl:2: invalid JSON"),
])
def test_malformed_questions_are_user_errors(tmp_path, line, message):
    tiny_bench(tmp_path / "bench", [TINY_QUESTIONS[0], line])
    with pytest.raises(UserError, match=message):
        run_tiny(tmp_path, FakeBackend(model="c", reply=echo_candidate), None)


def test_malformed_references_are_user_errors(tmp_path):
    tiny_bench(tmp_path / "bench", references=[{"question_id": 102, "choices": [{"turns": "REF"}]}])
    with pytest.raises(UserError, match=r"gpt-4o.jsonl:1: 'choices'"):
        run_tiny(tmp_path, FakeBackend(model="c", reply=echo_candidate), FakeBackend(model="j", reply=lambda r: "[[5]]"))


# ----------------------------------------------------------------------------------------------
# scores and tables on hand-made numbers
# ----------------------------------------------------------------------------------------------

def judgment(turn, category, status, score=None, **extra):
    return {"turn": turn, "category": category, "status": status, "score": score, **extra}


def test_summarize_language_on_hand_made_scores():
    rows = [
        judgment(1, "writing", "scored", 8.0), judgment(1, "math", "scored", 6.0),
        judgment(1, "coding", "unparseable", ratings_found=[]), judgment(1, "roleplay", "judge_failed"),
        judgment(1, "reasoning", "scored", 10.0, reference_missing=True, ratings_found=[10.0, 10.0]),
        judgment(2, "writing", "scored", 4.0), judgment(2, "math", "scored", 9.0),
        judgment(2, "coding", "generation_failed"), judgment(2, "roleplay", "judge_failed"),
        judgment(2, "reasoning", "unparseable", ratings_found=[11.0, 3.0]),
    ]
    s = summarize_language(rows)
    assert s["turn1"] == pytest.approx(8.0)             # (8 + 6 + 10) / 3
    assert s["turn2"] == pytest.approx(6.5)             # (4 + 9) / 2
    assert s["average"] == pytest.approx(7.4)           # (8 + 6 + 10 + 4 + 9) / 5, not (8 + 6.5) / 2
    assert s["categories"] == {"coding": None, "math": 7.5, "reasoning": 10.0, "roleplay": None, "writing": 6.0}
    assert s["counts"]["1"] == {"scored": 3, "unparseable": 1, "judge_failed": 1, "generation_failed": 0, "not_judged": 0}
    assert s["counts"]["2"] == {"scored": 2, "unparseable": 1, "judge_failed": 1, "generation_failed": 1, "not_judged": 0}
    assert s["judged_without_reference"] == 1 and s["conflicting_ratings"] == 1


def test_summarize_languages_needs_every_language():
    assert summarize_languages({"en": {"turn1": 8.0, "turn2": 6.0, "average": 7.0},
                                "de": {"turn1": 6.0, "turn2": 5.0, "average": 5.5}}) == {
        "turn1": 7.0, "turn2": 5.5, "average": 6.25}
    assert summarize_languages({"en": {"turn1": 8.0, "turn2": 6.0, "average": 7.0},
                                "de": {"turn1": None, "turn2": None, "average": None}}) == {
        "turn1": None, "turn2": None, "average": None}


def lang_result(t1, t2, avg, scored=(0, 0), failed=(0, 0), unparseable=(0, 0), no_ref=0):
    def counts(i):
        return {"scored": scored[i], "unparseable": unparseable[i], "judge_failed": 0,
                "generation_failed": failed[i], "not_judged": 0}
    return {"turn1": t1, "turn2": t2, "average": avg, "categories": {}, "counts": {"1": counts(0), "2": counts(1)},
            "judged_without_reference": no_ref, "conflicting_ratings": 0}


def test_table_rows():
    results = {"judged": True, "languages": {"en": lang_result(8.0, 6.0, 7.0, scored=(2, 2)),
                                             "de": lang_result(6.0, 5.0, 5.5, scored=(2, 1), failed=(0, 1), no_ref=1)},
               "average": {"turn1": 7.0, "turn2": 5.5, "average": 6.25}}
    title, columns, rows = table(results)
    assert columns == ["Language", "Turn 1", "Turn 2", "Average", "Scored", "Unparsed", "Judge fail",
                       "Gen fail", "No ref"]
    assert rows == [["en", 8.0, 6.0, 7.0, 4, 0, 0, 0, 0], ["de", 6.0, 5.0, 5.5, 3, 0, 0, 1, 1],
                    ["Avg", 7.0, 5.5, 6.25, 7, 0, 0, 1, 1]]
    assert "not judged" not in title
