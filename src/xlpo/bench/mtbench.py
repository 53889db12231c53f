"""Multilingual MT-Bench: two-turn answers from a candidate, graded 1-10 by a judge, per language.

Data in FastChat's layout (`data/<bench>/question.jsonl`, `reference_answer/<judge>.jsonl`,
`judge_prompts.jsonl`); language `en` is the `mt_bench` folder, any other `xx` is `xx_mt_bench`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xlpo.bench.common import write_results
from xlpo.bench.mtbench_judge import (
    JUDGE_MAX_TOKENS,
    JUDGE_TEMPERATURE,
    NEED_REF_CATEGORIES,
    JudgePrompt,
    choose_prompt,
    find_ratings,
    judge_messages,
    load_judge_prompts,
    parse_rating,
    summarize_language,
    summarize_languages,
)
from xlpo.clients.chat import ChatBackend, ChatReply, ChatRequest
from xlpo.clients.stage import run_requests
from xlpo.errors import UserError
from xlpo.fileio import iter_jsonl, write_jsonl

BENCHMARK = "mtbench"
# The CAPO paper's Table 3 reports en de it zh fr es ja; it and es have no folder in the data.
PAPER_LANGUAGES = ("en", "de", "it", "zh", "fr", "es", "ja")
DEFAULT_LANGUAGES = ("en", "de", "zh", "fr", "ja")
# CAPO appendix: "temperature 0.7 by default, max 1024 generated tokens". FastChat instead samples
# per category (0.0 for math/coding/reasoning/extraction, 0.1 stem/humanities, 0.7 writing/roleplay).
DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_TOKENS = 1024
DEFAULT_REFERENCE_JUDGE = "gpt-4o"  # the reference file present in every folder that has references
ENGLISH_BENCH = "mt_bench"


@dataclass(frozen=True)
class Question:
    question_id: int
    category: str
    turns: tuple[str, str]


def resolve_data_root(data_dir: str | Path) -> Path:
    """The folder holding judge_prompts.jsonl: `data_dir` itself or its `data/` (the staged layout)."""
    data_dir = Path(data_dir)
    for root in (data_dir, data_dir / "data"):
        if (root / "judge_prompts.jsonl").is_file():
            return root
    raise UserError(f"{data_dir}: no judge_prompts.jsonl here or in {data_dir / 'data'} (FastChat llm_judge layout expected)")


def language_of_bench(name: str) -> str | None:
    if name == ENGLISH_BENCH:
        return "en"
    return name[:-len("_mt_bench")] if name.endswith("_mt_bench") and len(name) > len("_mt_bench") else None


def available_languages(root: Path) -> dict[str, Path]:
    """Language code -> bench folder, for every `*mt_bench` folder with a question.jsonl; en first."""
    found = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        lang = language_of_bench(folder.name)
        if lang and (folder / "question.jsonl").is_file():
            found[lang] = folder
    return dict(sorted(found.items(), key=lambda item: (item[0] != "en", item[0])))


def bench_folders(root: Path, languages: Sequence[str]) -> dict[str, Path]:
    available = available_languages(root)
    unknown = [lang for lang in languages if lang not in available]
    if unknown:
        raise UserError(f"MT-Bench has no data for language(s) {', '.join(unknown)} in {root}; "
                        f"available: {', '.join(available) or 'none'}")
    if len(set(languages)) != len(languages) or not languages:
        raise UserError(f"languages must be a non-empty list without repeats, got {list(languages)}")
    return {lang: available[lang] for lang in languages}


def load_questions(path: Path) -> list[Question]:
    questions, seen = [], set()
    for where, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object")
        qid, category, turns = row.get("question_id"), row.get("category"), row.get("turns")
        if not isinstance(qid, int) or isinstance(qid, bool):
            raise UserError(f"{where}: 'question_id' must be an integer")
        if not isinstance(category, str) or not category:
            raise UserError(f"{where}: 'category' must be a non-empty string")
        if not isinstance(turns, list) or len(turns) != 2 or not all(isinstance(t, str) for t in turns):
            raise UserError(f"{where}: 'turns' must be a list of exactly 2 strings (MT-Bench is two-turn)")
        if qid in seen:
            raise UserError(f"{where}: question_id {qid} appears twice")
        seen.add(qid)
        questions.append(Question(qid, category, (turns[0], turns[1])))
    if not questions:
        raise UserError(f"{path}: no questions")
    return questions


def load_references(path: Path) -> dict[int, list[str]]:
    """question_id -> reference turns (`choices[0].turns`; some references have one turn only)."""
    references: dict[int, list[str]] = {}
    for where, row in iter_jsonl(path):
        qid = row.get("question_id") if isinstance(row, dict) else None
        if not isinstance(qid, int) or isinstance(qid, bool):
            raise UserError(f"{where}: expected an object with an integer 'question_id'")
        choices = row.get("choices")
        turns = choices[0].get("turns") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise UserError(f"{where}: 'choices' must be a list whose first item has 'turns', a list of strings")
        if qid in references:
            raise UserError(f"{where}: question_id {qid} appears twice")
        references[qid] = turns
    return references


def select_questions(questions: Sequence[Question], lang: str, bench: Path, limit: int | None,
                     question_ids: Sequence[int] | None) -> list[Question]:
    """The requested ids (in file order), then the first `limit`. Ids are the bench's own (ja: 1-80)."""
    selected = list(questions)
    if question_ids is not None:
        present = {q.question_id for q in questions}
        missing = sorted(set(question_ids) - present)
        if missing:
            raise UserError(f"{lang}: question ids {missing} are not in {bench / 'question.jsonl'} (its ids: "
                            f"{min(present)}-{max(present)}; each bench keeps its own numbering)")
        wanted = set(question_ids)
        selected = [q for q in selected if q.question_id in wanted]
    if limit is not None:
        if limit < 1:
            raise UserError(f"limit must be at least 1, got {limit}")
        selected = selected[:limit]
    return selected


