"""CAPO's preference pairs from machine-translation post-editing (MTPE) data.

The prompt asks to translate an English source, the chosen response is the human post-edit and
the rejected one the raw machine translation (CAPO, arXiv 2511.07691, section 3.3). Sources:

- DivEMT (en-ar, en-it, en-nl, en-tr, en-uk, en-vi): `main.tsv` or `warmup.tsv` in a local folder
  (the Hub's file layout), or `GroNLP/divemt` on the Hugging Face Hub.
- MLQE-PE (en-de, en-zh): the upstream `post-editing/` and `direct-assessments/` folders, or
  `wmt/wmt20_mlqe_task2` on the Hub (the same post-editing data, WMT20 QE task 2).

Construction (the paper's, plus the rules it leaves open; see docs/data.md):
sources longer than 50 characters; pairs whose MT equals the post-edit dropped unless asked;
exact duplicates dropped; each distinct English source assigned to exactly one of train /
validation / evaluation (across all directions and datasets), up to `per_split` pairs per direction
and split, seeded; a direction short of data gives what it has and the shortfall is reported.
Everything is deterministic: ids are content hashes and re-runs write byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlpo.data.detok import CJK_LANGS, detokenize, has_segmentation_runs, normalize_space
from xlpo.errors import UserError
from xlpo.fileio import write_json, write_text

SRC_LANG = "en"
LANGUAGE_NAMES = {
    "en": "English", "ar": "Arabic", "it": "Italian", "nl": "Dutch", "tr": "Turkish",
    "uk": "Ukrainian", "vi": "Vietnamese", "de": "German", "zh": "Chinese",
}
DIVEMT = "divemt"
MLQE_PE = "mlqe-pe"
# The paper's order: DivEMT's six, then MLQE-PE's two.
DIRECTIONS: dict[str, str] = {
    "en-ar": DIVEMT, "en-it": DIVEMT, "en-nl": DIVEMT, "en-tr": DIVEMT, "en-uk": DIVEMT, "en-vi": DIVEMT,
    "en-de": MLQE_PE, "en-zh": MLQE_PE,
}
DIVEMT_LANG_IDS = {"ara": "ar", "ita": "it", "nld": "nl", "tur": "tr", "ukr": "uk", "vie": "vi"}
SPLITS = ("train", "validation", "evaluation")
MLQE_SPLITS = ("train", "dev", "test20")
DIVEMT_CONFIGS = ("auto", "main", "warmup")
DIVEMT_HUB = "GroNLP/divemt"
MLQE_PE_HUB = "wmt/wmt20_mlqe_task2"
DEFAULT_PER_SPLIT = 100
DEFAULT_SEED = 42
DEFAULT_MIN_SOURCE_CHARS = 50

# CAPO section 3.3, literally: three lines, no trailing newline or space.
PROMPT_TEMPLATE = "Translate this text from {src_lang} to {tgt_lang}:\n{src_lang}: {src_sent}\n{tgt_lang}:"

DROP_REASONS = {
    "translated_from_scratch": "DivEMT 'ht' row: translated from scratch, no MT to reject",
    "source_too_short": "source not longer than the minimum number of characters",
    "identical_mt_pe": "post-edit equals the MT (chosen == rejected)",
    "duplicate_pair": "same source, MT and post-edit as an earlier row of the direction",
}

_MLQE_SPLIT_DIR = {"train": "train", "dev": "dev", "test20": "test"}
_MLQE_HUB_SPLIT = {"train": "train", "dev": "validation", "test20": "test"}
_DIVEMT_REQUIRED = ("lang_id", "src_text", "mt_text", "tgt_text")


def make_prompt(source: str, tgt_lang: str, src_lang: str = SRC_LANG) -> str:
    """The paper's prompt for translating `source` from `src_lang` to `tgt_lang` (ISO 639-1 codes)."""
    return PROMPT_TEMPLATE.format(src_lang=LANGUAGE_NAMES[src_lang], tgt_lang=LANGUAGE_NAMES[tgt_lang],
                                  src_sent=source)


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def source_key(source: str) -> str:
    """Identity of a source sentence: whitespace-insensitive (tokenized and untokenized forms agree)."""
    return "".join(source.split())


