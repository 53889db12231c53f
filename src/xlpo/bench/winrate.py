"""Pairwise judged win rates of a candidate against a baseline, with the CAPO paper's judge prompt.

Each item is judged `repeats` times with a seeded random A/B order (recorded); a reply's verdict is
parsed strictly and mapped back to win/tie/lose for the candidate; unparseable and failed judgments
are counted apart. `run_xlsum_winrate` applies it to two summaries.jsonl files from `run_xlsum`.
"""

from __future__ import annotations

import random
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from xlpo.bench.common import write_results
from xlpo.bench.xlsum import INSTRUCTION, LANGUAGE_NAMES, read_summaries, summary_prompt
from xlpo.clients.chat import ChatBackend, ChatRequest
from xlpo.clients.stage import run_requests
from xlpo.errors import UserError
from xlpo.fileio import read_json, write_jsonl

# CAPO paper, Figure 11, verbatim (the paper's "- 1)" is Markdown rendering of "1)").
JUDGE_PROMPT = """Which of the following answers is the best one for given instruction in [LANGUAGE]. A good answer should follow these rules:

1) It should be in [LANGUAGE]
2) It should answer the request in the instruction
3) It should be factually and semantically comprehensible
4) It should be grammatically correct and fluent.

Instruction: Generate a one sentence summary of the text below in [LANGUAGE].

[TEXT]

Answer (A): [SUMMARY_A]
Answer (B): [SUMMARY_B]

FIRST provide a one-sentence comparison of the two answers, explaining which you prefer and why.

SECOND, on a new line, state only 'Answer (A)' or 'Answer (B)' or 'TIE'.

Your response should use the format:

Comparison: <one-sentence comparison and explanation>

Preferred: <'Answer (A)' or 'Answer (B)' or 'TIE'>"""

# The same prompt for any task: the XL-Sum instruction block becomes the task's own instruction, so
# filling [INSTRUCTION] with an XL-Sum generation prompt gives back Figure 11 exactly.
_XLSUM_BLOCK = INSTRUCTION.format(language="[LANGUAGE]") + "\n\n[TEXT]"
if _XLSUM_BLOCK not in JUDGE_PROMPT:
    raise RuntimeError("JUDGE_PROMPT no longer contains the XL-Sum instruction block")
PAIRWISE_PROMPT = JUDGE_PROMPT.replace(_XLSUM_BLOCK, "[INSTRUCTION]")