def references_for(lang: str, bench: Path, questions: Sequence[Question], reference_judge: str
                   ) -> dict[int, list[str]]:
    """The reference answers a language needs; a missing file is an error only when a selected
    question's category needs references."""
    if not any(q.category in NEED_REF_CATEGORIES for q in questions):
        return {}
    path = bench / "reference_answer" / f"{reference_judge}.jsonl"
    if not path.is_file():
        folder = bench / "reference_answer"
        have = sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []
        raise UserError(f"{lang}: no reference answers {path} for the {'/'.join(NEED_REF_CATEGORIES)} questions; "
                        f"reference_judge available there: {', '.join(have) or 'none'}")
    return load_references(path)


def item_key(lang: str, question_id: int, turn: int) -> str:
    return f"{lang}/{question_id}/{turn}"


def derive_seed(run_seed: int, key: str) -> int:
    """A per-item sampling seed from the run seed and the item's key (stable across runs, 31 bits)."""
    digest = hashlib.sha256(f"{run_seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def turn1_request(question: Question, seed: int, temperature: float, max_tokens: int) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": question.turns[0]}], temperature, max_tokens, seed)


def turn2_request(question: Question, answer1: str, seed: int, temperature: float, max_tokens: int) -> ChatRequest:
    messages = [{"role": "user", "content": question.turns[0]}, {"role": "assistant", "content": answer1},
                {"role": "user", "content": question.turns[1]}]
    return ChatRequest(messages, temperature, max_tokens, seed)


@dataclass(frozen=True)
class _Item:
    lang: str
    question: Question
    reference: list[str] | None


def _generation_error(turn: int, reply1: ChatReply, reply2: ChatReply | None) -> str | None:
    if not reply1.ok:
        reason = reply1.error or "failed"
        return reason if turn == 1 else f"turn 1 failed, turn 2 not asked: {reason}"
    if turn == 2 and (reply2 is None or not reply2.ok):
        return (reply2.error if reply2 else None) or "failed"
    return None


