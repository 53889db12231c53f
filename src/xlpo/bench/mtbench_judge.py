"""MT-Bench single-answer grading: judge prompts, their filling, the rating parser, the scores.

Follows FastChat's llm_judge (`common.py`, `gen_judgment.py`, `show_result.py`); see
docs/benchmarks.md for where xlpo differs on purpose (out-of-range ratings, missing references).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xlpo.errors import UserError
from xlpo.fileio import iter_jsonl

# Categories whose questions are judged against a reference answer (FastChat's NEED_REF_CATS).
NEED_REF_CATEGORIES = ("math", "reasoning", "coding")

# (judged against a reference?, turn) -> judge prompt name, as in FastChat's make_judge_single.
PROMPT_NAMES = {
    (False, 1): "single-v1",
    (True, 1): "single-math-v1",
    (False, 2): "single-v1-multi-turn",
    (True, 2): "single-math-v1-multi-turn",
}
RATING_FORMAT = "[[rating]]"
JUDGE_TEMPERATURE = 0.0  # FastChat: temperature=0, max_tokens=2048 for OpenAI judges
JUDGE_MAX_TOKENS = 2048

# Template fields FastChat's run_judge_single passes to str.format, per turn.
_TURN_FIELDS = {1: {"question", "answer"}, 2: {"question_1", "question_2", "answer_1", "answer_2"}}
_REF_FIELDS = ("ref_answer_1", "ref_answer_2")

# FastChat's one_score_pattern and its backup: a number in [[...]], else a number in [...].
RATING_PATTERN = re.compile(r"\[\[(\d+\.?\d*)\]\]")
RATING_PATTERN_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
MIN_RATING, MAX_RATING = 1.0, 10.0

# Outcome of one (question, turn): exactly one of these.
STATUSES = ("scored", "unparseable", "judge_failed", "generation_failed", "not_judged")


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    system_prompt: str
    prompt_template: str
    fields: frozenset[str]  # placeholders the template uses


def template_fields(template: str, where: str) -> frozenset[str]:
    """Placeholder names in a str.format template; anything but a plain `{name}` is refused."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UserError(f"{where}: prompt_template is not a valid template ({exc})") from None
    names = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise UserError(f"{where}: prompt_template field {{{name}}} must be a plain {{name}}")
        names.add(name)
    return frozenset(names)


def fill_template(template: str, values: Mapping[str, str]) -> str:
    """`template.format(**values)` for plain fields only, so data-derived text cannot reach attributes.

    Literal text (with `{{`/`}}` unescaped) and values are joined exactly as str.format joins them.
    """
    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        if name is not None:
            parts.append(values[name])
    return "".join(parts)


def load_judge_prompts(path: str | Path) -> dict[str, JudgePrompt]:
    """The four single-answer prompts of a FastChat judge_prompts.jsonl, checked before any request."""
    found: dict[str, tuple[str, dict]] = {}
    for where, row in iter_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise UserError(f"{where}: expected an object with a string field 'name'")
        if row["name"] in PROMPT_NAMES.values():
            if row["name"] in found:
                raise UserError(f"{where}: judge prompt {row['name']!r} appears twice")
            found[row["name"]] = (where, row)
    prompts = {}
    for (with_ref, turn), name in PROMPT_NAMES.items():
        if name not in found:
            raise UserError(f"{path}: judge prompt {name!r} is missing (needed: {', '.join(PROMPT_NAMES.values())})")
        where, row = found[name]
        for key in ("system_prompt", "prompt_template", "output_format", "type"):
            if not isinstance(row.get(key), str):
                raise UserError(f"{where}: judge prompt {name!r} needs a string field {key!r}")
        if row["type"] != "single" or row["output_format"] != RATING_FORMAT:
            raise UserError(f"{where}: judge prompt {name!r} must have type 'single' and output_format "
                            f"{RATING_FORMAT!r}, got {row['type']!r} and {row['output_format']!r}")
        fields = template_fields(row["prompt_template"], f"{where} ({name})")
        allowed = _TURN_FIELDS[turn] | (set(_REF_FIELDS) if with_ref else set())
        if not fields <= allowed:
            raise UserError(f"{where}: prompt_template of {name!r} uses {sorted(fields - allowed)}; "
                            f"allowed fields: {sorted(allowed)}")
        prompts[name] = JudgePrompt(name, row["system_prompt"], row["prompt_template"], fields)
    return prompts