_PLACEHOLDER = re.compile(r"(\[(?:LANGUAGE|TEXT|SUMMARY_A|SUMMARY_B|INSTRUCTION)\])")
OUTCOMES = ("win", "tie", "lose")


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace [NAME] placeholders in one pass, so text put in is never scanned again.

    Sequential str.replace cannot be made safe: whichever field goes in first is rescanned by the
    later replacements, so an article containing "[SUMMARY_A]" would receive a summary.
    """
    pieces = _PLACEHOLDER.split(template)  # odd positions are the placeholders themselves
    return "".join(values[piece[1:-1]] if i % 2 else piece for i, piece in enumerate(pieces))


def xlsum_judge_prompt(language_name: str, text: str, summary_a: str, summary_b: str) -> str:
    return fill(JUDGE_PROMPT, {"LANGUAGE": language_name, "TEXT": text, "SUMMARY_A": summary_a,
                               "SUMMARY_B": summary_b})


def pairwise_prompt(language_name: str, instruction: str, answer_a: str, answer_b: str) -> str:
    return fill(PAIRWISE_PROMPT, {"LANGUAGE": language_name, "INSTRUCTION": instruction, "SUMMARY_A": answer_a,
                                  "SUMMARY_B": answer_b})


_QUOTES = "'\"\u2018\u2019\u201c\u201d"
_PREFERRED = re.compile(r"preferred\s*:(.*)", re.IGNORECASE)
_VALUE = re.compile(rf"[{_QUOTES}]?(answer \(a\)|answer \(b\)|tie)\.?[{_QUOTES}]?\.?", re.IGNORECASE)
_VERDICTS = {"answer (a)": "A", "answer (b)": "B", "tie": "TIE"}


def parse_verdict(reply: str) -> tuple[str | None, str]:
    """("A" | "B" | "TIE", "") or (None, why): exactly one line "Preferred: <verdict>" is required.

    Tolerated: whitespace around the line and value, Markdown asterisks, any case, one pair of
    quotes (' " ‘ ’ “ ”) and a trailing period. Two "Preferred:" lines (even agreeing ones), none,
    or any other value ("Answer A", "Answer (A) because ...") are unparseable: never guessed.
    """
    lines = [line.replace("*", "").strip() for line in reply.splitlines()]
    values = [match.group(1).strip() for line in lines if (match := _PREFERRED.fullmatch(line))]
    if not values:
        return None, "no 'Preferred:' line"
    if len(values) > 1:
        return None, f"{len(values)} 'Preferred:' lines"
    match = _VALUE.fullmatch(values[0])
    if not match:
        return None, f"unrecognised verdict {values[0][:80]!r}"
    return _VERDICTS[match.group(1).lower()], ""


def candidate_position(seed: int, key: str) -> str:
    """'A' or 'B': where the candidate's answer goes for this item under this order seed."""
    return "A" if random.Random(f"winrate-order:{seed}:{key}").random() < 0.5 else "B"


def outcome_for_candidate(verdict: str, position: str) -> str:
    """Map the judge's A/B/TIE back through the order to the candidate's win/tie/lose."""
    if verdict == "TIE":
        return "tie"
    return "win" if verdict == position else "lose"


def _repeat_stats(outcomes: Sequence[str]) -> dict:
    counts = {name: outcomes.count(name) for name in (*OUTCOMES, "unparseable", "failed")}
    parseable = sum(counts[name] for name in OUTCOMES)
    percent = {f"{name}_pct": 100 * counts[name] / parseable if parseable else None for name in OUTCOMES}
    return {**counts, "parseable": parseable, **percent}


def summarize(outcomes_by_repeat: Sequence[Sequence[str]]) -> dict:
    """Mean and sample SD (ddof=1) over repeats of the win/tie/lose percentages of parseable items.

    Repeats where nothing was parseable have no percentage and are left out of mean and SD.
    """
    per_repeat = [_repeat_stats(outcomes) for outcomes in outcomes_by_repeat]
    summary: dict = {}
    for name in OUTCOMES:
        values = [r[f"{name}_pct"] for r in per_repeat if r[f"{name}_pct"] is not None]
        summary[name] = statistics.fmean(values) if values else None
        summary[f"{name}_sd"] = statistics.stdev(values) if len(values) > 1 else None
    summary["unparseable"] = sum(r["unparseable"] for r in per_repeat)
    summary["failed"] = sum(r["failed"] for r in per_repeat)
    summary["per_repeat"] = per_repeat
    return summary


def _judgment_rows(keys: Sequence[str], language_of: Callable[[str], str], positions: dict[tuple[int, str], str],
                   replies: dict, repeats: int, seed: int, systems: tuple[str, str]) -> list[dict]:
    """One row per judgment: the order used, the raw reply, the parsed verdict and the candidate's outcome."""
    rows = []
    for repeat in range(repeats):
        for key in keys:
            position = positions[repeat, key]
            reply = replies[f"r{repeat}/{key}"]
            verdict, note = parse_verdict(reply.text) if reply.ok else (None, "")
            outcome = "failed" if not reply.ok else "unparseable" if verdict is None else \
                outcome_for_candidate(verdict, position)
            rows.append({"key": key, "language": language_of(key), "repeat": repeat, "order_seed": seed + repeat,
                         "candidate_position": position,
                         "system_a": systems[0] if position == "A" else systems[1],
                         "system_b": systems[1] if position == "A" else systems[0],
                         "reply": reply.text, "error": reply.error, "verdict": verdict, "parse_note": note,
                         "outcome": outcome})
    return rows


def run_winrate(items: Mapping[str, str], candidate_outputs: Mapping[str, str | None],
                baseline_outputs: Mapping[str, str | None], out_dir: str | Path, judge: ChatBackend, *,
                language_of: Callable[[str], str] | Mapping[str, str], repeats: int = 1, seed: int = 0,
                candidate_name: str = "candidate", baseline_name: str = "baseline",
                language_names: Mapping[str, str] | None = None, temperature: float = 0.0, max_tokens: int = 256,
                benchmark: str = "winrate", extra_config: Mapping | None = None,
                echo: Callable[[str], None] | None = print) -> dict:
    """Judge candidate vs baseline answers; the results.json content (also written to out_dir).

    `items` maps each item key to its instruction exactly as the models saw it; outputs map the
    same keys to an answer, or None where generation failed (such items are excluded and counted).
    Repeat r orders answers with seed + r and sends that as the judge request's seed, so repeats
    are distinct requests for any cache. Writes judge_requests.jsonl (resumable), judgments.jsonl.
    """
    if repeats < 1:
        raise UserError(f"repeats: expected at least 1, got {repeats}")
    if set(candidate_outputs) != set(items) or set(baseline_outputs) != set(items):
        raise ValueError("run_winrate: items, candidate_outputs and baseline_outputs need the same keys")
    lang = language_of.__getitem__ if isinstance(language_of, Mapping) else language_of
    names = {**LANGUAGE_NAMES, **(language_names or {})}
    for key in items:
        if lang(key) not in names:
            raise UserError(f"item {key}: no language name for '{lang(key)}'; pass language_names")
    keys = [k for k in items if candidate_outputs[k] is not None and baseline_outputs[k] is not None]
    excluded = [k for k in items if candidate_outputs[k] is None or baseline_outputs[k] is None]
    positions, requests = {}, []
    for repeat in range(repeats):
        for key in keys:
            position = positions[repeat, key] = candidate_position(seed + repeat, key)
            first, second = (candidate_outputs[key], baseline_outputs[key])[:: 1 if position == "A" else -1]
            prompt = pairwise_prompt(names[lang(key)], items[key], first.strip(), second.strip())
            requests.append((f"r{repeat}/{key}", ChatRequest(messages=[{"role": "user", "content": prompt}],
                                                             temperature=temperature, max_tokens=max_tokens,
                                                             seed=seed + repeat)))
    out_dir = Path(out_dir)
    replies = run_requests(out_dir / "judge_requests.jsonl", judge, requests, label="judge", echo=echo)
    rows = _judgment_rows(keys, lang, positions, replies, repeats, seed, (candidate_name, baseline_name))
    write_jsonl(out_dir / "judgments.jsonl", rows)
    languages = list(dict.fromkeys(lang(k) for k in items))

    def block(selected: Callable[[str], bool]) -> dict:
        by_repeat = [[r["outcome"] for r in rows if r["repeat"] == rep and selected(r["language"])]
                     for rep in range(repeats)]
        return {**summarize(by_repeat), "n": sum(selected(lang(k)) for k in keys),
                "excluded": sum(selected(lang(k)) for k in excluded)}

    results = {"languages": {code: block(lambda c, code=code: c == code) for code in languages},
               "all": block(lambda c: True), "excluded_keys": excluded}
    config = {"candidate": candidate_name, "baseline": baseline_name, "repeats": repeats, "seed": seed,
              "order_seeds": [seed + r for r in range(repeats)], "judge": judge.describe(),
              "judge_temperature": temperature, "judge_max_tokens": max_tokens, "judge_prompt": PAIRWISE_PROMPT,
              "verdict_parsing": "exactly one 'Preferred:' line; see xlpo.bench.winrate.parse_verdict",
              **(extra_config or {})}
    return read_json(write_results(out_dir, benchmark, results, config))


def run_xlsum_winrate(summaries_a_path: str | Path, summaries_b_path: str | Path, out_dir: str | Path,
                      judge: ChatBackend, *, name_a: str | None = None, name_b: str | None = None,
                      repeats: int = 1, seed: int = 0, temperature: float = 0.0, max_tokens: int = 256,
                      echo: Callable[[str], None] | None = print) -> dict:
    """Win rate of system A (the candidate) against B on the same XL-Sum items, judged with Figure 11.

    Each path is a summaries.jsonl from run_xlsum or its run folder; names default to the folder names.
    """
    a_rows, b_rows = read_summaries(summaries_a_path), read_summaries(summaries_b_path)
    if not a_rows:
        raise UserError(f"{summaries_a_path}: no summaries to compare")
    a_by_key, b_by_key = {s.key: s for s in a_rows}, {s.key: s for s in b_rows}
    for rows, other, other_path in ((a_rows, b_by_key, summaries_b_path), (b_rows, a_by_key, summaries_a_path)):
        missing = next((s.key for s in rows if s.key not in other), None)
        if missing is not None:
            raise UserError(f"{other_path}: no summary for item {missing} (the two runs must cover the same items)")
    for s in a_rows:
        if s.article != b_by_key[s.key].article:
            raise UserError(f"{summaries_a_path}, {summaries_b_path}: item {s.key} was summarised from different "
                            f"text (different data or max_text_chars); compare runs on the same inputs")
    items = {s.key: summary_prompt(s.language, s.article) for s in a_rows}
    name_a = name_a or _run_name(summaries_a_path)
    name_b = name_b or _run_name(summaries_b_path)
    extra = {"summaries_a": str(summaries_a_path), "summaries_b": str(summaries_b_path), "judge_prompt": JUDGE_PROMPT,
             "backend_a": a_rows[0].backend, "backend_b": b_rows[0].backend}
    return run_winrate(items, {k: a_by_key[k].summary for k in items}, {k: b_by_key[k].summary for k in items},
                       out_dir, judge, language_of={k: a_by_key[k].language for k in items}, repeats=repeats,
                       seed=seed, candidate_name=name_a, baseline_name=name_b, temperature=temperature,
                       max_tokens=max_tokens, benchmark="xlsum-winrate", extra_config=extra, echo=echo)


def _run_name(path: str | Path) -> str:
    path = Path(path)
    return (path if path.is_dir() else path.parent).resolve().name


def table(results: dict) -> tuple[str, list[str], list[list]]:
    """(title, columns, rows) of a results.json from run_winrate: languages, then all."""
    res, config = results["results"], results["config"]
    with_sd = config["repeats"] > 1
    columns = ["language", "win %", "tie %", "lose %", *(["SD win", "SD tie", "SD lose"] if with_sd else []),
               "n", "unparseable", "failed", "excluded"]
    rows = []
    for name, v in [*res["languages"].items(), ("all", res["all"])]:
        sds = [v["win_sd"], v["tie_sd"], v["lose_sd"]] if with_sd else []
        rows.append([name, v["win"], v["tie"], v["lose"], *sds, v["n"], v["unparseable"], v["failed"], v["excluded"]])
    title = (f"Win rate of {config['candidate']} vs {config['baseline']} (judge {config['judge'].get('model', '?')}, "
             f"{config['repeats']} repeat{'s' if with_sd else ''})")
    return title, columns, rows
