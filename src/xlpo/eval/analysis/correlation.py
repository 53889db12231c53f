"""BLEU between chosen and rejected per language, and Pearson correlations across languages (Fig. 7).

Correlations here run over a handful of languages, so `pearson` reports when r is undefined or
meaningless rather than returning a bare number, and `fisher_interval` puts the paper's own r in
the same light as ours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm, pearsonr, t

from xlpo.data.mtpe_stats import compute_stats
from xlpo.eval.analysis.accuracy import ALL, CI_LEVEL


def bleu_by_language(data_file: str | Path) -> dict[str, dict[str, Any]]:
    """Corpus BLEU and chrF of rejected against chosen per language (xlpo.data.mtpe_stats, sacrebleu)."""
    stats = compute_stats(data_file, tokenizer=None)
    return {lang: {"bleu": s["bleu"], "chrf": s["chrf"], "n": s["n"], "bleu_tokenize": s["bleu_tokenize"],
                   "bleu_signature": s["bleu_signature"]}
            for lang, s in stats["languages"].items()}


def pearson(x: Mapping[str, float], y: Mapping[str, float]) -> dict[str, Any]:
    """Pearson r (scipy.stats.pearsonr) across the keys both mappings share (finite values only).

    Returns r, p (two-sided), a 95% Fisher-z interval (needs n >= 4), n, the languages and a note
    when the correlation is undefined or meaningless (n < 3: two points always give r = +-1).
    """
    keys = sorted(k for k in x if k in y and k != ALL and x[k] is not None and y[k] is not None
                  and math.isfinite(x[k]) and math.isfinite(y[k]))
    out: dict[str, Any] = {"r": None, "p": None, "ci_lo": None, "ci_hi": None, "n": len(keys), "languages": keys,
                           "note": None}
    if len(keys) < 2:
        out["note"] = f"n = {len(keys)} languages: a correlation needs at least 2 (and means little below 3)"
        return out
    xs, ys = np.array([x[k] for k in keys], float), np.array([y[k] for k in keys], float)
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        out["note"] = "one of the variables is constant across languages: r is undefined"
        return out
    res = pearsonr(xs, ys)
    out["r"], out["p"] = float(res.statistic), float(res.pvalue)
    if len(keys) < 3:
        out["note"] = "n < 3 languages: r is +-1 by construction and p = 1; not evidence either way"
    elif len(keys) < 4:
        out["note"] = "n = 3 languages: no Fisher-z interval (needs n >= 4); treat r with great caution"
    else:
        ci = res.confidence_interval(CI_LEVEL)
        out["ci_lo"], out["ci_hi"] = float(ci.low), float(ci.high)
    return out


def fisher_interval(r: float, n: int) -> tuple[float, float, float]:
    """(lo, hi, two-sided p) of a Pearson r from n points: Fisher-z interval and the t-test p-value."""
    z, se = math.atanh(r), 1.0 / math.sqrt(n - 3)
    q = norm.ppf(0.5 + CI_LEVEL / 2)
    tstat = r * math.sqrt((n - 2) / (1 - r * r))
    return math.tanh(z - q * se), math.tanh(z + q * se), float(2 * t.sf(abs(tstat), n - 2))