def judgment_row(key: str, item: _Item, turn: int, seed: int, generation_error: str | None,
                 plan: tuple[JudgePrompt, bool, list] | None, reply: ChatReply | None) -> dict:
    """One row of judgments.jsonl: how this (question, turn) ended, with the judge's raw reply."""
    row = {"key": key, "language": item.lang, "question_id": item.question.question_id,
           "category": item.question.category, "turn": turn, "seed": seed, "status": None, "judge_prompt": None,
           "with_reference": False, "reference_missing": False, "score": None, "ratings_found": [],
           "judge_reply": None, "error": None}
    if generation_error:
        return row | {"status": "generation_failed", "error": generation_error}
    if plan is None or reply is None:
        return row | {"status": "not_judged"}
    prompt, with_ref, _ = plan
    row.update(judge_prompt=prompt.name, with_reference=with_ref, judge_reply=reply.text,
               reference_missing=item.question.category in NEED_REF_CATEGORIES and not with_ref)
    if not reply.ok:
        return row | {"status": "judge_failed", "error": reply.error or "failed"}
    score = parse_rating(reply.text)
    return row | {"status": "unparseable" if score is None else "scored", "score": score,
                  "ratings_found": find_ratings(reply.text)}


def run_mtbench(data_dir: str | Path, out_dir: Path, candidate: ChatBackend, judge: ChatBackend | None, *,
                languages: Sequence[str] = DEFAULT_LANGUAGES, limit: int | None = None,
                question_ids: Sequence[int] | None = None, temperature: float = DEFAULT_TEMPERATURE,
                max_tokens: int = DEFAULT_MAX_TOKENS, seed: int = 0,
                reference_judge: str = DEFAULT_REFERENCE_JUDGE, judge_max_tokens: int = JUDGE_MAX_TOKENS,
                echo: Callable[[str], None] | None = print) -> dict:
    """Generate both turns, judge them (skipped when `judge` is None), write results; the results.

    Stages (each resumable): out_dir/answers_turn1.jsonl, answers_turn2.jsonl, judge_replies.jsonl;
    then out_dir/judgments.jsonl (one row per question and turn) and results.json.
    """
    out_dir = Path(out_dir)
    languages = list(languages)
    root = resolve_data_root(data_dir)
    prompts = load_judge_prompts(root / "judge_prompts.jsonl")  # checked before any generation
    benches = bench_folders(root, languages)
    items: list[_Item] = []
    for lang, bench in benches.items():
        questions = select_questions(load_questions(bench / "question.jsonl"), lang, bench, limit, question_ids)
        references = references_for(lang, bench, questions, reference_judge) if judge is not None else {}
        items += [_Item(lang, q, references.get(q.question_id)) for q in questions]

    def key(item: _Item, turn: int) -> str:
        return item_key(item.lang, item.question.question_id, turn)

    seeds = {key(item, turn): derive_seed(seed, key(item, turn)) for item in items for turn in (1, 2)}
    first = run_requests(out_dir / "answers_turn1.jsonl", candidate,
                         [(key(i, 1), turn1_request(i.question, seeds[key(i, 1)], temperature, max_tokens))
                          for i in items], label="mtbench turn 1", echo=echo)
    second = run_requests(out_dir / "answers_turn2.jsonl", candidate,
                          [(key(i, 2), turn2_request(i.question, first[key(i, 1)].text, seeds[key(i, 2)],
                                                     temperature, max_tokens))
                           for i in items if first[key(i, 1)].ok], label="mtbench turn 2", echo=echo)

    plans = {}  # key -> (prompt, with_reference, messages) of every judgment to ask
    for item in items:
        for turn in (1, 2):
            k = key(item, turn)
            if judge is None or _generation_error(turn, first[key(item, 1)], second.get(key(item, 2))):
                continue
            prompt, with_ref = choose_prompt(prompts, item.question.category, turn, item.reference)
            answers = [first[key(item, 1)].text] + ([second[k].text] if turn == 2 else [])
            plans[k] = (prompt, with_ref, judge_messages(prompt, item.question.turns, answers, turn,
                                                         item.reference if with_ref else None))
    verdicts = {} if judge is None else run_requests(
        out_dir / "judge_replies.jsonl", judge,
        [(k, ChatRequest(messages, JUDGE_TEMPERATURE, judge_max_tokens)) for k, (_, _, messages) in plans.items()],
        label="mtbench judge", echo=echo)

    rows = [judgment_row(key(item, turn), item, turn, seeds[key(item, turn)],
                         _generation_error(turn, first[key(item, 1)], second.get(key(item, 2))),
                         plans.get(key(item, turn)), verdicts.get(key(item, turn)))
            for item in items for turn in (1, 2)]
    write_jsonl(out_dir / "judgments.jsonl", rows)

    by_language = {}
    for lang, bench in benches.items():
        lang_rows = [r for r in rows if r["language"] == lang]
        by_language[lang] = {"bench": bench.name, "questions": len(lang_rows) // 2, **summarize_language(lang_rows)}
        if echo and by_language[lang]["judged_without_reference"]:
            echo(f"mtbench {lang}: judged without reference: {by_language[lang]['judged_without_reference']} "
                 f"(no {reference_judge} reference answer for those {'/'.join(NEED_REF_CATEGORIES)} turns)")
    results = {"judged": judge is not None, "languages": by_language, "average": summarize_languages(by_language)}
    config = {
        "data_dir": str(root), "benches": {lang: b.name for lang, b in benches.items()}, "languages": languages,
        "limit": limit, "question_ids": None if question_ids is None else list(question_ids),
        "temperature": temperature, "temperature_policy": "one temperature for every category (CAPO paper); "
        "FastChat uses per-category temperatures", "max_tokens": max_tokens, "seed": seed,
        "item_seeds": "sha256('<seed>/<lang>/<question_id>/<turn>')[:4] & 0x7fffffff",
        "reference_judge": reference_judge, "judge_temperature": JUDGE_TEMPERATURE,
        "judge_max_tokens": judge_max_tokens, "judge_prompts": sorted(prompts),
        "judge_prompts_sha256": hashlib.sha256((root / "judge_prompts.jsonl").read_bytes()).hexdigest(),
        "candidate": candidate.describe(), "judge": None if judge is None else judge.describe(),
    }
    write_results(out_dir, BENCHMARK, results, config)
    return results


def _counts(lang: Mapping, status: str) -> int:
    return sum(lang["counts"][turn][status] for turn in ("1", "2"))


def table(results: Mapping) -> tuple[str, list[str], list[list]]:
    """Per-language table: turn means, their pooled average, and how many turns were scored or not."""
    columns = ["Language", "Turn 1", "Turn 2", "Average", "Scored", "Unparsed", "Judge fail", "Gen fail",
               "No ref"]
    rows = []
    for lang, r in results["languages"].items():
        rows.append([lang, r["turn1"], r["turn2"], r["average"], _counts(r, "scored"), _counts(r, "unparseable"),
                     _counts(r, "judge_failed"), _counts(r, "generation_failed"), r["judged_without_reference"]])
    langs = results["languages"].values()
    avg = results["average"]
    rows.append(["Avg", avg["turn1"], avg["turn2"], avg["average"],
                 *[sum(_counts(r, s) for r in langs) for s in ("scored", "unparseable", "judge_failed", "generation_failed")],
                 sum(r["judged_without_reference"] for r in langs)])
    title = "MT-Bench, single-answer grading 1-10" + ("" if results.get("judged", True) else " (not judged)")
    return title, columns, rows