def source_id(source: str) -> str:
    return "src-" + _sha1(source_key(source))[:12]


@dataclass(frozen=True)
class Triple:
    """One (source, MT, post-edit) triple, already detokenized and whitespace-normalised."""

    dataset: str
    direction: str
    source: str
    mt: str
    pe: str
    hter: float | None
    origin: str  # upstream reference: DivEMT unit_id, MLQE-PE "<split>:<line>"

    @property
    def lang(self) -> str:
        return self.direction.split("-", 1)[1]

    @property
    def id(self) -> str:
        digest = _sha1(f"{self.source}\x1f{self.mt}\x1f{self.pe}")[:12]
        return f"mtpe-{self.dataset}-{self.direction}-{digest}"

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": make_prompt(self.source, self.lang),
            "chosen": self.pe,
            "rejected": self.mt,
            "lang": self.lang,
            "direction": self.direction,
            "dataset": self.dataset,
            "source_id": source_id(self.source),
            "source": self.source,
            "hter": self.hter,
            "origin": self.origin,
        }


@dataclass
class Loaded:
    """What a reader returns: triples, rows skipped before pairing, input fingerprints, notes."""

    triples: list[Triple] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # (direction, reason) -> n
    inputs: list[dict[str, Any]] = field(default_factory=list)
    source_text: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Arguments: directions and where the data is


def parse_directions(directions: str | Iterable[str] | None) -> list[str]:
    """Validate directions ("en-de,en-zh" or a list); None means all eight, in the paper's order."""
    if directions is None:
        return list(DIRECTIONS)
    items = directions.split(",") if isinstance(directions, str) else list(directions)
    out: list[str] = []
    for item in items:
        d = item.strip().lower()
        if not d:
            continue
        if d not in DIRECTIONS:
            raise UserError(f"unknown direction '{item.strip()}': expected one of {', '.join(DIRECTIONS)}")
        if d not in out:
            out.append(d)
    if not out:
        raise UserError(f"no direction given: expected one or more of {', '.join(DIRECTIONS)}")
    return [d for d in DIRECTIONS if d in out]


def _parse_mlqe_splits(splits: str | Iterable[str]) -> list[str]:
    items = splits.split(",") if isinstance(splits, str) else list(splits)
    out = [s.strip() for s in items if s.strip()]
    for s in out:
        if s not in MLQE_SPLITS:
            raise UserError(f"unknown MLQE-PE split '{s}': expected some of {', '.join(MLQE_SPLITS)}")
    if not out:
        raise UserError(f"no MLQE-PE split given: expected some of {', '.join(MLQE_SPLITS)}")
    return [s for s in MLQE_SPLITS if s in out]


