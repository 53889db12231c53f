"""Scored runs on disk: reading and validating them, their training logs, and run-level summaries.

Everything that touches files (scores.jsonl, scoring.json, and the training run a scored run names,
read through `xlpo.train.run.TrainRun`) is here, so the numeric modules stay pure functions of rows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xlpo.errors import UserError
from xlpo.eval.analysis.accuracy import ALL, lang_of
from xlpo.fileio import iter_jsonl, read_json_object
from xlpo.losses import get_loss
from xlpo.train.run import TrainRun

# ---------------------------------------------------------------------------------------------
# training logs, tokenization
# ---------------------------------------------------------------------------------------------

def load_training_log(train_dir: str | Path) -> dict[str, Any] | None:
    """Curves from the run's metrics: step, loss, rewards/accuracies and per-language accuracies.

    A step logged twice (a resumed run) keeps its last record. None when metrics.jsonl is absent.
    """
    run = TrainRun(train_dir)
    if not run.metrics_file.is_file():
        return None
    records = {int(rec["step"]): rec for rec in run.metrics() if "loss" in rec}
    steps = sorted(records)
    prefix = "rewards/accuracies/"
    langs = sorted({k[len(prefix):] for rec in records.values() for k in rec if k.startswith(prefix)})

    def col(key: str) -> list[float | None]:
        return [_num(records[s].get(key)) for s in steps]

    return {"steps": steps, "loss": col("loss"), "accuracy": col("rewards/accuracies"),
            "accuracy_by_lang": {lang: col(prefix + lang) for lang in langs}}


def _num(value: Any) -> float | None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def curve_summary(curve: Mapping[str, Any]) -> dict[str, Any]:
    """First, final and mean loss; roughness = std of step-to-step loss changes; final accuracy."""
    loss = np.array([v for v in curve["loss"] if v is not None], float)
    acc = [v for v in curve["accuracy"] if v is not None]
    if loss.size == 0:
        return {"steps": len(curve["steps"]), "first_loss": None, "final_loss": None, "mean_loss": None,
                "roughness": None, "final_accuracy": acc[-1] if acc else None}
    return {"steps": len(curve["steps"]), "first_loss": float(loss[0]), "final_loss": float(loss[-1]),
            "mean_loss": float(loss.mean()),
            "roughness": float(np.diff(loss).std()) if loss.size > 2 else None,
            "final_accuracy": acc[-1] if acc else None}


def tokenization_diagnostics(rows: Sequence[Mapping]) -> dict[str, dict[str, Any]]:
    """Per language (and "all"): tokens per character of chosen and rejected (ratio of sums; None
    without character counts) and the mean per-token log-prob of chosen and rejected (sum of
    log-probs over sum of tokens)."""
    groups: dict[str, list[Mapping]] = defaultdict(list)
    for r in rows:
        groups[lang_of(r)].append(r)
    groups = {k: groups[k] for k in sorted(groups)}
    groups[ALL] = list(rows)
    out = {}
    for lang, items in groups.items():
        entry: dict[str, Any] = {"n": len(items)}
        all_chars = [r.get(f"chars_{side}") for r in items for side in ("chosen", "rejected")]
        all_tokens = sum(float(r["tokens_chosen"]) + float(r["tokens_rejected"]) for r in items)
        entry["tokens_per_char"] = (all_tokens / sum(all_chars) if all(c is not None for c in all_chars)
                                    and sum(all_chars) > 0 else None)
        for side in ("chosen", "rejected"):
            tokens = sum(float(r[f"tokens_{side}"]) for r in items)
            chars = [r.get(f"chars_{side}") for r in items]
            entry[f"tokens_per_char_{side}"] = (tokens / sum(chars) if all(c is not None for c in chars)
                                                and sum(chars) > 0 else None)
            entry[f"logp_per_token_{side}"] = sum(float(r[f"logp_{side}"]) for r in items) / tokens if tokens else None
        out[lang] = entry
    return out


# ---------------------------------------------------------------------------------------------
# scored runs
# ---------------------------------------------------------------------------------------------

_REQUIRED = {"id": (str, int), "logp_chosen": (int, float), "logp_rejected": (int, float),
             "tokens_chosen": (int, float), "tokens_rejected": (int, float)}


@dataclass
class ScoredRun:
    """One scored run. Runs sharing a `group` are replicates of one method trained with different seeds."""

    name: str
    method: str
    dir: Path
    meta: dict
    rows: list[dict]
    train_dir: Path | None = None
    train_config: dict | None = None
    curve: dict | None = None
    notes: list[str] = field(default_factory=list)

    effective_loss_params: dict | None = None  # with the loss's defaults filled in (see load_run)

    @property
    def loss_params(self) -> dict:
        if self.effective_loss_params is not None:
            return self.effective_loss_params
        return self.meta.get("loss_params") or {}

    @property
    def alpha(self) -> float | None:
        value = self.loss_params.get("alpha")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def rrm(self) -> str | None:
        """The RRM orientation of a run with alpha ("paper" when not stated: the library's default)."""
        return str(self.loss_params.get("rrm") or "paper") if self.alpha is not None else None

    @property
    def group(self) -> str:
        """scoring.json `group` (the method label its seeds share); without it a run is its own group."""
        return str(self.meta.get("group") or self.name)

    @property
    def seed(self) -> int | None:
        """scoring.json `seed`, else the training config's `training.seed`."""
        seed = self.meta.get("seed")
        if seed is None:
            seed = ((self.train_config or {}).get("training") or {}).get("seed")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    @property
    def trained(self) -> bool:
        """False for the untrained starting model (method "base"): its scores have no seed-to-seed variation."""
        return self.method != "base"


def resolve_path(path_value: Any, run_dir: Path) -> Path | None:
    """A path from scoring.json: absolute or existing as given, else relative to the run directory."""
    if not path_value:
        return None
    p = Path(path_value)
    if p.is_absolute() or p.exists():
        return p
    beside = run_dir / p
    return beside if beside.exists() else p


def read_scores(path: str | Path) -> list[dict]:
    """Rows of a `scores.jsonl`, validated (the fields named in the issue's interface)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found (a scored run directory holds scores.jsonl and scoring.json)")
    rows = []
    for where, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for key, types in _REQUIRED.items():
            if key not in row:
                raise UserError(f"{where}: missing field '{key}'")
            if not isinstance(row[key], types) or isinstance(row[key], bool):
                raise UserError(f"{where}: field '{key}': unexpected value {row[key]!r}")
        for key in ("logp_chosen", "logp_rejected"):
            if not math.isfinite(row[key]):
                raise UserError(f"{where}: field '{key}' is not finite ({row[key]})")
        for key in ("tokens_chosen", "tokens_rejected"):
            if row[key] <= 0:
                raise UserError(f"{where}: field '{key}' must be > 0 (got {row[key]})")
        lang = row.get("lang")
        if lang is not None and not isinstance(lang, str):
            raise UserError(f"{where}: field 'lang': expected a language code string")
        row["id"] = str(row["id"])
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no rows")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{path}: id {dup!r} appears more than once")
    return rows


def load_run(run_dir: str | Path) -> ScoredRun:
    """A scored run directory: scores.jsonl, scoring.json and, when named there, the training run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory (expected a scored run with scores.jsonl and scoring.json)")
    meta_path = run_dir / "scoring.json"
    if not meta_path.is_file():
        raise UserError(f"{meta_path}: file not found")
    meta = read_json_object(meta_path)
    rows = read_scores(run_dir / "scores.jsonl")
    name = str(meta.get("name") or run_dir.name)
    method = str(meta.get("method") or name)
    run = ScoredRun(name=name, method=method, dir=run_dir, meta=meta, rows=rows)
    train_dir = resolve_path(meta.get("train_dir"), run_dir)
    if train_dir is not None:
        if not train_dir.is_dir():
            run.notes.append(f"training directory {train_dir} not found: no training curve")
        else:
            trained = TrainRun(train_dir)
            run.train_dir = train_dir
            run.curve = load_training_log(train_dir)
            if run.curve is None:
                run.notes.append(f"{trained.metrics_file} not found: no training curve")
            try:
                run.train_config = trained.saved_config()
            except UserError as exc:
                run.notes.append(f"{exc}; training seed unknown")
    run.effective_loss_params = _effective_loss_params(run)
    return run


def _effective_loss_params(run: ScoredRun) -> dict | None:
    """The loss hyper-parameters the run trained with, defaults included: train_summary.json's
    `loss_params` when present (the trainer writes them complete), else scoring.json's completed
    with the registered loss's defaults (a config that omits `alpha` trained with the default)."""
    given = run.meta.get("loss_params")
    if run.train_dir is not None:
        try:
            summary = TrainRun(run.train_dir).summary()
            if summary is not None and isinstance(summary.get("loss_params"), dict):
                return summary["loss_params"]
        except UserError as exc:
            run.notes.append(str(exc))
    if not isinstance(given, dict):
        return None
    try:
        return get_loss(run.method).params(**given).model_dump()
    except Exception:  # an unregistered method or params this version does not know: keep them as given
        return given
