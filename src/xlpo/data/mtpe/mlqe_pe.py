"""MLQE-PE readers: the upstream post-editing files or `wmt/wmt20_mlqe_task2` on the Hub into triples.

MLQE-PE (en-de, en-zh) is tokenized: the line-aligned `.src/.mt/.pe/.hter` files of each split are
read together, the English source is taken untokenized from the direct-assessment TSV where it
matches (else detokenized), and MT and post-edit go through the language's detokenizer. The Hub
goes through `common.load_hub_split`, looked up on the module at call time so that tests can replace it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xlpo.data.detok import (
    CJK_LANGS,
    detokenize,
    has_segmentation_runs,
    normalize_space,
)
from xlpo.data.mtpe import common
from xlpo.data.mtpe.common import (
    DIRECTIONS,
    MLQE_PE,
    MLQE_PE_HUB,
    MLQE_SPLITS,
    SRC_LANG,
    Loaded,
    Triple,
    decode_text,
    file_fingerprint,
    parse_hter,
    read_bytes,
    read_lines,
    split_lines,
    source_key,
)
from xlpo.errors import UserError

_MLQE_SPLIT_DIR = {"train": "train", "dev": "dev", "test20": "test"}
_MLQE_HUB_SPLIT = {"train": "train", "dev": "validation", "test20": "test"}


def mlqe_pe_paths(root: Path, direction: str, split: str) -> dict[str, Path]:
    """The upstream post-editing files of one direction and split (line-aligned)."""
    folder = root / "post-editing" / _MLQE_SPLIT_DIR[split] / f"{direction}-{split}"
    return {ext: folder / f"{split}.{ext}" for ext in ("src", "mt", "pe", "hter")}


def mlqe_da_path(root: Path, direction: str, split: str) -> Path | None:
    """The direct-assessment TSV (untokenized source) of one direction and split, if staged."""
    folder = root / "direct-assessments" / _MLQE_SPLIT_DIR[split]
    name = f"{split}.{direction.replace('-', '')}.df.short.tsv"
    found = sorted(p for p in folder.glob(f"{direction}*/{name}") if p.is_file()) if folder.is_dir() else []
    return found[0] if found else None


def _read_da_originals(path: Path, n_lines: int) -> tuple[list[str], bytes]:
    data = read_bytes(path, "MLQE-PE direct assessments")
    lines = split_lines(decode_text(path, data))
    if not lines:
        raise UserError(f"{path}:1: empty file, expected a header with an 'original' column")
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader)
    if "original" not in header:
        raise UserError(f"{path}:1: no 'original' column in the header")
    col = header.index("original")
    originals = []
    for lineno, cells in enumerate(reader, start=2):
        if len(cells) != len(header):
            raise UserError(f"{path}:{lineno}: {len(cells)} tab-separated fields, the header has {len(header)}")
        originals.append(cells[col])
    if len(originals) != n_lines:
        line = min(len(originals), n_lines) + 2
        raise UserError(f"{path}:{line}: {len(originals)} rows, but the post-editing files have {n_lines} lines")
    return originals, data


def _mlqe_triple(direction: str, split: str, lineno: int, src: str, mt: str, pe: str, hter: float | None,
                 original: str | None, loaded: Loaded, runs_preserved: bool = True) -> Triple:
    lang = direction.split("-", 1)[1]
    original = normalize_space(original) if original else ""
    if original and source_key(original) == source_key(src):
        source = original
        loaded.source_text[direction]["direct_assessment_tsv"] += 1
    else:
        source = detokenize(src, SRC_LANG)
        loaded.source_text[direction]["detokenized"] += 1
    return Triple(dataset=MLQE_PE, direction=direction, source=source, mt=detokenize(mt, lang, runs_preserved),
                  pe=detokenize(pe, lang, runs_preserved), hter=hter, origin=f"{split}:{lineno}")


def read_mlqe_pe_dir(root: str | Path, directions: Iterable[str], splits: Iterable[str] = MLQE_SPLITS,
                     loaded: Loaded | None = None) -> Loaded:
    """Read MLQE-PE's line-aligned `.src/.mt/.pe/.hter` files (and the DA TSVs' untokenized sources)."""
    root = Path(root)
    loaded = loaded or Loaded()
    for direction in directions:
        if DIRECTIONS[direction] != MLQE_PE:
            continue
        for split in splits:
            paths = mlqe_pe_paths(root, direction, split)
            columns: dict[str, list[str]] = {}
            for ext, path in paths.items():
                lines, data = read_lines(path, f"MLQE-PE {direction} {split}")
                loaded.inputs.append(file_fingerprint(MLQE_PE, root, path, data))
                for lineno, line in enumerate(lines, start=1):
                    if not line.strip():
                        raise UserError(f"{path}:{lineno}: empty line")
                columns[ext] = lines
            n = len(columns["src"])
            for ext, lines in columns.items():
                if len(lines) != n:
                    line = min(len(lines), n) + 1
                    raise UserError(f"{paths[ext]}:{line}: {len(lines)} lines, but {paths['src'].name} has {n}: "
                                    f"the files are not line-aligned")
            da = mlqe_da_path(root, direction, split)
            originals: list[str | None] = [None] * n
            if da is not None:
                originals, data = _read_da_originals(da, n)
                loaded.inputs.append(file_fingerprint(MLQE_PE, root, da, data))
            else:
                loaded.notes.append(f"MLQE-PE {direction} {split}: no direct-assessment TSV, sources detokenized")
            hter_path = paths["hter"]
            for i in range(n):
                hter = parse_hter(columns["hter"][i].strip(), f"{hter_path}:{i + 1}", 1.0)
                loaded.triples.append(_mlqe_triple(direction, split, i + 1, columns["src"][i], columns["mt"][i],
                                                   columns["pe"][i], hter, originals[i], loaded))
    return loaded


def mlqe_pe_rows_to_triples(rows: Iterable[Mapping[str, Any]], direction: str, split: str, name: str = MLQE_PE_HUB,
                            loaded: Loaded | None = None) -> Loaded:
    """Convert Hub rows of `wmt/wmt20_mlqe_task2` ({translation: {en, xx}, pe, hter}) into triples.

    The Hub copy is tokenized like the files and has no untokenized source, so sources are
    detokenized; MT and post-edit go through the same detokenizer as with local files.
    """
    loaded = loaded or Loaded()
    lang = direction.split("-", 1)[1]
    checked = []
    for i, row in enumerate(rows):
        where = f"{name} ({direction}, split {_MLQE_HUB_SPLIT[split]}) row {i + 1}"
        translation = row.get("translation") or {}
        texts = {"source": translation.get(SRC_LANG), "mt": translation.get(lang), "pe": row.get("pe")}
        for key, value in texts.items():
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"{where}: empty or missing {key}")
        checked.append((texts, parse_hter(row.get("hter"), f"{where}: field hter", 1.0)))
    # Segmented Chinese is invertible only if its runs of spaces (original spaces) survived.
    runs = has_segmentation_runs(t["mt"] for t, _ in checked) or has_segmentation_runs(t["pe"] for t, _ in checked)
    if lang in CJK_LANGS and checked and not runs:
        loaded.notes.append(f"MLQE-PE {direction} {split}: no runs of spaces in the segmented text; "
                            f"Latin words kept apart, all other segment boundaries joined")
    for i, (texts, hter) in enumerate(checked):
        loaded.triples.append(_mlqe_triple(direction, split, i + 1, texts["source"], texts["mt"], texts["pe"],
                                           hter, None, loaded, runs_preserved=runs))
    return loaded


def load_mlqe_pe_hub(directions: Iterable[str], repo: str = MLQE_PE_HUB, splits: Iterable[str] = MLQE_SPLITS,
                     loaded: Loaded | None = None) -> Loaded:
    """MLQE-PE from the Hub (configs en-de / en-zh; splits train, validation = dev, test = test20)."""
    loaded = loaded or Loaded()
    for direction in directions:
        if DIRECTIONS[direction] != MLQE_PE:
            continue
        for split in splits:
            dataset = common.load_hub_split(repo, direction, _MLQE_HUB_SPLIT[split])
            loaded.inputs.append({"dataset": MLQE_PE, "hub": repo, "config": direction, "split": _MLQE_HUB_SPLIT[split],
                                  "fingerprint": getattr(dataset, "_fingerprint", None)})
            mlqe_pe_rows_to_triples(dataset, direction, split, repo, loaded)
    return loaded
