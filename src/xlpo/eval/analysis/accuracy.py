"""Reward accuracy and per-pair reward differences over the rows of scored runs.

The shared vocabulary of the package lives here: the accuracy definitions and reward-difference
kinds, the "all" group, the interval level and the smallest sample a verdict is drawn from, the
row helpers every other module groups by, and the seeded percentile bootstrap. It imports no
other module of the package, so every other one can build on it without an import cycle.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFINITIONS = ("sum", "mean", "implicit")
KINDS = ("sum", "mean", "implicit")
ALL = "all"
CI_LEVEL = 0.95
MIN_PAIRS = 10  # fewer pairs behind an interval: no verdict, and the headline calls the language underpowered


# ---------------------------------------------------------------------------------------------
# rows and small helpers
# ---------------------------------------------------------------------------------------------

def lang_of(row: Mapping) -> str:
    return row.get("lang") or "unknown"


def languages(rows: Sequence[Mapping]) -> list[str]:
    return sorted({lang_of(r) for r in rows})


def has_reference(row: Mapping) -> bool:
    return row.get("ref_logp_chosen") is not None and row.get("ref_logp_rejected") is not None


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """A generator per (seed, key...): a group's interval does not change when other groups are added."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode("utf-8")) for k in keys)])


def percentile_interval(boot: np.ndarray) -> list[float] | None:
    """The central CI_LEVEL percentile interval of bootstrap replicates (nan left out); None if none."""
    boot = np.asarray(boot, dtype=float)
    boot = boot[~np.isnan(boot)]
    if boot.size == 0:
        return None
    alpha = (1.0 - CI_LEVEL) / 2.0
    lo, hi = np.percentile(boot, [100 * alpha, 100 * (1 - alpha)])
    return [float(lo), float(hi)]


def pair_correct(rows: Sequence[Mapping], definition: str) -> np.ndarray:
    """Per row 1.0 (chosen beats rejected), 0.0 (not, ties included) or nan (undefined: implicit without ref)."""
    if definition not in DEFINITIONS:
        raise ValueError(f"unknown accuracy definition {definition!r}; expected one of {', '.join(DEFINITIONS)}")
    margins = pair_margins(rows, definition)
    out = (margins > 0).astype(float)
    out[np.isnan(margins)] = np.nan
    return out


def pair_margins(rows: Sequence[Mapping], kind: str = "sum") -> np.ndarray:
    """Per row reward difference chosen minus rejected (nan where undefined). See `reward_differences`."""
    if kind not in KINDS:
        raise ValueError(f"unknown reward-difference kind {kind!r}; expected one of {', '.join(KINDS)}")
    out = np.empty(len(rows))
    for i, r in enumerate(rows):
        a, b = float(r["logp_chosen"]), float(r["logp_rejected"])
        if kind == "sum":
            out[i] = a - b
        elif kind == "mean":
            out[i] = a / r["tokens_chosen"] - b / r["tokens_rejected"]
        else:
            out[i] = ((a - float(r["ref_logp_chosen"])) - (b - float(r["ref_logp_rejected"]))
                      if has_reference(r) else np.nan)
    return out


# ---------------------------------------------------------------------------------------------
# reward accuracy
# ---------------------------------------------------------------------------------------------

def accuracy_table(rows: Sequence[Mapping], n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, dict[str, Any]]]:
    """Reward accuracy per language (and "all") for each definition, with 95% bootstrap intervals.

    Returns `{lang: {definition: {"acc", "lo", "hi", "n"}}}`, languages sorted, "all" last.
    Definitions: "sum" (logp_chosen > logp_rejected), "mean" (per-token mean log-probs),
    "implicit" ((logp_c - ref_c) > (logp_r - ref_r); only over rows with reference log-probs, and
    absent where a group has none). Ties count as wrong (DPO's beta scales the implicit reward and
    so never changes an accuracy). Intervals: percentile bootstrap over pairs (`n_boot` resamples;
    0 gives lo = hi = None), one generator per (seed, language, definition); "all" resamples within each language (stratified),
    as the evaluation split is balanced by design. An all-correct group gives [1, 1].
    """
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if not rows:
        return {}
    langs = np.array([lang_of(r) for r in rows])
    order = languages(rows)
    table: dict[str, dict[str, dict[str, Any]]] = {lang: {} for lang in [*order, ALL]}
    for definition in DEFINITIONS:
        correct = pair_correct(rows, definition)
        all_n, all_wins, all_boot = 0, 0.0, np.zeros(n_boot)
        for lang in order:
            values = correct[(langs == lang) & ~np.isnan(correct)]
            if values.size == 0:
                continue
            boot = _boot_means(values, n_boot, rng_for(seed, lang, definition))
            lo, hi = percentile_interval(boot) or (None, None)
            table[lang][definition] = {"acc": float(values.mean()), "lo": lo, "hi": hi, "n": int(values.size)}
            all_n += values.size
            all_wins += values.sum()
            all_boot += boot * values.size
        if all_n:
            lo, hi = percentile_interval(all_boot / all_n) or (None, None)
            table[ALL][definition] = {"acc": float(all_wins / all_n), "lo": lo, "hi": hi, "n": int(all_n)}
    return table


def _boot_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    if n_boot == 0:
        return np.zeros(0)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))
    return values[idx].mean(axis=1)


# ---------------------------------------------------------------------------------------------
# reward differences
# ---------------------------------------------------------------------------------------------

def reward_differences(rows: Sequence[Mapping], kind: str = "sum", beta: float | None = None
                       ) -> dict[str, np.ndarray]:
    """Per-pair reward difference (chosen minus rejected) by language, plus "all".

    kind "sum" (default, the Fig. 6 quantity here): `logp_chosen - logp_rejected` in nats, the
    model's own summed log-prob margin: reference-free like CAPO and like the paper's reward
    accuracy (Appendix B), and defined for the base model too (the paper's Figs. 3 and 8 give the
    base model non-zero reward gaps, so its reward difference cannot be DPO's implicit one).
    kind "mean": per-token mean margin. kind "implicit": DPO's `(logp_c - ref_c) - (logp_r - ref_r)`
    (rows without reference log-probs are dropped). With `beta` the values are multiplied by it
    (DPO's Delta r = beta * implicit); by default they are left in nats, because runs trained with
    different betas (SimPO uses 2.0) would otherwise be drawn on different scales.
    """
    if beta is not None and not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    margins = pair_margins(rows, kind)
    if kind == "implicit" and rows and np.isnan(margins).all():
        raise ValueError("reward difference 'implicit' needs reference log-probs (ref_logp_*); none are given")
    if beta is not None:
        margins = margins * beta
    langs = np.array([lang_of(r) for r in rows])
    ok = ~np.isnan(margins)
    out = {lang: margins[ok & (langs == lang)] for lang in languages(rows)}
    out = {k: v for k, v in out.items() if v.size}
    out[ALL] = margins[ok]
    return out