def choose_prompt(prompts: Mapping[str, JudgePrompt], category: str, turn: int,
                  reference: Sequence[str] | None) -> tuple[JudgePrompt, bool]:
    """(prompt, judged with a reference?): the reference prompt for NEED_REF categories when the
    reference has every turn its template asks for, else the general prompt."""
    if category in NEED_REF_CATEGORIES:
        ref_prompt = prompts[PROMPT_NAMES[(True, turn)]]
        needed = [i for i, name in enumerate(_REF_FIELDS) if name in ref_prompt.fields]
        if reference is not None and all(i < len(reference) for i in needed):
            return ref_prompt, True
    return prompts[PROMPT_NAMES[(False, turn)]], False


def judge_messages(prompt: JudgePrompt, question_turns: Sequence[str], answers: Sequence[str], turn: int,
                   reference: Sequence[str] | None) -> list[dict[str, str]]:
    """System + user messages of one judgment, filled as FastChat's run_judge_single fills them."""
    values = {f"ref_answer_{i + 1}": text for i, text in enumerate((reference or [])[:2])}
    if turn == 1:
        values.update(question=question_turns[0], answer=answers[0])
    else:
        values.update(question_1=question_turns[0], question_2=question_turns[1],
                      answer_1=answers[0], answer_2=answers[1])
    return [{"role": "system", "content": prompt.system_prompt},
            {"role": "user", "content": fill_template(prompt.prompt_template, values)}]


def find_ratings(text: str) -> list[float]:
    """Every rating FastChat's rule could read: all `[[n]]`, or if there is none, all `[n]`."""
    matches = RATING_PATTERN.findall(text) or RATING_PATTERN_BACKUP.findall(text)
    return [float(m) for m in matches]


def parse_rating(text: str) -> float | None:
    """The first rating (FastChat takes the first match), or None when there is none or it is
    outside 1-10: such a reply is unparseable and never guessed."""
    ratings = find_ratings(text)
    if not ratings or not MIN_RATING <= ratings[0] <= MAX_RATING:
        return None
    return ratings[0]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize_language(judgments: Sequence[Mapping]) -> dict:
    """Scores and counts of one language from its judgment rows (turn, category, status, score, ...).

    turn1/turn2: mean score of that turn's scored rows. average: mean over every scored row of both
    turns, which is FastChat's show_result "Average" (equal to the mean of the two turn means when
    both turns have as many scored rows). categories: the same pooled mean per category.
    """
    scored = [j for j in judgments if j["status"] == "scored"]
    counts = {str(turn): {status: sum(1 for j in judgments if j["turn"] == turn and j["status"] == status)
                          for status in STATUSES} for turn in (1, 2)}
    categories = sorted({j["category"] for j in judgments})
    return {
        "turn1": _mean([j["score"] for j in scored if j["turn"] == 1]),
        "turn2": _mean([j["score"] for j in scored if j["turn"] == 2]),
        "average": _mean([j["score"] for j in scored]),
        "categories": {c: _mean([j["score"] for j in scored if j["category"] == c]) for c in categories},
        "counts": counts,
        "judged_without_reference": sum(1 for j in judgments if j.get("reference_missing")),
        "conflicting_ratings": sum(1 for j in judgments if len(set(j.get("ratings_found") or [])) > 1),
    }


def summarize_languages(by_language: Mapping[str, Mapping]) -> dict:
    """Mean over languages of each per-language score (CAPO Table 3's Avg row); None as soon as
    one language has no score, so that an average never silently covers fewer languages."""
    summary = {}
    for key in ("turn1", "turn2", "average"):
        values = [lang[key] for lang in by_language.values()]
        summary[key] = None if not values or any(v is None for v in values) else sum(values) / len(values)
    return summary