def _per_split(per_split: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(per_split, Mapping):
        unknown = set(per_split) - set(SPLITS)
        if unknown:
            raise UserError(f"per_split: unknown split(s) {sorted(unknown)}; expected {', '.join(SPLITS)}")
        sizes = {s: int(per_split.get(s, DEFAULT_PER_SPLIT)) for s in SPLITS}
    else:
        sizes = {s: int(per_split) for s in SPLITS}
    if any(n < 0 for n in sizes.values()):
        raise UserError(f"per_split: expected counts >= 0, got {sizes}")
    return sizes


_OPTION = {DIVEMT: "--divemt", MLQE_PE: "--mlqe-pe"}
_HUB_ID = {DIVEMT: DIVEMT_HUB, MLQE_PE: MLQE_PE_HUB}


def default_data_dir(dataset: str) -> Path | None:
    """$XLPO_SHARED_DATA/<dataset> if the variable is set, else ../shared/data/<dataset> if it exists."""
    env = os.environ.get("XLPO_SHARED_DATA")
    if env:
        return Path(env) / dataset
    candidate = Path("..") / "shared" / "data" / dataset
    return candidate if candidate.is_dir() else None


def resolve_source(spec: str | Path | None, dataset: str) -> tuple[str, str | Path]:
    """("local", Path) or ("hub", repo_id) from a folder, "hub", "hub:owner/name" or None (the default)."""
    if spec is None:
        path = default_data_dir(dataset)
        if path is None:
            raise UserError(
                f"no {dataset} data found: pass {_OPTION[dataset]} DIR (its upstream layout), "
                f"{_OPTION[dataset]} hub (the Hugging Face Hub), or set XLPO_SHARED_DATA to the shared/data folder"
            )
        spec = path
    text = str(spec)
    if text == "hub":
        return "hub", _HUB_ID[dataset]
    if text.startswith("hub:"):
        return "hub", text[4:] or _HUB_ID[dataset]
    path = Path(spec)
    if not path.is_dir():
        option = _OPTION[dataset]
        raise UserError(f"{path}: no such directory ({dataset} data); pass {option} DIR or {option} hub")
    return "local", path


# --------------------------------------------------------------------------------------------
# Reading files: every problem names the file and line


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found ({what})") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a file ({what})") from None


