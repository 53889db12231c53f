"""DivEMT readers: rows of `main.tsv` / `warmup.tsv` or of `GroNLP/divemt` on the Hub into triples.

DivEMT (en-ar, en-it, en-nl, en-tr, en-uk, en-vi) is untokenized: texts are whitespace-normalised,
rows translated from scratch are counted and skipped, and HTER goes from DivEMT's 0-100 scale to
MLQE-PE's 0-1 scale. Local files are read with standard CSV quoting; the Hub goes through
`common.load_hub_split`, looked up on the module at call time so that tests can replace it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from xlpo.data.detok import normalize_space
from xlpo.data.mtpe import common
from xlpo.data.mtpe.common import (
    DIVEMT,
    DIVEMT_CONFIGS,
    DIVEMT_HUB,
    DIVEMT_LANG_IDS,
    SRC_LANG,
    Loaded,
    Triple,
    decode_text,
    file_fingerprint,
    parse_hter,
    read_bytes,
)
from xlpo.errors import UserError

_DIVEMT_REQUIRED = ("lang_id", "src_text", "mt_text", "tgt_text")


def divemt_rows_to_triples(rows: Iterable[tuple[str, Mapping[str, Any]]], directions: Iterable[str],
                           loaded: Loaded | None = None) -> Loaded:
    """Convert DivEMT rows ((where, row dict) pairs: TSV lines or Hub rows) into triples.

    `hter` is on DivEMT's 0-100 scale and is stored on MLQE-PE's 0-1 scale. Rows translated from
    scratch (`translation_type` "ht", no MT) are counted, not kept; other rows must have a source,
    an MT and a post-edit.
    """
    loaded = loaded or Loaded()
    wanted = set(directions)
    for where, row in rows:
        lang_code = str(row.get("lang_id") or "").strip()
        if lang_code not in DIVEMT_LANG_IDS:
            raise UserError(f"{where}: unknown lang_id {lang_code!r}; expected one of {', '.join(DIVEMT_LANG_IDS)}")
        direction = f"{SRC_LANG}-{DIVEMT_LANG_IDS[lang_code]}"
        if direction not in wanted:
            continue
        kind = str(row.get("translation_type") or "").strip()
        if not kind:
            kind = "pe" if str(row.get("task_type") or "").startswith("pe") else "ht"
        if kind != "pe":
            loaded.skipped[(direction, "translated_from_scratch")] += 1
            continue
        texts = {}
        for column in ("src_text", "mt_text", "tgt_text"):
            value = normalize_space(str(row.get(column) or ""))
            if not value:
                raise UserError(f"{where}: empty {column} in a post-editing row")
            texts[column] = value
        loaded.triples.append(Triple(
            dataset=DIVEMT, direction=direction, source=texts["src_text"], mt=texts["mt_text"], pe=texts["tgt_text"],
            hter=parse_hter(row.get("hter"), f"{where}: column hter", 100.0),
            origin=str(row.get("unit_id") or where),
        ))
    return loaded


def _divemt_file(root: Path, config: str) -> Path:
    if config not in DIVEMT_CONFIGS:
        raise UserError(f"unknown DivEMT config '{config}': expected one of {', '.join(DIVEMT_CONFIGS)}")
    if config == "auto":
        for name in ("main", "warmup"):
            if (root / f"{name}.tsv").is_file():
                return root / f"{name}.tsv"
        raise UserError(f"{root / 'main.tsv'}: file not found (DivEMT; nor warmup.tsv in {root})")
    return root / f"{config}.tsv"


def _iter_divemt_tsv(path: Path, data: bytes) -> Iterator[tuple[str, dict[str, str]]]:
    # Upstream wrote the TSV with pandas: standard CSV quoting ("Dustin ""Goldust"" Runnels ...").
    text = decode_text(path, data)
    if not text.strip():
        raise UserError(f"{path}:1: empty file, expected a DivEMT TSV header")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", strict=True)
    try:
        header = next(reader)
        index: dict[str, int] = {}
        for i, name in enumerate(header):
            index.setdefault(name.strip(), i)  # `lang_id` appears twice upstream: the first one counts
        missing = [c for c in _DIVEMT_REQUIRED if c not in index]
        if "translation_type" not in index and "task_type" not in index:
            missing.append("translation_type")
        if missing:
            raise UserError(f"{path}:1: missing column(s) {', '.join(missing)} in the header")
        for cells in reader:
            lineno = reader.line_num
            if not any(c.strip() for c in cells):
                raise UserError(f"{path}:{lineno}: empty line")
            if len(cells) != len(header):
                raise UserError(f"{path}:{lineno}: {len(cells)} tab-separated fields, the header has {len(header)}")
            yield f"{path}:{lineno}", {name: cells[i] for name, i in index.items()}
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num}: malformed TSV ({exc})") from None


def read_divemt_dir(root: str | Path, directions: Iterable[str], config: str = "auto",
                    loaded: Loaded | None = None) -> Loaded:
    """Read DivEMT's `main.tsv` or `warmup.tsv` ("auto": main when present) from a local folder."""
    root = Path(root)
    path = _divemt_file(root, config)
    data = read_bytes(path, "DivEMT")
    loaded = loaded or Loaded()
    loaded.inputs.append(file_fingerprint(DIVEMT, root, path, data))
    if path.stem != "main":
        loaded.notes.append(f"DivEMT: read {path.name}; the main split (430 sources per language) is "
                            f"only on the Hub as {DIVEMT_HUB} or as main.tsv in the same folder")
    return divemt_rows_to_triples(_iter_divemt_tsv(path, data), directions, loaded)


def load_divemt_hub(directions: Iterable[str], repo: str = DIVEMT_HUB, config: str = "auto",
                    loaded: Loaded | None = None) -> Loaded:
    """DivEMT from the Hub (`GroNLP/divemt`, config "main" unless "warmup" is asked)."""
    config = "main" if config == "auto" else config
    dataset = common.load_hub_split(repo, config, "train")
    loaded = loaded or Loaded()
    loaded.inputs.append({"dataset": DIVEMT, "hub": repo, "config": config, "split": "train",
                          "fingerprint": getattr(dataset, "_fingerprint", None)})
    rows = ((f"{repo} ({config}) row {i + 1}", row) for i, row in enumerate(dataset))
    return divemt_rows_to_triples(rows, directions, loaded)
