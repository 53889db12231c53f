"""Shared pieces of the MTPE build: constants, the prompt, triples, option parsing and file reading.

The constants (languages, directions, dataset names and Hub ids, splits, defaults, the prompt
template and the drop reasons), `make_prompt`, source identity (`source_key` / `source_id`), the
`Triple` and `Loaded` records the readers produce, the parsing of directions, split sizes and
data locations, the low-level file readers whose errors name the file and line, and `load_hub_split`
(one split of a Hub dataset). Imports nothing from the rest of `xlpo.data.mtpe`.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlpo.errors import UserError

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


def make_prompt(source: str, tgt_lang: str, src_lang: str = SRC_LANG) -> str:
    """The paper's prompt for translating `source` from `src_lang` to `tgt_lang` (ISO 639-1 codes)."""
    return PROMPT_TEMPLATE.format(src_lang=LANGUAGE_NAMES[src_lang], tgt_lang=LANGUAGE_NAMES[tgt_lang],
                                  src_sent=source)


def sha1_hex(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def source_key(source: str) -> str:
    """Identity of a source sentence: whitespace-insensitive (tokenized and untokenized forms agree)."""
    return "".join(source.split())


def source_id(source: str) -> str:
    return "src-" + sha1_hex(source_key(source))[:12]


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
        digest = sha1_hex(f"{self.source}\x1f{self.mt}\x1f{self.pe}")[:12]
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


def parse_mlqe_splits(splits: str | Iterable[str]) -> list[str]:
    items = splits.split(",") if isinstance(splits, str) else list(splits)
    out = [s.strip() for s in items if s.strip()]
    for s in out:
        if s not in MLQE_SPLITS:
            raise UserError(f"unknown MLQE-PE split '{s}': expected some of {', '.join(MLQE_SPLITS)}")
    if not out:
        raise UserError(f"no MLQE-PE split given: expected some of {', '.join(MLQE_SPLITS)}")
    return [s for s in MLQE_SPLITS if s in out]


def split_sizes(per_split: int | Mapping[str, int]) -> dict[str, int]:
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


def read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found ({what})") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a file ({what})") from None


def decode_text(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UserError(f"{path}:{line}: not valid UTF-8 "
                        f"(byte 0x{data[exc.start]:02x} at byte {column} of the line)") from None
    return text[1:] if text.startswith("\ufeff") else text


def split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def file_fingerprint(dataset: str, root: Path, path: Path, data: bytes) -> dict[str, Any]:
    return {"dataset": dataset, "file": path.relative_to(root).as_posix(), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def read_lines(path: Path, what: str) -> tuple[list[str], bytes]:
    data = read_bytes(path, what)
    return split_lines(decode_text(path, data)), data


def parse_hter(value: Any, where: str, scale: float) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: expected an HTER number, got {str(value)[:40]!r}") from None
    if number != number:  # NaN
        return None
    return round(number / scale, 6)


def load_hub_split(repo: str, config: str | None, split: str):
    """One split of a Hub dataset via `datasets`; script-based repos fall back to the Parquet export."""
    import datasets  # seconds to import: only when a Hub id is read
    try:
        return datasets.load_dataset(repo, config, split=split)
    except Exception as first:  # noqa: BLE001 - any failure gets one more route, then one line
        try:
            return datasets.load_dataset(repo, data_dir=config, split=split, revision="refs/convert/parquet")
        except Exception:  # noqa: BLE001
            message = str(first).strip().splitlines()[0] if str(first).strip() else type(first).__name__
            raise UserError(f"cannot load {repo} ({config or 'default'}, split {split}) from the Hugging Face "
                            f"Hub: {message}; pass a local folder instead") from None