def _decode(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UserError(f"{path}:{line}: not valid UTF-8 "
                        f"(byte 0x{data[exc.start]:02x} at byte {column} of the line)") from None
    return text[1:] if text.startswith("\ufeff") else text


def _split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _fingerprint(dataset: str, root: Path, path: Path, data: bytes) -> dict[str, Any]:
    return {"dataset": dataset, "file": path.relative_to(root).as_posix(), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def _read_lines(path: Path, what: str) -> tuple[list[str], bytes]:
    data = _read_bytes(path, what)
    return _split_lines(_decode(path, data)), data


def _parse_hter(value: Any, where: str, scale: float) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: expected an HTER number, got {str(value)[:40]!r}") from None
    if number != number:  # NaN
        return None
    return round(number / scale, 6)


# --------------------------------------------------------------------------------------------
# DivEMT


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
            hter=_parse_hter(row.get("hter"), f"{where}: column hter", 100.0),
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
    text = _decode(path, data)
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
    data = _read_bytes(path, "DivEMT")
    loaded = loaded or Loaded()
    loaded.inputs.append(_fingerprint(DIVEMT, root, path, data))
    if path.stem != "main":
        loaded.notes.append(f"DivEMT: read {path.name}; the main split (430 sources per language) is "
                            f"only on the Hub as {DIVEMT_HUB} or as main.tsv in the same folder")
    return divemt_rows_to_triples(_iter_divemt_tsv(path, data), directions, loaded)


def _load_hub(repo: str, config: str | None, split: str):
    """One split of a Hub dataset via `datasets`; script-based repos fall back to the Parquet export."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise UserError("reading from the Hugging Face Hub needs the 'datasets' package") from None
    try:
        return datasets.load_dataset(repo, config, split=split)
    except Exception as first:  # noqa: BLE001 - any failure gets one more route, then one line
        try:
            return datasets.load_dataset(repo, data_dir=config, split=split, revision="refs/convert/parquet")
        except Exception:  # noqa: BLE001
            message = str(first).strip().splitlines()[0] if str(first).strip() else type(first).__name__
            raise UserError(f"cannot load {repo} ({config or 'default'}, split {split}) from the Hugging Face "
                            f"Hub: {message}; pass a local folder instead") from None


def load_divemt_hub(directions: Iterable[str], repo: str = DIVEMT_HUB, config: str = "auto",
                    loaded: Loaded | None = None) -> Loaded:
    """DivEMT from the Hub (`GroNLP/divemt`, config "main" unless "warmup" is asked)."""
    config = "main" if config == "auto" else config
    dataset = _load_hub(repo, config, "train")
    loaded = loaded or Loaded()
    loaded.inputs.append({"dataset": DIVEMT, "hub": repo, "config": config, "split": "train",
                          "fingerprint": getattr(dataset, "_fingerprint", None)})
    rows = ((f"{repo} ({config}) row {i + 1}", row) for i, row in enumerate(dataset))
    return divemt_rows_to_triples(rows, directions, loaded)


# --------------------------------------------------------------------------------------------
# MLQE-PE


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
    data = _read_bytes(path, "MLQE-PE direct assessments")
    lines = _split_lines(_decode(path, data))
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
                lines, data = _read_lines(path, f"MLQE-PE {direction} {split}")
                loaded.inputs.append(_fingerprint(MLQE_PE, root, path, data))
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
                loaded.inputs.append(_fingerprint(MLQE_PE, root, da, data))
            else:
                loaded.notes.append(f"MLQE-PE {direction} {split}: no direct-assessment TSV, sources detokenized")
            hter_path = paths["hter"]
            for i in range(n):
                hter = _parse_hter(columns["hter"][i].strip(), f"{hter_path}:{i + 1}", 1.0)
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
        checked.append((texts, _parse_hter(row.get("hter"), f"{where}: field hter", 1.0)))
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
            dataset = _load_hub(repo, direction, _MLQE_HUB_SPLIT[split])
            loaded.inputs.append({"dataset": MLQE_PE, "hub": repo, "config": direction, "split": _MLQE_HUB_SPLIT[split],
                                  "fingerprint": getattr(dataset, "_fingerprint", None)})
            mlqe_pe_rows_to_triples(dataset, direction, split, repo, loaded)
    return loaded


# --------------------------------------------------------------------------------------------
# Filtering and splitting


def filter_triples(triples: Iterable[Triple], min_source_chars: int = DEFAULT_MIN_SOURCE_CHARS,
                   keep_identical: bool = False) -> tuple[list[Triple], Counter]:
    """Keep usable pairs; count the others by (direction, reason), first failing reason only."""
    kept: list[Triple] = []
    dropped: Counter = Counter()
    seen: set[str] = set()
    for t in triples:
        if len(t.source) <= min_source_chars:
            reason = "source_too_short"
        elif t.mt == t.pe and not keep_identical:
            reason = "identical_mt_pe"
        elif t.id in seen:
            reason = "duplicate_pair"
        else:
            seen.add(t.id)
            kept.append(t)
            continue
        dropped[(t.direction, reason)] += 1
    return kept, dropped


def _rank(seed: int, key: str) -> str:
    return _sha1(f"{seed}\x1f{key}")


def assign_splits(pairs: Iterable[Triple], directions: Iterable[str], per_split: Mapping[str, int],
                  seed: int = DEFAULT_SEED) -> dict[str, dict[str, list[Triple]]]:
    """Give each distinct source to one split, then take up to `per_split[split]` pairs per direction.

    Sources are visited in a seeded hash order (independent of file order). A source goes to the
    split whose directions of that source are least filled (relative to what is asked), among the
    splits where one of its directions still needs pairs; ties go to train, then validation, then
    evaluation. A source shared by several directions (DivEMT's sentences, some MLQE-PE ones) thus
    lands in the same split for all of them, and a direction short of data is shared out evenly.
    Where a split's pool overshoots (a source with several post-edits), a seeded choice keeps
    `per_split` pairs; the rest of that source stays unused, never moved to another split.
    """
    directions = list(directions)
    by_source: dict[str, dict[str, list[Triple]]] = defaultdict(lambda: defaultdict(list))
    for t in pairs:
        by_source[source_key(t.source)][t.direction].append(t)
    filled = {s: Counter() for s in SPLITS}
    pools: dict[str, dict[str, list[Triple]]] = {s: defaultdict(list) for s in SPLITS}
    for key in sorted(by_source, key=lambda k: _rank(seed, k)):
        groups = by_source[key]
        best, best_score = None, None
        for split in SPLITS:
            need = per_split[split]
            if need <= 0 or all(filled[split][d] >= need for d in groups):
                continue
            score = sum(min(filled[split][d] / need, 1.0) for d in groups) / len(groups)
            if best_score is None or score < best_score:
                best, best_score = split, score
        if best is None:
            continue
        for d, items in groups.items():
            if filled[best][d] < per_split[best]:
                pools[best][d].extend(items)
                filled[best][d] += len(items)
    order = {d: i for i, d in enumerate(DIRECTIONS)}
    result: dict[str, dict[str, list[Triple]]] = {}
    for split in SPLITS:
        result[split] = {}
        for d in directions:
            chosen = sorted(pools[split].get(d, []), key=lambda t: _rank(seed, t.id))[: per_split[split]]
            result[split][d] = sorted(chosen, key=lambda t: (order[t.direction], t.id))
    return result


# --------------------------------------------------------------------------------------------
# Building and writing


@dataclass
class MtpeBuild:
    """The three splits (rows in xlpo's preference format) and the manifest describing them."""

    splits: dict[str, list[dict[str, Any]]]
    manifest: dict[str, Any]

    def summary_lines(self) -> list[str]:
        """One line per shortfall and note, for people."""
        lines = []
        for s in self.manifest["shortfalls"]:
            lines.append(f"{s['direction']} {s['split']}: {s['written']} of {s['requested']} pairs "
                         f"({s['direction']} has {s['usable_pairs']} usable pairs from {s['usable_sources']} "
                         f"distinct sources in all)")
        lines.extend(self.manifest["notes"])
        return lines


def _detokenizer_info(directions: Iterable[str]) -> dict[str, str]:
    import importlib.metadata

    try:
        version = importlib.metadata.version("sacremoses")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        version = "unknown"
    info = {}
    for d in directions:
        if DIRECTIONS[d] != MLQE_PE:
            info.setdefault(d.split("-")[1], "none (DivEMT is untokenized; whitespace normalised)")
            continue
        info.setdefault(SRC_LANG, f"sacremoses {version} MosesDetokenizer(lang='en'), used where the "
                                  f"direct-assessment TSV's untokenized source does not match")
        lang = d.split("-")[1]
        info[lang] = ("xlpo.data.detok.join_cjk_segments" if lang in ("zh", "ja")
                      else f"sacremoses {version} MosesDetokenizer(lang='{lang}')")
    return info


def build_mtpe(directions: str | Iterable[str] | None = None, *, divemt: str | Path | None = None,
               mlqe_pe: str | Path | None = None, per_split: int | Mapping[str, int] = DEFAULT_PER_SPLIT,
               seed: int = DEFAULT_SEED, min_source_chars: int = DEFAULT_MIN_SOURCE_CHARS,
               keep_identical: bool = False, divemt_config: str = "auto",
               mlqe_splits: str | Iterable[str] = MLQE_SPLITS) -> MtpeBuild:
    """Build CAPO's MTPE preference splits in memory (see `write_mtpe` / `make_mtpe` to write them).

    `divemt` / `mlqe_pe`: a local folder in the upstream layout, "hub" (or "hub:owner/name") for the
    Hugging Face Hub, or None for $XLPO_SHARED_DATA/<name> or ../shared/data/<name>.
    """
    directions = parse_directions(directions)
    sizes = _per_split(per_split)
    splits_used = _parse_mlqe_splits(mlqe_splits)
    if divemt_config not in DIVEMT_CONFIGS:
        raise UserError(f"unknown DivEMT config '{divemt_config}': expected one of {', '.join(DIVEMT_CONFIGS)}")
    datasets_needed = [ds for ds in (DIVEMT, MLQE_PE) if any(DIRECTIONS[d] == ds for d in directions)]

    loaded = Loaded()
    config: dict[str, Any] = {"directions": directions, "per_split": sizes, "seed": seed,
                              "min_source_chars": min_source_chars, "keep_identical": keep_identical}
    if DIVEMT in datasets_needed:
        kind, where = resolve_source(divemt, DIVEMT)
        if kind == "local":
            read_divemt_dir(where, directions, divemt_config, loaded)
            config[DIVEMT] = {"from": "local", "file": loaded.inputs[-1]["file"]}
        else:
            load_divemt_hub(directions, str(where), divemt_config, loaded)
            config[DIVEMT] = {"from": "hub", "repo": str(where), "config": loaded.inputs[-1]["config"]}
    if MLQE_PE in datasets_needed:
        kind, where = resolve_source(mlqe_pe, MLQE_PE)
        if kind == "local":
            read_mlqe_pe_dir(where, directions, splits_used, loaded)
        else:
            load_mlqe_pe_hub(directions, str(where), splits_used, loaded)
        config[MLQE_PE] = {"from": kind, "splits": splits_used, **({"repo": str(where)} if kind == "hub" else {})}

    pairs, dropped = filter_triples(loaded.triples, min_source_chars, keep_identical)
    dropped.update(loaded.skipped)
    assigned = assign_splits(pairs, directions, sizes, seed)

    usable_pairs = Counter(t.direction for t in pairs)
    usable_sources = {d: len({source_key(t.source) for t in pairs if t.direction == d}) for d in directions}
    read_rows = Counter(t.direction for t in loaded.triples)
    counts = {s: {d: len(assigned[s][d]) for d in directions} for s in SPLITS}
    shortfalls = [
        {"direction": d, "split": s, "requested": sizes[s], "written": counts[s][d],
         "usable_pairs": usable_pairs[d], "usable_sources": usable_sources[d]}
        for d in directions for s in SPLITS if counts[s][d] < sizes[s]
    ]
    manifest = {
        "kind": "xlpo-mtpe-preferences",
        "xlpo_version": _xlpo_version(),
        "config": config,
        "prompt_template": PROMPT_TEMPLATE,
        "detokenizers": _detokenizer_info(directions),
        "counts": counts,
        "totals": {s: sum(counts[s].values()) for s in SPLITS},
        "available": {d: {"rows_read": read_rows[d] + sum(n for (dd, _), n in loaded.skipped.items() if dd == d),
                          "usable_pairs": usable_pairs[d], "usable_sources": usable_sources[d]}
                      for d in directions},
        "dropped": {d: {r: dropped[(d, r)] for r in DROP_REASONS} for d in directions},
        "dropped_total": {r: sum(dropped[(d, r)] for d in directions) for r in DROP_REASONS},
        "drop_reasons": DROP_REASONS,
        "shortfalls": shortfalls,
        "source_text": {d: dict(sorted(c.items())) for d, c in sorted(loaded.source_text.items())},
        "inputs": loaded.inputs,
        "notes": loaded.notes,
    }
    rows = {s: [t.to_row() for d in directions for t in assigned[s][d]] for s in SPLITS}
    return MtpeBuild(splits=rows, manifest=manifest)


def _xlpo_version() -> str:
    from xlpo import __version__

    return __version__


def _jsonl_text(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_mtpe(build: MtpeBuild, out_dir: str | Path) -> dict[str, Path]:
    """Write train/validation/evaluation JSONL and manifest.json (each file atomically, manifest last)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory")
    paths: dict[str, Path] = {}
    files: dict[str, Any] = {}
    for split in SPLITS:
        text = _jsonl_text(build.splits[split])
        path = out_dir / f"{split}.jsonl"
        write_text(path, text)
        paths[split] = path
        files[split] = {"path": path.name, "rows": len(build.splits[split]),
                        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    build.manifest["files"] = files
    paths["manifest"] = out_dir / "manifest.json"
    write_json(paths["manifest"], build.manifest)
    return paths


def make_mtpe(out_dir: str | Path, directions: str | Iterable[str] | None = None, **kwargs: Any
              ) -> tuple[MtpeBuild, dict[str, Path]]:
    """Build and write the MTPE preference splits into `out_dir`; returns the build and the paths."""
    build = build_mtpe(directions, **kwargs)
    return build, write_mtpe(build, out_dir)
