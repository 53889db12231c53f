"""Read preference records (prompt, chosen, rejected, optional lang and id) from JSONL, Parquet or HF datasets.

Fields may be plain strings or conversational message lists; a column mapping renames other
layouts (the ICR authors' files say `reject`). Every problem names the file, line and field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import pyarrow.parquet as pq

from xlpo.errors import UserError
from xlpo.fileio import iter_jsonl

Messages = list[dict[str, str]]
Text = Union[str, Messages]

REQUIRED = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class PreferenceRecord:
    id: str
    prompt: Text
    chosen: Text
    rejected: Text
    lang: str | None = None


def _check_text(value: Any, field: str, where: str, completion: bool) -> Text:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        if completion and any(m["role"] != "assistant" for m in value):
            raise UserError(f"{where}: field '{field}': conversational completions must hold only assistant messages")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise UserError(
        f"{where}: field '{field}': expected a string or a non-empty list of {{role, content}} messages, "
        f"got {type(value).__name__}"
    )


def record_from_row(row: Mapping[str, Any], where: str, default_id: str,
                    columns: Mapping[str, str] | None = None) -> PreferenceRecord:
    """Validate one row; `columns` maps xlpo's names to the file's (e.g. {"rejected": "reject"})."""
    columns = dict(columns or {})
    if not isinstance(row, Mapping):
        raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")

    def get(name: str, required: bool):
        key = columns.get(name, name)
        if key not in row or row[key] is None:
            if required:
                hint = f" (mapped from '{key}')" if key != name else ""
                raise UserError(f"{where}: missing field '{key}'{hint}; expected fields {', '.join(columns.get(n, n) for n in REQUIRED)}")
            return None
        return row[key]

    prompt = _check_text(get("prompt", True), columns.get("prompt", "prompt"), where, completion=False)
    chosen = _check_text(get("chosen", True), columns.get("chosen", "chosen"), where, completion=True)
    rejected = _check_text(get("rejected", True), columns.get("rejected", "rejected"), where, completion=True)
    raw_id, lang = get("id", False), get("lang", False)
    if lang is not None and not isinstance(lang, str):
        raise UserError(f"{where}: field '{columns.get('lang', 'lang')}': expected a language code string")
    return PreferenceRecord(id=str(raw_id) if raw_id is not None else default_id,
                            prompt=prompt, chosen=chosen, rejected=rejected, lang=lang or None)


def _read_json_lines(path: Path, columns) -> list[PreferenceRecord]:
    if path.suffix.lower() == ".json" and _starts_with_array(path):
        return _read_json_array(path, columns)
    return [record_from_row(row, where, f"{path.stem}:{where.rsplit(':', 1)[1]}", columns)
            for where, row in iter_jsonl(path)]


def _starts_with_array(path: Path) -> bool:
    """A .json file may hold one array of rows instead of JSON Lines: its first non-blank byte is '['."""
    with open(path, "rb") as f:
        for raw in f:
            text = raw.lstrip(b"\xef\xbb\xbf").strip()
            if text:
                return text.startswith(b"[")
    return False


def _read_json_array(path: Path, columns) -> list[PreferenceRecord]:
    """A .json file holding one array of row objects (not JSON Lines)."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start + 1})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(rows, list):
        raise UserError(f"{path}: expected a JSON array of objects or JSON Lines")
    return _read_rows(rows, str(path), path.stem, columns)


def _read_rows(rows, name: str, id_prefix: str, columns) -> list[PreferenceRecord]:
    # Generated ids use the file's stem (like JSONL's `stem:line`), not its full path, so the ids
    # and hence the data fingerprint do not change when the file moves.
    return [record_from_row(row, f"{name}: row {i}", f"{id_prefix}:{i}", columns) for i, row in enumerate(rows)]


_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv", ".txt", ".arrow")


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    # "data/train.jsonl" that does not exist is a mistyped local file, not a Hub id: no network call.
    return (len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))
            and not source.lower().endswith(_FILE_SUFFIXES))


def load_preferences(source: str | Path, columns: Mapping[str, str] | None = None,
                     split: str = "train") -> list[PreferenceRecord]:
    """Records from a .jsonl/.json file, a .parquet file, a saved/local HF dataset, or a Hub dataset id."""
    unknown = sorted(set(columns or {}) - {*REQUIRED, "id", "lang"})
    if unknown:
        raise UserError(f"data.columns: unknown field(s) {', '.join(unknown)}; "
                        "map xlpo's prompt, chosen, rejected, id, lang to your column names")
    path = Path(source).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            records = _read_json_lines(path, columns)
        elif suffix == ".parquet":
            try:
                rows = pq.read_table(path).to_pylist()
            except Exception as exc:  # pyarrow raises several types for a bad file
                raise UserError(f"{path}: cannot read as Parquet ({exc})") from None
            records = _read_rows(rows, str(path), path.stem, columns)
        else:
            raise UserError(f"{path}: unsupported file type '{suffix}'; expected .jsonl, .json or .parquet")
    elif path.is_dir():
        import datasets  # seconds to import: only for dataset directories and Hub ids

        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            data = datasets.load_from_disk(str(path))
            if isinstance(data, datasets.DatasetDict):
                if split not in data:
                    raise UserError(f"{path}: no split '{split}' (has {', '.join(data)})")
                data = data[split]
        else:
            try:
                data = datasets.load_dataset(str(path), split=split)
            except Exception as exc:  # empty folder, unknown files, missing split: one line for the user
                raise UserError(f"{path}: cannot read as a dataset directory ({str(exc).splitlines()[0]})") from None
        records = _read_rows(data, str(path), path.name, columns)
    elif _looks_like_hub_id(str(source)):
        import datasets  # seconds to import: only for dataset directories and Hub ids

        try:
            data = datasets.load_dataset(str(source), split=split)
        except Exception as exc:  # offline, missing, private: one line is enough for the user
            raise UserError(f"dataset '{source}': not a local path and could not load it from the Hub ({str(exc).splitlines()[0]})") from None
        records = _read_rows(data, str(source), str(source), columns)
    else:
        raise UserError(f"{source}: no such file or directory")
    if not records:
        raise UserError(f"{source}: no preference records found")
    _check_unique_ids(records, str(source))
    return records


def _check_unique_ids(records: list[PreferenceRecord], name: str) -> None:
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise UserError(f"{name}: duplicate id '{r.id}' (ids must be unique: they name examples in reports)")
        seen.add(r.id)
