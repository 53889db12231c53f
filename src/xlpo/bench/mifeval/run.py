"""M-IFEval end to end: load the prompt files, generate with the candidate, score strict/loose, write results.

Data: `<data_dir>/{en,es,fr,ja}_input_data.jsonl` from lightblue-tech/M-IFEval, one prompt per line:
{"key": int, "prompt": str, "instruction_id_list": [str], "kwargs": [dict]}. Outputs in `out_dir`:
generations.jsonl (resumable), scores.jsonl (per prompt) and results.json.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xlpo.bench.common import write_results
from xlpo.bench.mifeval.checkers_common import LANGDETECT_SEED
from xlpo.bench.mifeval.instruction_accuracy import aggregate, score_response
from xlpo.bench.mifeval.nltk_setup import ensure_punkt_tab
from xlpo.bench.mifeval.registry import Check, build_checker, describe_checkers
from xlpo.clients.chat import ChatBackend, ChatReply, ChatRequest
from xlpo.clients.stage import run_requests
from xlpo.errors import UserError
from xlpo.fileio import iter_jsonl, write_jsonl
from xlpo.versions import package_version

BENCHMARK = "m-ifeval"
LANGUAGES = ("en", "es", "fr", "ja")  # every language M-IFEval has


@dataclass(frozen=True)
class MifevalItem:
    language: str
    key: int
    prompt: str
    instruction_ids: tuple[str, ...]
    checks: tuple[Check, ...]
    where: str

    @property
    def request_key(self) -> str:
        return f"{self.language}:{self.key}"


def data_file(data_dir: str | Path, language: str) -> Path:
    return Path(data_dir) / f"{language}_input_data.jsonl"


def load_items(data_dir: str | Path, language: str, limit: int | None = None) -> list[MifevalItem]:
    """The first `limit` (all if None) prompts of one language, each with its checkers already built."""
    items: list[MifevalItem] = []
    seen: dict[int, str] = {}
    for where, row in iter_jsonl(data_file(data_dir, language)):
        if limit is not None and len(items) >= limit:
            break
        item = _parse_row(row, language, where)
        if item.key in seen:
            raise UserError(f"{where}: key {item.key} already used at {seen[item.key]}")
        seen[item.key] = where
        items.append(item)
    if not items:
        raise UserError(f"{data_file(data_dir, language)}: no prompts")
    return items


def _parse_row(row: object, language: str, where: str) -> MifevalItem:
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object with key, prompt, instruction_id_list, kwargs")
    key, prompt, ids, kwargs = (row.get(name) for name in ("key", "prompt", "instruction_id_list", "kwargs"))
    if not isinstance(key, int) or isinstance(key, bool):
        raise UserError(f"{where}: field 'key' must be an integer, got {key!r}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError(f"{where}: field 'prompt' must be non-empty text")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise UserError(f"{where}: field 'instruction_id_list' must be a non-empty list of strings")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids):
        raise UserError(f"{where}: field 'kwargs' must be a list with one object per instruction id ({len(ids)})")
    for instruction_id in ids:
        if not instruction_id.startswith(f"{language}:"):
            raise UserError(f"{where}: instruction id {instruction_id!r} is not a {language!r} id")
    checks = tuple(build_checker(i, k, prompt, where) for i, k in zip(ids, kwargs))
    return MifevalItem(language, key, prompt, tuple(ids), checks, where)


def score_item(item: MifevalItem, reply: ChatReply) -> dict:
    """One scores.jsonl row: the response and its per-instruction verdicts, or the failure unscored."""
    row = {"language": item.language, "key": item.key, "instruction_id_list": list(item.instruction_ids),
           "response": reply.text, "failed": not reply.ok, "error": reply.error}
    if reply.ok:
        strict, loose = score_response(item.checks, reply.text)
        row.update(strict=strict, loose=loose, prompt_strict=all(strict), prompt_loose=all(loose))
    else:
        row.update(strict=None, loose=None, prompt_strict=None, prompt_loose=None)
    return row


def run_mifeval(*, data_dir: str | Path, out_dir: str | Path, candidate: ChatBackend,
                languages: Sequence[str] = LANGUAGES, limit: int | None = None,
                temperature: float = 0.0, max_tokens: int = 1024, seed: int = 0,
                echo: Callable[[str], None] | None = print) -> dict:
    """Generate one answer per M-IFEval prompt and score it by rules; returns the results written to results.json.

    The paper's settings are the defaults: greedy decoding (temperature 0) and up to 1024 new tokens.
    M-IFEval needs no judge: instructions are checked by rules.
    `limit` keeps the first N prompts of each language in file order (smoke runs).
    """
    languages = _check_languages(languages)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise UserError(f"limit must be a positive integer, got {limit!r}")
    out_dir = Path(out_dir)
    splitters = ensure_punkt_tab()
    items = [item for language in languages for item in load_items(data_dir, language, limit)]
    requests = [(item.request_key, ChatRequest(messages=[{"role": "user", "content": item.prompt}],
                                               temperature=temperature, max_tokens=max_tokens, seed=seed))
                for item in items]
    replies = run_requests(out_dir / "generations.jsonl", candidate, requests, label="m-ifeval", echo=echo)
    rows = [score_item(item, replies[item.request_key]) for item in items]
    write_jsonl(out_dir / "scores.jsonl", rows)
    results = aggregate(rows, languages)
    config = {
        "data_dir": str(data_dir),
        "data_files": {language: _file_record(data_file(data_dir, language)) for language in languages},
        "languages": list(languages),
        "limit": limit,
        "generation": {"temperature": temperature, "max_tokens": max_tokens, "seed": seed,
                       "messages": "one user turn: the prompt"},
        "candidate": candidate.describe(),
        "judge": None,
        "scoring": {
            "checkers": f"lm-eval {package_version('lm_eval')} IFEval checkers + xlpo M-IFEval checkers (fr/es/ja)",
            "sentence_splitter": splitters,
            "langdetect": {"version": package_version("langdetect"), "seed": LANGDETECT_SEED},
            "ja_tokenizer": {"name": "janome", "version": package_version("janome"), "dictionary": "its bundled IPADIC",
                             "used_by": ["ja:keywords:forbidden_words", "ja:detectable_format:nominal_ending"]},
            "loose": "IFEval loose: any of response / without first line / without last line / without both, "
                     "each also without '*'",
            **describe_checkers(),
        },
    }
    write_results(out_dir, BENCHMARK, results, config)
    return results


def table(results: dict) -> tuple[str, list[str], list[list]]:
    """(title, columns, rows) of the per-language table: accuracies in percent, then counts."""
    columns = ["language", "prompt strict", "prompt loose", "instr strict", "instr loose", "n", "failed"]
    rows = []
    for name, summary in [*((lang, results["per_language"][lang]) for lang in results["languages"]),
                          ("all", results["all"])]:
        rows.append([name, *(_percent(summary[k]) for k in ("prompt_strict_acc", "prompt_loose_acc",
                                                            "instruction_strict_acc", "instruction_loose_acc")),
                     summary["n_prompts"], summary["n_failed"]])
    return "M-IFEval instruction following (accuracy, %)", columns, rows


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _check_languages(languages: Sequence[str]) -> list[str]:
    languages = list(languages)
    unknown = [lang for lang in languages if lang not in LANGUAGES]
    if not languages or unknown or len(set(languages)) != len(languages):
        raise UserError(f"languages must be distinct values from {list(LANGUAGES)}, got {languages}")
    return languages


def _file_record(path: Path) -> dict:
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
