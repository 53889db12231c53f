"""Parallel multilingual prompts for ICR, the language names and the cross-lingual instruction prefix.

One JSONL file per language (`<lang>.jsonl`, fields `instruction` and `instruction_id`), line i of
every file being the translation of line i of `en.jsonl`: the layout of the ICR authors' staged
UltraFeedback subsets. Every response is scored under the parallel English instruction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from xlpo.errors import UserError
from xlpo.fileio import iter_jsonl

ENGLISH = "en"

# Full English names for the prefix ("... using only Spanish, ..."): the ICR paper's languages plus
# common others. More can be given in the config (prompts.language_names).
LANGUAGE_NAMES: dict[str, str] = {
    "en": "English", "es": "Spanish", "de": "German", "fr": "French", "ru": "Russian", "zh": "Chinese",
    "sw": "Swahili", "th": "Thai", "bn": "Bengali", "ja": "Japanese", "ko": "Korean", "it": "Italian",
    "pt": "Portuguese", "ar": "Arabic", "nl": "Dutch", "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese",
    "pl": "Polish", "id": "Indonesian", "hi": "Hindi", "te": "Telugu", "cs": "Czech", "sv": "Swedish",
    "fi": "Finnish", "da": "Danish", "el": "Greek", "he": "Hebrew", "hu": "Hungarian", "ro": "Romanian",
    "fa": "Persian", "ur": "Urdu", "ta": "Tamil", "mr": "Marathi", "ca": "Catalan",
}

# ICR paper, Appendix E.1 / Eq. 8, as in the authors' code: prepended to the English instruction
# for every language except English, followed by one blank line.
PREFIX_TEMPLATE = ("Please answer the following instruction using only {language}, unless explicitly "
                   "instructed to respond in a different language.\n\n")

# ICR paper, Appendix E.2: the prompt of LLM-Translate(y) for the translate-to-English reward R_t.
TRANSLATE_TEMPLATE = ("Please translate the following sentences into English. The input sentences are wrapped "
                      "by <sentence> and </sentence>:\n\n<sentence>\n{response}\n</sentence>")


def language_name(lang: str, extra: Mapping[str, str] | None = None) -> str:
    names = {**LANGUAGE_NAMES, **(extra or {})}
    if lang not in names:
        raise UserError(f"config: prompts.languages: unknown language '{lang}'; give its full English name "
                        f"under prompts.language_names (known: {', '.join(sorted(names))})")
    return names[lang]


def language_prefix(lang: str, extra: Mapping[str, str] | None = None) -> str:
    """P(lang): empty for English, else the cross-lingual instruction prefix naming the language."""
    if lang == ENGLISH:
        return ""
    return PREFIX_TEMPLATE.format(language=language_name(lang, extra))


def crosslingual_instruction(english_instruction: str, lang: str, extra: Mapping[str, str] | None = None) -> str:
    """G(x^lang) of Eq. 8: the parallel English instruction behind the language prefix."""
    return language_prefix(lang, extra) + english_instruction


def translate_prompt(response: str) -> str:
    return TRANSLATE_TEMPLATE.format(response=response)


@dataclass(frozen=True)
class Prompt:
    instruction_id: str
    lang: str
    instruction: str  # in `lang`
    english: str  # the parallel English instruction

    @property
    def id(self) -> str:
        return f"{self.instruction_id}-{self.lang}"


def _read_file(path: Path) -> list[tuple[int, str, str]]:
    """(line number, instruction_id, instruction) for every non-blank line."""
    rows = []
    for where, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object with 'instruction' and 'instruction_id'")
        for field in ("instruction", "instruction_id"):
            if not isinstance(row.get(field), (str, int)) or isinstance(row.get(field), bool):
                raise UserError(f"{where}: missing or non-string field '{field}'")
        if not str(row["instruction"]).strip():
            raise UserError(f"{where}: empty 'instruction'")
        rows.append((int(where.rsplit(":", 1)[1]), str(row["instruction_id"]), str(row["instruction"])))
    return rows


def load_parallel_prompts(directory: str | Path, languages: list[str], limit: int | None = None,
                          names: Mapping[str, str] | None = None) -> dict[str, list[Prompt]]:
    """{lang: prompts} aligned with `en.jsonl` line by line (the first `limit` prompts of each file).

    Every file must list the same instruction_ids in the same order as the English file: a mismatch
    is an error naming the file and line, never silently re-sorted.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"config: prompts.dir: {directory} is not a directory of <lang>.jsonl files")
    if len(set(languages)) != len(languages):
        raise UserError(f"config: prompts.languages: duplicates in {languages}")
    for lang in languages:
        language_name(lang, names)
    english_path = directory / f"{ENGLISH}.jsonl"
    if not english_path.is_file():
        raise UserError(f"{english_path}: missing English file; ICR scores every language's responses under the "
                        "parallel English instruction, so the prompt folder needs en.jsonl")
    english = _read_file(english_path)
    seen: dict[str, int] = {}
    for lineno, iid, _ in english:
        if iid in seen:
            raise UserError(f"{english_path}:{lineno}: instruction_id {iid[:16]}... repeats line {seen[iid]}")
        seen[iid] = lineno
    if not english:
        raise UserError(f"{english_path}: no prompts")
    out: dict[str, list[Prompt]] = {}
    for lang in languages:
        path = directory / f"{lang}.jsonl"
        if not path.is_file():
            raise UserError(f"{path}: prompt file for language '{lang}' not found")
        rows = english if lang == ENGLISH else _read_file(path)
        if len(rows) != len(english):
            raise UserError(f"{path}: {len(rows)} prompts but {english_path} has {len(english)}; the files must "
                            "be parallel (same prompts, same order)")
        prompts = []
        for (lineno, iid, text), (_, en_iid, en_text) in zip(rows, english):
            if iid != en_iid:
                raise UserError(f"{path}:{lineno}: instruction_id {iid[:16]}... differs from {english_path} at the "
                                f"same position ({en_iid[:16]}...); the files must list the same prompts in the same order")
            prompts.append(Prompt(instruction_id=iid, lang=lang, instruction=text, english=en_text))
        out[lang] = prompts[:limit] if limit else prompts
    return out
