"""AlpacaEval's gamed-baseline annotations (df_gamed.csv), which AlpacaEval 2.0's LC needs.

The file is in the Hugging Face dataset `tatsu-lab/alpaca_eval`; alpaca_eval downloads it on every
LC call. Here it comes from a path the user gives (offline machines), or from the Hub when the user
names that dataset (downloaded once into xlpo's cache; HF_HUB_OFFLINE honoured), or, when neither is
given, from xlpo's cache without any request: nothing touches the network unless the user names the
Hub id. Its rows: `index` (AlpacaEval's instruction row, 0-804), `preference` (that the
gamed output beats GPT-4 Turbo's, in [0, 1]), `std_delta_len`, `instruction_difficulty`,
`not_gamed_baseline` (False). X-AlpacaEval's instruction id k is AlpacaEval's row k - 1 (checked
on all 805 English instructions: identical text, docs/benchmarks.md).
"""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

import numpy as np
from huggingface_hub import hf_hub_download, try_to_load_from_cache

from xlpo.bench.lc_winrate import GamedBaselines
from xlpo.errors import UserError
from xlpo.models import cache_root

HUB_REPO = "tatsu-lab/alpaca_eval"
FILE_NAME = "df_gamed.csv"
ROWS = 805  # AlpacaEval's instructions
COLUMNS = ("index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline")


def cache_dir() -> Path:
    return cache_root() / "alpaca_eval"


def _number(row: dict, column: str, where: str) -> float:
    try:
        return float(row[column]) if row[column] != "" else math.nan
    except (TypeError, ValueError):
        raise UserError(f"{where}: field '{column}': expected a number, got {row[column]!r}") from None


def read_gamed(path: str | Path) -> tuple[GamedBaselines, np.ndarray]:
    """The gamed annotations (rows without a preference left out, as alpaca_eval does) and the
    difficulty of each of AlpacaEval's 805 instructions by row, from AlpacaEval's df_gamed.csv."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{path}: not AlpacaEval's {FILE_NAME}: no column {', '.join(missing)}")
            rows = list(enumerate(reader, start=2))
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: not a UTF-8 CSV file ({exc})") from None
    difficulty = np.full(ROWS, np.nan)
    kept = []
    for position, (line, row) in enumerate(rows):
        where = f"{path}:{line}"
        index, value = _number(row, "index", where), _number(row, "instruction_difficulty", where)
        if not (index.is_integer() and 0 <= index < ROWS) or math.isnan(value):
            raise UserError(f"{where}: expected an instruction row 0-{ROWS - 1} and its difficulty")
        if position < ROWS and index != position:  # alpaca_eval reads row k's difficulty from the file's k-th row
            raise UserError(f"{where}: expected instruction row {position} (the first {ROWS} rows are rows 0-{ROWS - 1} "
                            "in order in AlpacaEval's file)")
        if row["not_gamed_baseline"] != "False":
            raise UserError(f"{where}: field 'not_gamed_baseline': expected False (gamed baselines only)")
        k = int(index)
        if not math.isnan(difficulty[k]) and difficulty[k] != value:
            raise UserError(f"{where}: instruction row {k} has two difficulties ({difficulty[k]} and {value})")
        difficulty[k] = value
        preference = _number(row, "preference", where)
        if not math.isnan(preference):
            if not 0 <= preference <= 1:
                raise UserError(f"{where}: field 'preference': expected a probability in [0, 1], got {preference}")
            kept.append((preference, _number(row, "std_delta_len", where), value))
    if np.isnan(difficulty).any():
        raise UserError(f"{path}: no difficulty for instruction row {int(np.flatnonzero(np.isnan(difficulty))[0])}")
    preference, std_delta_len, per_row = (np.array(column, dtype=float) for column in zip(*kept))
    return GamedBaselines(preference, std_delta_len, per_row), difficulty


def difficulty_of_ids(difficulty: np.ndarray, ids) -> np.ndarray:
    """AlpacaEval's difficulty of X-AlpacaEval instruction ids (id k is AlpacaEval's row k - 1)."""
    ids = np.asarray(list(ids), dtype=int)
    if ids.size and (ids.min() < 1 or ids.max() > ROWS):
        raise UserError(f"instruction ids must be 1-{ROWS} to take AlpacaEval's difficulty (X-AlpacaEval's are)")
    return difficulty[ids - 1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _from_hub(download: bool, echo) -> tuple[Path | None, dict]:
    """The Hub file in xlpo's cache: the cached copy, looked up on disk only, else (only if `download`)
    one download into the cache. (hf_hub_download with local_files_only=True is not enough: it still
    builds request headers, and huggingface_hub fetches a registry from the Hub to build them.)"""
    where = {"repo_id": HUB_REPO, "filename": FILE_NAME, "repo_type": "dataset", "cache_dir": cache_dir() / "hub"}
    cached = try_to_load_from_cache(**where)
    if isinstance(cached, str):  # else None, or a marker that the Hub had no such file
        return Path(cached), {"source": "xlpo cache"}
    if not download:
        return None, {"source": None, "why": f"--lc-files not given and no copy in xlpo's cache ({cache_dir()})"}
    try:
        path = Path(hf_hub_download(**where))
    except Exception as exc:  # offline, unreachable, or HF_HUB_OFFLINE set
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise UserError(f"{HUB_REPO}: could not download {FILE_NAME} from the Hugging Face Hub ({type(exc).__name__}: "
                        f"{reason}); download it elsewhere and give its path with --lc-files") from None
    if echo:
        echo(f"LC: downloaded {HUB_REPO}/{FILE_NAME} from the Hugging Face Hub into {path}")
    return path, {"source": "Hugging Face Hub (downloaded now)"}


def locate_gamed(source: str | Path | None, echo=print) -> tuple[tuple[GamedBaselines, np.ndarray] | None, dict]:
    """(read_gamed's result or None, provenance for results.json). `source`: the CSV or a folder with
    it; or HUB_REPO, the Hub dataset (cached copy, else one download); or None: xlpo's cache only."""
    if source is None or (str(source) == HUB_REPO and not Path(source).exists()):
        file, info = _from_hub(source is not None, echo)
        if file is None:
            return None, info
    else:
        path = Path(source)
        file = path / FILE_NAME if path.is_dir() else path
        if not file.is_file():
            raise UserError(f"{file}: no such file (AlpacaEval's {FILE_NAME}; or give {HUB_REPO} to download it "
                            "from the Hugging Face Hub)")
        info = {"source": "given path"}
    data = read_gamed(file)
    revision = file.parent.name if file.parent.parent.name == "snapshots" else None
    return data, {**info, "path": str(file), "sha256": _sha256(file), "hub_revision": revision}
