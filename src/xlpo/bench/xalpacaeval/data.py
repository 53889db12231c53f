"""X-AlpacaEval instructions and answer files (this benchmark's own, or AlpacaEval's outputs format).

Instructions: `<data>/<lang>.json`, a JSON array of {"id": int, "dataset": str, "instruction": str},
805 per language, aligned by id across languages. Answers are matched to instructions by id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from xlpo.errors import UserError
from xlpo.fileio import iter_jsonl

LANGUAGES = ("ar", "bn", "de", "en", "es", "fr", "it", "ja", "ko", "ru", "sw", "th", "zh")
PAPER_LANGUAGES = ("en", "es", "ru", "de", "fr")  # ICR Table 2 (Table 10 adds bn, sw, th)
ANSWERS_FILE = "answers.jsonl"  # the candidate's answers in a run folder (a resumable request stage)
BASELINE_FILE = "baseline_answers.jsonl"  # the baseline model's answers, when it is generated here


@dataclass(frozen=True)
class Instruction:
    lang: str
    id: int
    dataset: str
    text: str

    @property
    def key(self) -> str:
        return f"{self.lang}/{self.id}"


def _data_folder(data_dir: Path) -> Path:
    """The folder holding <lang>.json: `data_dir` itself or its `data/` (the upstream layout)."""
    data_dir = Path(data_dir)
    if not any(data_dir.glob("*.json")) and (data_dir / "data").is_dir():
        return data_dir / "data"
    return data_dir


def _as_id(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise UserError(f"{where}: field 'id': expected a whole number, got {value!r}")
    return int(value)


def _json_array(path: Path, of_what: str) -> list:
    """The JSON array in `path` (UTF-8, a BOM allowed), or a one-line error naming the file."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a UTF-8 JSON file ({exc})") from None
    if not isinstance(rows, list):
        raise UserError(f"{path}: expected a JSON array of {of_what}")
    return rows


def load_instructions(data_dir: str | Path, languages: list[str], limit: int | None = None) -> list[Instruction]:
    """The instructions of each language in file order (the first `limit` per language)."""
    folder = _data_folder(Path(data_dir))
    if not folder.is_dir():
        raise UserError(f"{data_dir}: not a folder (expected X-AlpacaEval's data/ with <lang>.json files)")
    out: list[Instruction] = []
    for lang in languages:
        path = folder / f"{lang}.json"
        if not path.is_file():
            have = ", ".join(sorted(p.stem for p in folder.glob("*.json"))) or "none"
            raise UserError(f"{path}: no such file; languages available in {folder}: {have}")
        rows = _json_array(path, "{id, dataset, instruction} objects")
        seen: set[int] = set()
        for i, row in enumerate(rows[:limit] if limit else rows):
            where = f"{path}: item {i}"
            if not isinstance(row, dict):
                raise UserError(f"{where}: expected an object with id, dataset, instruction")
            text = row.get("instruction")
            if not isinstance(text, str) or not text.strip():
                raise UserError(f"{where}: field 'instruction': expected non-empty text")
            ident = _as_id(row.get("id"), where)
            if ident in seen:
                raise UserError(f"{where}: field 'id': {ident} appears twice")
            seen.add(ident)
            out.append(Instruction(lang, ident, str(row.get("dataset", "")), text))
    return out


def read_answers(source: str | Path, instructions: list[Instruction]) -> dict[str, str | None]:
    """Answers to `instructions` by key from a folder: a run folder of this benchmark (its
    answers.jsonl), or one file per language in AlpacaEval's outputs format (below).

    Per-language files: `<lang>.json` (JSON array), `<lang>.jsonl`, or `<lang>/model_outputs.json`
    in the folder, or any path with `{lang}` in it (e.g. `.../{lang}/gpt-4-turbo/model_outputs.json`);
    rows {"id", "output"} ("response" is read as "output"; without an id a row is matched by its
    "instruction" or "prompt" text). A row's instruction, when given, must be the instruction's text.
    None marks an answer whose generation failed in a run folder (the item is then excluded).
    """
    if "{lang}" in str(source):  # a file per language named by a template
        out = {}
        for lang in dict.fromkeys(i.lang for i in instructions):
            path = Path(str(source).replace("{lang}", lang))
            if not path.is_file():
                raise UserError(f"{path}: no such file (the answers for language {lang})")
            out.update(_answers_from_file(path, [i for i in instructions if i.lang == lang]))
        return out
    source = Path(source)
    if (source / ANSWERS_FILE).is_file():
        return _answers_from_run(source / ANSWERS_FILE, instructions)
    if not source.is_dir():
        raise UserError(f"{source}: not a folder of answers (a run folder with {ANSWERS_FILE}, or <lang>.json files)")
    out: dict[str, str | None] = {}
    for lang in dict.fromkeys(i.lang for i in instructions):
        path = next((p for p in (source / f"{lang}.json", source / f"{lang}.jsonl", source / lang / "model_outputs.json")
                     if p.is_file()), None)
        if path is None:
            raise UserError(f"{source}: no answers for language {lang} ({lang}.json, {lang}.jsonl or "
                            f"{lang}/model_outputs.json)")
        out.update(_answers_from_file(path, [i for i in instructions if i.lang == lang]))
    return out


def _file_rows(path: Path) -> list[tuple[str, object]]:
    if path.suffix == ".jsonl":
        return list(iter_jsonl(path))
    rows = _json_array(path, "answers")
    return [(f"{path}: item {i}", row) for i, row in enumerate(rows)]


def _answers_from_file(path: Path, instructions: list[Instruction]) -> dict[str, str]:
    by_id, by_text = {}, {}
    for where, row in _file_rows(path):
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected an object with id and output")
        output = row.get("output", row.get("response"))
        if not isinstance(output, str):
            raise UserError(f"{where}: field 'output': expected text")
        asked = row.get("instruction", row.get("prompt"))
        if row.get("id") is not None:
            by_id[_as_id(row["id"], where)] = (where, asked, output)
        elif isinstance(asked, str):
            by_text[asked.strip()] = (where, asked, output)
        else:
            raise UserError(f"{where}: needs an 'id' or the 'instruction' it answers")
    out = {}
    for ins in instructions:
        found = by_id.get(ins.id) or by_text.get(ins.text.strip())
        if found is None:
            raise UserError(f"{path}: no answer for {ins.lang} instruction id {ins.id}")
        where, asked, output = found
        if isinstance(asked, str) and asked.strip() != ins.text.strip():
            raise UserError(f"{where}: answers another instruction text than {ins.lang} id {ins.id} "
                            f"({asked.strip()[:60]!r}); use the same X-AlpacaEval files")
        out[ins.key] = output
    return out


def _answers_from_run(path: Path, instructions: list[Instruction]) -> dict[str, str | None]:
    rows = {row.get("key"): (where, row) for where, row in iter_jsonl(path) if isinstance(row, dict)}
    out: dict[str, str | None] = {}
    for ins in instructions:
        if ins.key not in rows:
            raise UserError(f"{path}: no answer for {ins.lang} instruction id {ins.id} (generate it with the same "
                            f"--data, --languages and --limit)")
        where, row = rows[ins.key]
        asked = ((row.get("request") or {}).get("messages") or [{}])[-1].get("content")
        if asked != ins.text:
            raise UserError(f"{where}: answers another instruction text than {ins.lang} id {ins.id}; "
                            "use the same X-AlpacaEval files")
        out[ins.key] = row.get("text")
    return out

