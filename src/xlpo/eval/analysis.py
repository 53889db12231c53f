"""Per-language analysis of scored runs: the CAPO paper's Figures 4-7 and 9, with intervals.

Pure functions (numpy/scipy) over the rows of scored runs, plus `analyze`, which loads run
directories, computes everything, and writes `results.json`, the plots, `report.md` and a
self-contained `report.html`. The definitions are documented in docs/analysis.md; in short:

- reward accuracy: share of pairs whose chosen response beats the rejected one, under three
  definitions: `sum` (summed log-probs, the CAPO paper's Appendix B), `mean` (per-token mean
  log-probs, SimPO's score), `implicit` (DPO's implicit reward, needs reference log-probs).
  Ties count as wrong. 95% percentile bootstrap intervals over pairs, seeded.
- reward difference (Fig. 6): per pair `logp_chosen - logp_rejected` in nats (reference-free,
  the score behind Appendix B's accuracy); `mean` and `implicit` are available too.
- KDE-weighted mean: the mean of the Gaussian KDE of the differences, integral x f(x) dx /
  integral f(x) dx over the range a KDE plot draws, [min - 3h, max + 3h] (what one computes from
  a plotted KDE curve; exact here). The density-weighted mean of the sample points
  (sum x_i f(x_i) / sum f(x_i)) is reported as a sensitivity check.
- shift: KDE-weighted mean of the target method minus that of the baseline, per language.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xlpo.errors import UserError
from xlpo.fileio import iter_jsonl

DEFINITIONS = ("sum", "mean", "implicit")
KINDS = ("sum", "mean", "implicit")
KDE_METHODS = ("grid", "density")
ALL = "all"
CI_LEVEL = 0.95
MIN_PAIRS = 10  # fewer pairs behind an interval: no verdict is drawn from it
GRID_SIZE = 256  # points of the plotted KDE curves
GRID_CUT = 3.0  # the KDE range: this many bandwidths beyond the data (seaborn kdeplot's default cut)

# The paper's numbers that the report compares against (claims, not verdicts).
PAPER = {
    "acc_gain_vs_dpo": 16.0,      # "CAPO significantly outperforms DPO by 16%" (points or relative: not said)
    "acc_gain_vs_dpo_nll": 33.0,  # "... and DPONLL by 33%"
    "bleu_shift_r": -0.47,        # "inverse correlation (r = -0.47) between BLEU scores and the ... shift"
    "bleu_shift_languages": 8,    # Fig. 7 shows eight languages
    "best_alpha": 2.0,            # "increases up to alpha = 2.0 but drops sharply beyond that point"
}


# ---------------------------------------------------------------------------------------------
# rows and small helpers
# ---------------------------------------------------------------------------------------------

def _lang(row: Mapping) -> str:
    return row.get("lang") or "unknown"


def _languages(rows: Sequence[Mapping]) -> list[str]:
    return sorted({_lang(r) for r in rows})


def _has_ref(row: Mapping) -> bool:
    return row.get("ref_logp_chosen") is not None and row.get("ref_logp_rejected") is not None


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator per (seed, key...): a group's interval does not change when other groups are added."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode("utf-8")) for k in keys)])


def _percentile_ci(boot: np.ndarray) -> tuple[float | None, float | None]:
    if boot.size == 0:
        return None, None
    alpha = (1.0 - CI_LEVEL) / 2.0
    lo, hi = np.percentile(boot, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


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
                      if _has_ref(r) else np.nan)
    return out


# ---------------------------------------------------------------------------------------------
# reward accuracy
# ---------------------------------------------------------------------------------------------

def accuracy_table(rows: Sequence[Mapping], beta: float | None = None, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, dict[str, dict[str, Any]]]:
    """Reward accuracy per language (and "all") for each definition, with 95% bootstrap intervals.

    Returns `{lang: {definition: {"acc", "lo", "hi", "n"}}}`, languages sorted, "all" last.
    Definitions: "sum" (logp_chosen > logp_rejected), "mean" (per-token mean log-probs),
    "implicit" ((logp_c - ref_c) > (logp_r - ref_r); only over rows with reference log-probs, and
    absent where a group has none). Ties count as wrong. `beta` (> 0) scales DPO's implicit reward,
    which does not change any accuracy: it is accepted for symmetry with the scorer and validated.
    Intervals: percentile bootstrap over pairs (`n_boot` resamples; 0 gives lo = hi = None), one
    generator per (seed, language, definition); "all" resamples within each language (stratified),
    as the evaluation split is balanced by design. An all-correct group gives [1, 1].
    """
    if beta is not None and not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if not rows:
        return {}
    langs = np.array([_lang(r) for r in rows])
    order = _languages(rows)
    table: dict[str, dict[str, dict[str, Any]]] = {lang: {} for lang in [*order, ALL]}
    for definition in DEFINITIONS:
        correct = pair_correct(rows, definition)
        all_n, all_wins, all_boot = 0, 0.0, np.zeros(n_boot)
        for lang in order:
            values = correct[(langs == lang) & ~np.isnan(correct)]
            if values.size == 0:
                continue
            boot = _boot_means(values, n_boot, _rng(seed, lang, definition))
            lo, hi = _percentile_ci(boot)
            table[lang][definition] = {"acc": float(values.mean()), "lo": lo, "hi": hi, "n": int(values.size)}
            all_n += values.size
            all_wins += values.sum()
            all_boot += boot * values.size
        if all_n:
            lo, hi = _percentile_ci(all_boot / all_n)
            table[ALL][definition] = {"acc": float(all_wins / all_n), "lo": lo, "hi": hi, "n": int(all_n)}
    return table


def _boot_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    if n_boot == 0:
        return np.zeros(0)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))
    return values[idx].mean(axis=1)


def accuracy_difference(baseline_rows: Sequence[Mapping], target_rows: Sequence[Mapping], definition: str = "sum",
                        n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Target minus baseline reward accuracy on the pairs both scored (matched by id), per language.

    Returns `{"languages": {lang: {"diff", "lo", "hi", "n"}}, "all": {...}, "macro": {...}}`:
    "all" pools the pairs (stratified by language), "macro" is the unweighted mean over languages
    (the paper's "on average" over its Fig. 5 bars). Paired percentile bootstrap: each resample
    draws pairs and compares both runs on the same pairs.
    """
    base = {r["id"]: r for r in baseline_rows}
    common = [r for r in target_rows if r["id"] in base]
    out: dict[str, Any] = {"languages": {}, "all": None, "macro": None, "definition": definition,
                           "matched_pairs": len(common)}
    if not common:
        return out
    t_corr = pair_correct(common, definition)
    b_corr = pair_correct([base[r["id"]] for r in common], definition)
    ok = ~np.isnan(t_corr) & ~np.isnan(b_corr)
    diff = t_corr - b_corr
    langs = np.array([_lang(r) for r in common])
    boots, sizes, point = {}, {}, {}
    for lang in sorted(set(langs[ok])):
        d = diff[ok & (langs == lang)]
        boots[lang] = _boot_means(d, n_boot, _rng(seed, lang, definition, "diff"))
        sizes[lang], point[lang] = d.size, float(d.mean())
        lo, hi = _percentile_ci(boots[lang])
        out["languages"][lang] = {"diff": point[lang], "lo": lo, "hi": hi, "n": int(d.size)}
    if not sizes:
        return out
    total = sum(sizes.values())
    pooled = sum(boots[k] * sizes[k] for k in sizes) / total
    macro = sum(boots.values()) / len(boots)
    lo, hi = _percentile_ci(pooled)
    out["all"] = {"diff": float(sum(point[k] * sizes[k] for k in sizes) / total), "lo": lo, "hi": hi, "n": int(total)}
    lo, hi = _percentile_ci(macro)
    out["macro"] = {"diff": float(np.mean(list(point.values()))), "lo": lo, "hi": hi, "n": int(total),
                    "languages": len(sizes)}
    return out


# ---------------------------------------------------------------------------------------------
# reward differences, KDE, shift
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
    langs = np.array([_lang(r) for r in rows])
    ok = ~np.isnan(margins)
    out = {lang: margins[ok & (langs == lang)] for lang in _languages(rows)}
    out = {k: v for k, v in out.items() if v.size}
    out[ALL] = margins[ok]
    return out


def _kde(values: np.ndarray):
    """scipy's Gaussian KDE (Scott's bandwidth) or None when degenerate (fewer than 2 distinct values)."""
    from scipy.stats import gaussian_kde

    if values.size < 2 or np.ptp(values) == 0:
        return None
    try:
        return gaussian_kde(values)
    except (np.linalg.LinAlgError, ValueError):
        return None


def kde_grid(values: np.ndarray, kde=None, size: int = GRID_SIZE, cut: float = GRID_CUT) -> np.ndarray:
    """Evaluation grid: from min - cut*h to max + cut*h, h the KDE bandwidth."""
    kde = kde if kde is not None else _kde(values)
    h = math.sqrt(float(kde.covariance[0, 0])) if kde is not None else 1.0
    return np.linspace(values.min() - cut * h, values.max() + cut * h, size)


def kde_weighted_mean(values, method: str = "grid", cut: float = GRID_CUT) -> float:
    """KDE-weighted mean of a sample under scipy.stats.gaussian_kde's estimator (Gaussian kernel,
    Scott's bandwidth h = std(ddof=1) * n**(-1/5)).

    method "grid" (default): the mean of the KDE density over the range a KDE plot draws,
    integral x f(x) dx / integral f(x) dx over [min - cut*h, max + cut*h] (cut = 3, seaborn's
    kdeplot default). It is what one computes from a plotted KDE curve, sum(x*y)/sum(y) over its
    grid; here the integrals are exact (closed form in the normal cdf/pdf), so no grid
    resolution enters. For a Gaussian KDE it equals the sample mean up to the truncation at
    `cut` bandwidths.
    method "density": the sample points weighted by the density at them, sum x_i f(x_i) / sum f(x_i),
    which leans toward the mode and discounts tails (a sensitivity check).
    Degenerate samples: empty gives nan; one value, or all values equal, gives that value.
    """
    if method not in KDE_METHODS:
        raise ValueError(f"unknown KDE-weighted mean method {method!r}; expected one of {', '.join(KDE_METHODS)}")
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    return float(kde_weighted_means(x[None, :], method, cut)[0])


def kde_weighted_means(samples: np.ndarray, method: str = "grid", cut: float = GRID_CUT) -> np.ndarray:
    """`kde_weighted_mean` of each row of a (B, n) array, vectorised (used by the bootstrap).

    Written out in numpy rather than through scipy.stats.gaussian_kde, whose evaluation does a
    triangular solve per call; the tests check both give the same numbers.
    """
    if method not in KDE_METHODS:
        raise ValueError(f"unknown KDE-weighted mean method {method!r}; expected one of {', '.join(KDE_METHODS)}")
    from scipy.special import ndtr

    x_all = np.asarray(samples, dtype=float)
    n_rows, n = x_all.shape
    out = np.full(n_rows, np.nan)
    if n == 0:
        return out
    h_all = x_all.std(axis=1, ddof=1) * n ** (-0.2) if n > 1 else np.zeros(n_rows)
    degenerate = ~(h_all > 0)
    out[degenerate] = x_all[degenerate, 0]
    todo = np.flatnonzero(~degenerate)
    if method == "grid":
        x, h = x_all[todo], h_all[todo][:, None]
        lo = (x.min(axis=1, keepdims=True) - cut * h - x) / h  # standardised limits per kernel
        hi = (x.max(axis=1, keepdims=True) + cut * h - x) / h
        mass = ndtr(hi) - ndtr(lo)
        pdf = np.exp(-0.5 * lo * lo) - np.exp(-0.5 * hi * hi)
        first = x * mass + h * pdf / math.sqrt(2 * math.pi)  # integral of x * kernel_i(x) over the range
        out[todo] = first.sum(axis=1) / mass.sum(axis=1)
        return out
    step = max(1, int(2_000_000 // (n * n)))  # bounds memory (~16 MB per chunk)
    for start in range(0, todo.size, step):
        rows = todo[start:start + step]
        x, h = x_all[rows], h_all[rows][:, None, None]
        z = (x[:, :, None] - x[:, None, :]) / h
        w = np.exp(-0.5 * z * z).sum(axis=2)  # the normalising constant cancels in the ratio
        out[rows] = (w * x).sum(axis=1) / w.sum(axis=1)
    return out


def kde_curve(values, grid: np.ndarray) -> np.ndarray | None:
    """Density of the KDE of `values` on `grid` (None when degenerate)."""
    kde = _kde(np.asarray(values, dtype=float))
    return None if kde is None else kde(grid)


def _margin_groups(rows: Sequence[Mapping], kind: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{lang: (ids, margins)} with "all", undefined margins dropped."""
    margins = pair_margins(rows, kind)
    ids = np.array([str(r["id"]) for r in rows], dtype=object)
    langs = np.array([_lang(r) for r in rows])
    ok = ~np.isnan(margins)
    out = {lang: (ids[ok & (langs == lang)], margins[ok & (langs == lang)]) for lang in _languages(rows)}
    out = {k: v for k, v in out.items() if v[1].size}
    out[ALL] = (ids[ok], margins[ok])
    return out


def kde_shift(baseline_rows: Sequence[Mapping], target_rows: Sequence[Mapping], kind: str = "sum",
              method: str = "grid", n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per language (and "all"): KDE-weighted mean of target minus baseline reward differences.

    `{lang: {"shift", "lo", "hi", "baseline", "target", "mean_shift", "n_baseline", "n_target", "paired"}}`.
    "baseline"/"target" are the two KDE-weighted means, "mean_shift" the plain difference of sample
    means. Interval: 95% percentile bootstrap (n_boot resamples; 0 gives None); when both runs
    scored the same pairs of a language, pairs are resampled jointly (paired), otherwise each run's
    pairs independently.
    """
    base, targ = _margin_groups(baseline_rows, kind), _margin_groups(target_rows, kind)
    out: dict[str, dict[str, Any]] = {}
    for lang in [k for k in targ if k in base and k != ALL] + [ALL]:
        (b_ids, b), (t_ids, t) = base[lang], targ[lang]
        if b.size == 0 or t.size == 0:
            continue
        b_mean, t_mean = kde_weighted_mean(b, method), kde_weighted_mean(t, method)
        paired = len(b_ids) == len(t_ids) and len(set(b_ids)) == len(b_ids) and set(b_ids) == set(t_ids)
        boot = np.zeros(0)
        if n_boot:
            rng = _rng(seed, lang, kind, method, "shift")
            if paired:
                pos = {k: i for i, k in enumerate(t_ids)}
                t = t[[pos[k] for k in b_ids]]  # align target to baseline order
                idx = rng.integers(0, b.size, size=(n_boot, b.size))
                t_idx = b_idx = idx
            else:
                t_idx = rng.integers(0, t.size, size=(n_boot, t.size))
                b_idx = rng.integers(0, b.size, size=(n_boot, b.size))
            boot = kde_weighted_means(t[t_idx], method) - kde_weighted_means(b[b_idx], method)
        lo, hi = _percentile_ci(boot)
        out[lang] = {"shift": t_mean - b_mean, "lo": lo, "hi": hi, "baseline": b_mean, "target": t_mean,
                     "mean_shift": float(t.mean() - b.mean()), "n_baseline": int(b.size), "n_target": int(t.size),
                     "paired": bool(paired)}
    return out


# ---------------------------------------------------------------------------------------------
# BLEU and correlation
# ---------------------------------------------------------------------------------------------

def bleu_by_language(data_file: str | Path) -> dict[str, dict[str, Any]]:
    """Corpus BLEU and chrF of rejected against chosen per language (xlpo.data.mtpe_stats, sacrebleu)."""
    from xlpo.data.mtpe_stats import compute_stats

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
    from scipy.stats import pearsonr

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
    from scipy.stats import norm, t

    z, se = math.atanh(r), 1.0 / math.sqrt(n - 3)
    q = norm.ppf(0.5 + CI_LEVEL / 2)
    tstat = r * math.sqrt((n - 2) / (1 - r * r))
    return math.tanh(z - q * se), math.tanh(z + q * se), float(2 * t.sf(abs(tstat), n - 2))


# ---------------------------------------------------------------------------------------------
# training logs, alpha sweep, tokenization
# ---------------------------------------------------------------------------------------------

def load_training_log(train_dir: str | Path) -> dict[str, Any] | None:
    """Curves from `metrics.jsonl`: step, loss, rewards/accuracies and per-language accuracies.

    A step logged twice (a resumed run) keeps its last record. None when the file is absent.
    """
    path = Path(train_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    records: dict[int, dict] = {}
    for _, rec in iter_jsonl(path):
        if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)) and "loss" in rec:
            records[int(rec["step"])] = rec
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
        groups[_lang(r)].append(r)
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


def _resolve(path_value: Any, run_dir: Path) -> Path | None:
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
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{meta_path}: not valid JSON ({exc.msg})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path}: expected a JSON object")
    rows = read_scores(run_dir / "scores.jsonl")
    name = str(meta.get("name") or run_dir.name)
    method = str(meta.get("method") or name)
    run = ScoredRun(name=name, method=method, dir=run_dir, meta=meta, rows=rows)
    train_dir = _resolve(meta.get("train_dir"), run_dir)
    if train_dir is not None:
        if not train_dir.is_dir():
            run.notes.append(f"training directory {train_dir} not found: no training curve")
        else:
            run.train_dir = train_dir
            run.curve = load_training_log(train_dir)
            if run.curve is None:
                run.notes.append(f"{train_dir / 'metrics.jsonl'} not found: no training curve")
            cfg = train_dir / "config.yaml"
            if cfg.is_file():
                import yaml

                try:
                    loaded = yaml.safe_load(cfg.read_text(encoding="utf-8"))
                    run.train_config = loaded if isinstance(loaded, dict) else None
                except yaml.YAMLError:
                    run.notes.append(f"{cfg}: not valid YAML; training seed unknown")
    run.effective_loss_params = _effective_loss_params(run)
    return run


def _effective_loss_params(run: ScoredRun) -> dict | None:
    """The loss hyper-parameters the run trained with, defaults included: train_summary.json's
    `loss_params` when present (the trainer writes them complete), else scoring.json's completed
    with the registered loss's defaults (a config that omits `alpha` trained with the default)."""
    given = run.meta.get("loss_params")
    if run.train_dir is not None and (run.train_dir / "train_summary.json").is_file():
        try:
            summary = json.loads((run.train_dir / "train_summary.json").read_text(encoding="utf-8"))
            if isinstance(summary, dict) and isinstance(summary.get("loss_params"), dict):
                return summary["loss_params"]
        except json.JSONDecodeError:
            run.notes.append(f"{run.train_dir / 'train_summary.json'}: not valid JSON")
    if not isinstance(given, dict):
        return None
    try:
        from xlpo.losses import get_loss

        return get_loss(run.method).params(**given).model_dump()
    except Exception:  # an unregistered method or params this version does not know: keep them as given
        return given


def pick_run(runs: Sequence[ScoredRun], key: str, role: str) -> ScoredRun | None:
    """The run named `key`, else the only run whose method is `key`; None if none; UserError if ambiguous."""
    for run in runs:
        if run.name == key:
            return run
    matches = [r for r in runs if r.method == key]
    if len(matches) > 1:
        raise UserError(f"--{role} {key!r} matches {len(matches)} runs of that method "
                        f"({', '.join(r.name for r in matches)}): pass one run name")
    return matches[0] if matches else None


def compared_runs(runs: Sequence[ScoredRun], target: ScoredRun | None) -> list[ScoredRun]:
    """Runs drawn in the method comparisons: all but the alpha-sweep siblings of the target (same
    method and RRM orientation, another alpha), which appear in the alpha sweep instead."""
    if target is None:
        return list(runs)
    return [r for r in runs if r is target or not (r.method == target.method and r.rrm == target.rrm
                                                    and r.alpha != target.alpha)]


def alpha_sweep(runs: Sequence[ScoredRun], accuracy: Mapping[str, Mapping], method: str | None = None
                ) -> list[dict[str, Any]]:
    """Runs whose loss_params have alpha, grouped by (method, rrm), sorted by alpha: final and mean
    training loss (from metrics.jsonl) and evaluation accuracy ("sum" and "mean", with intervals)."""
    out = []
    for run in runs:
        if run.alpha is None or (method is not None and run.method != method):
            continue
        summary = curve_summary(run.curve) if run.curve else {}
        acc = accuracy[run.name].get(ALL, {})
        out.append({"name": run.name, "method": run.method, "rrm": run.rrm, "alpha": run.alpha,
                    "final_loss": summary.get("final_loss"), "mean_loss": summary.get("mean_loss"),
                    "acc_sum": acc.get("sum"), "acc_mean": acc.get("mean")})
    return sorted(out, key=lambda e: (e["method"], str(e["rrm"]), e["alpha"]))


# ---------------------------------------------------------------------------------------------
# against the paper
# ---------------------------------------------------------------------------------------------

def _verdict_from_ci(lo: float | None, hi: float | None, expect_positive: bool, n: int | None = None) -> str:
    """From a 95% interval: on the paper's side, the other side, or neither. Fewer than MIN_PAIRS
    pairs behind it: "inconclusive" (a percentile bootstrap of a handful of pairs is no interval)."""
    if lo is None or hi is None or (n is not None and n < MIN_PAIRS):
        return "inconclusive"
    if (lo > 0) if expect_positive else (hi < 0):
        return "agrees"
    if (hi < 0) if expect_positive else (lo > 0):
        return "contradicts"
    return "inconclusive"


def _fmt_diff(d: Mapping[str, Any] | None, scale: float = 100.0, unit: str = " points") -> str:
    if not d:
        return "n/a"
    if d.get("lo") is None:
        return f"{d['diff'] * scale:+.1f}{unit}"
    return f"{d['diff'] * scale:+.1f}{unit} [95% CI {d['lo'] * scale:+.1f}, {d['hi'] * scale:+.1f}]"


def against_paper(ctx: Mapping[str, Any]) -> list[dict[str, str]]:
    """Each claim of the paper checked against this data: claim, paper's value, ours, verdict, detail.

    Verdicts ("agrees", "contradicts", "inconclusive", "partly agrees", "cannot check") are
    computed from intervals here, never fixed in advance.
    """
    out: list[dict[str, str]] = []
    b_name, t_name = ctx["baseline_name"], ctx["target_name"]
    bk, tk = ctx["baseline_key"], ctx["target_key"]

    def add(claim, paper, ours, verdict, detail=""):
        out.append({"claim": claim, "paper": paper, "ours": ours, "verdict": verdict, "detail": detail})

    # 1. average accuracy vs DPO and vs DPONLL
    for key, other, label, paper_gain in (("vs_baseline", b_name, bk, PAPER["acc_gain_vs_dpo"]),
                                          ("vs_dpo_nll", ctx.get("dpo_nll_name"), "dpo_nll",
                                           PAPER["acc_gain_vs_dpo_nll"])):
        claim = f"{tk} has higher average reward accuracy than {other or label}"
        paper = f"+{paper_gain:.0f}% (the paper does not say whether points or relative %)"
        diff = ctx["acc_diff"].get(key)
        if t_name is None or other is None:
            add(claim, paper, "n/a", "cannot check", f"no scored run for {tk if t_name is None else label}")
            continue
        if not diff or diff.get("macro") is None:
            add(claim, paper, "n/a", "cannot check", f"no pairs scored by both {t_name} and {other}")
            continue
        macro, sdiff = diff["macro"], ctx["acc_diff"].get(key + "_mean")
        base_acc = ctx["macro_acc"].get(other)
        rel = (f"; relative to {other}'s {base_acc * 100:.1f}%: {macro['diff'] / base_acc * 100:+.1f}%"
               if base_acc else "")
        detail = (f"macro average over {macro['languages']} languages, summed log-prob accuracy (Appendix B); "
                  f"paired bootstrap on {macro['n']} pairs{rel}")
        if sdiff and sdiff.get("macro"):
            detail += f". Per-token mean accuracy: {_fmt_diff(sdiff['macro'])}"
        add(claim, paper, _fmt_diff(macro), _verdict_from_ci(macro["lo"], macro["hi"], True, macro["n"]), detail)

    # 2. best in all languages except en; worse than DPO in en
    best = ctx.get("best_by_lang") or {}
    if t_name is None or not best:
        add(f"{tk} has the highest accuracy in every language except en", "Fig. 5", "n/a", "cannot check",
            f"no scored run for {tk}" if t_name is None else "no languages")
    else:
        non_en = [lang for lang in best if lang != "en"]
        wins = [lang for lang in non_en if t_name in best[lang]]
        verdict = "agrees" if len(wins) == len(non_en) else ("partly agrees" if wins else "contradicts")
        smallest = min((ctx["pairs_by_lang"].get(lang, 0) for lang in non_en), default=0)
        if smallest < MIN_PAIRS:
            verdict = "inconclusive"
        add(f"{tk} has the highest accuracy in every language except en", "Fig. 5 (5 settings, 8 languages)",
            f"highest in {len(wins)} of {len(non_en)} non-en languages",
            verdict, f"among {', '.join(ctx['compared_names'])} (summed log-prob accuracy; ties count as highest); "
            f"highest in: {', '.join(wins) or 'none'}. Point estimates: see the intervals in the accuracy table"
            + (f"; a language has only {smallest} pairs (< {MIN_PAIRS}): no verdict" if smallest < MIN_PAIRS else ""))
    diff = ctx["acc_diff"].get("vs_baseline")
    en = (diff or {}).get("languages", {}).get("en")
    if en is None:
        add(f"{tk} is worse than {bk} in en", "Fig. 5", "n/a", "cannot check",
            "no en pairs scored by both runs (MTPE data from en into other languages has no en target side)"
            if diff else f"no scored run for {tk if t_name is None else bk}")
    else:
        add(f"{tk} is worse than {bk} in en", "Fig. 5", _fmt_diff(en), _verdict_from_ci(en["lo"], en["hi"], False, en["n"]),
            f"paired bootstrap on {en['n']} en pairs")

    # 3. shift of the reward-difference distribution (Fig. 6)
    shift = ctx.get("shift") or {}
    langs = [k for k in shift if k != ALL]
    if not langs:
        add(f"{tk} shifts the reward-difference distribution to the right of {bk}'s in every language",
            "Fig. 6", "n/a", "cannot check", f"needs scored runs for both {bk} and {tk}")
    else:
        enough = [k for k in langs if min(shift[k]["n_baseline"], shift[k]["n_target"]) >= MIN_PAIRS]
        pos = [k for k in enough if shift[k]["lo"] is not None and shift[k]["lo"] > 0]
        neg = [k for k in enough if shift[k]["hi"] is not None and shift[k]["hi"] < 0]
        up = [k for k in langs if shift[k]["shift"] > 0]
        verdict = ("agrees" if len(pos) == len(langs) else "contradicts" if len(neg) == len(langs)
                   else "partly agrees" if pos else "inconclusive")
        a = shift.get(ALL)
        add(f"{tk} shifts the reward-difference distribution to the right of {bk}'s in every language",
            "Fig. 6", f"shift > 0 in {len(up)} of {len(langs)} languages; CI above 0 in {len(pos)}, below 0 in "
            f"{len(neg)}", verdict,
            (f"all pairs: {a['shift']:+.2f} nats" + (f" [95% CI {a['lo']:+.2f}, {a['hi']:+.2f}]" if a["lo"] is not None
                                                     else "") if a else "")
            + f"; KDE-weighted means of {ctx['reward_kind']} log-prob margins"
            + (f"; {len(langs) - len(enough)} languages with fewer than {MIN_PAIRS} pairs count as inconclusive"
               if len(enough) < len(langs) else ""))

    # 4. BLEU vs shift correlation
    corr = ctx.get("correlation") or {}
    p_lo, p_hi, p_p = fisher_interval(PAPER["bleu_shift_r"], PAPER["bleu_shift_languages"])
    paper = (f"r = {PAPER['bleu_shift_r']:.2f} over {PAPER['bleu_shift_languages']} languages "
             f"(its own 95% CI: [{p_lo:.2f}, {p_hi:.2f}], p = {p_p:.2f})")
    if corr.get("r") is None or corr.get("n", 0) < 3:
        add("BLEU(chosen, rejected) correlates negatively with the shift across languages", paper,
            "n/a" if corr.get("r") is None else f"r = {corr['r']:+.2f} (n = {corr['n']})", "cannot check",
            corr.get("note") or "no BLEU or no shift")
    else:
        r, p = corr["r"], corr["p"]
        ours = f"r = {r:+.2f}, p = {p:.3f}, n = {corr['n']} languages"
        if corr["ci_lo"] is not None:
            ours += f" [95% CI {corr['ci_lo']:+.2f}, {corr['ci_hi']:+.2f}]"
            verdict = _verdict_from_ci(corr["ci_lo"], corr["ci_hi"], False)
            inside = corr["ci_lo"] <= PAPER["bleu_shift_r"] <= corr["ci_hi"]
            detail = (f"the paper's r = {PAPER['bleu_shift_r']} is {'inside' if inside else 'outside'} our 95% "
                      "interval" + ("" if inside else (" (ours is stronger)" if corr["ci_hi"] < PAPER["bleu_shift_r"]
                                                      else " (ours is weaker or of the other sign)")))
        else:
            verdict = ("agrees" if r < 0 and p < 0.05 else "contradicts" if r > 0 and p < 0.05 else "inconclusive")
            detail = corr.get("note") or ""
        detail += ("; verdict on the sign: 'agrees' needs the interval below 0. The paper's own r over 8 languages "
                   "has an interval that includes 0")
        add("BLEU(chosen, rejected) correlates negatively with the shift across languages", paper, ours, verdict,
            detail)

    # 5. alpha sweep
    sweep = [e for e in ctx.get("alpha_sweep", []) if e["acc_sum"] is not None]
    best_alpha = PAPER["best_alpha"]
    low = [e for e in sweep if e["alpha"] <= best_alpha]
    high = [e for e in sweep if e["alpha"] > best_alpha]
    claim = f"evaluation accuracy drops for alpha > {best_alpha:g}"
    if not low or not high:
        add(claim, "Fig. 9", "n/a", "cannot check",
            f"needs {tk} runs with alpha <= {best_alpha:g} and alpha > {best_alpha:g} "
            "(have alphas: " + (", ".join(format(e["alpha"], "g") for e in sweep) or "none") + ")")
    else:
        diffs = ctx.get("alpha_diffs") or {}
        ref = max(low, key=lambda e: e["acc_sum"]["acc"])
        parts, verdicts = [], []
        for e in high:
            d = diffs.get(e["name"])
            if d and d.get("all"):
                parts.append(f"alpha {e['alpha']:g}: {_fmt_diff(d['all'])}")
                verdicts.append(_verdict_from_ci(d["all"]["lo"], d["all"]["hi"], False, d["all"]["n"]))
        verdict = ("agrees" if verdicts and all(v == "agrees" for v in verdicts)
                   else "contradicts" if verdicts and all(v == "contradicts" for v in verdicts)
                   else "partly agrees" if "agrees" in verdicts else "inconclusive")
        add(claim, "Fig. 9: accuracy rises up to alpha = 2, then drops sharply",
            "; ".join(parts) or "n/a", verdict,
            f"accuracy of each alpha > {best_alpha:g} run minus the best run with alpha <= {best_alpha:g} "
            f"({ref['name']}, alpha {ref['alpha']:g}, {ref['acc_sum']['acc'] * 100:.1f}%), paired bootstrap")
    losses = [(e["alpha"], e["final_loss"]) for e in ctx.get("alpha_sweep", []) if e["final_loss"] is not None]
    if len({a for a, _ in losses}) < 2:
        add("training loss decreases as alpha grows", "Fig. 9", "n/a", "cannot check",
            "needs training logs of at least two alphas")
    else:
        from scipy.stats import spearmanr

        losses.sort()
        rho = float(spearmanr([a for a, _ in losses], [v for _, v in losses]).statistic)
        monotone = all(v2 < v1 for (_, v1), (_, v2) in zip(losses, losses[1:]))
        add("training loss decreases as alpha grows", "Fig. 9",
            f"final loss {'decreases' if monotone else 'does not decrease'} monotonically over "
            f"{len(losses)} alphas (Spearman rho = {rho:+.2f})",
            "agrees" if monotone else ("contradicts" if rho >= 0 else "partly agrees"),
            ", ".join(f"alpha {a:g}: {v:.3f}" for a, v in losses) + " (one run per alpha: no interval)")

    # 6. training loss lower from the start (Fig. 4)
    curves = ctx.get("curve_summaries") or {}
    cb, ct = curves.get(b_name or ""), curves.get(t_name or "")
    if not cb or not ct or cb.get("first_loss") is None or ct.get("first_loss") is None:
        add(f"{tk}'s training loss is lower than {bk}'s from the start", "Fig. 4 and Section 4.1", "n/a",
            "cannot check", "needs training logs (metrics.jsonl) of both runs")
    else:
        lower = ct["first_loss"] < cb["first_loss"] and ct["final_loss"] < cb["final_loss"]
        add(f"{tk}'s training loss is lower than {bk}'s from the start", "Fig. 4 and Section 4.1",
            f"first logged loss {ct['first_loss']:.3f} vs {cb['first_loss']:.3f}; final {ct['final_loss']:.3f} vs "
            f"{cb['final_loss']:.3f}", "agrees" if lower else "contradicts",
            "one run each: no interval. The losses are different functions, so a lower value is not by "
            f"itself better optimisation. Step-to-step roughness (std of loss changes): {tk} "
            + (f"{ct['roughness']:.4f}" if ct.get("roughness") is not None else "n/a") + f", {bk} "
            + (f"{cb['roughness']:.4f}" if cb.get("roughness") is not None else "n/a"))

    # 7. RRM orientation
    orient = ctx.get("orientation")
    if not orient or not orient.get("inverse_minus_paper"):
        add("the RRM as printed in Eq. 4 (a/b) beats the orientation the prose describes (b/a)",
            "Eq. 4 (a/b) is the one trained; the prose describes b/a",
            "n/a", "cannot check", f"needs {tk} runs with rrm = paper and rrm = inverse at the same alpha, "
            "scored on the same pairs")
    else:
        d = orient["inverse_minus_paper"]
        verdict = _verdict_from_ci(d["lo"], d["hi"], False, d["n"])  # the paper's side: inverse minus paper < 0
        better = {"agrees": "paper (a/b)", "contradicts": "inverse (b/a)"}.get(
            verdict, "neither (interval includes 0 or too few pairs)")
        vs = "; ".join(f"{k} vs {bk}: {_fmt_diff(v)}" for k, v in orient["vs_baseline"].items() if v)
        add("the RRM as printed in Eq. 4 (a/b) beats the orientation the prose describes (b/a)",
            "Eq. 4 (a/b) is the one trained and credited with the gains; the prose describes b/a",
            f"inverse minus paper: {_fmt_diff(d)}; better: {better}", verdict,
            f"runs {orient['paper']} (a/b) and {orient['inverse']} (b/a), alpha {orient['alpha']:g}, paired "
            f"bootstrap of summed log-prob accuracy. {vs}")

    # 8. tokenization argument
    tok = ctx.get("tokenization_test") or {}
    for key, claim, expect in (
            ("baseline_acc", f"{bk}'s accuracy is lower in languages with more tokens per character", -1),
            ("gain", f"{tk}'s gain over {bk} is larger in languages with more tokens per character", +1)):
        c = tok.get(key)
        if not c or c.get("r") is None:
            add(claim, "Section 2.1 (tokenization argument)", "n/a", "cannot check",
                (c or {}).get("note") or "needs character counts and both runs")
            continue
        ours = f"r = {c['r']:+.2f}, p = {c['p']:.3f}, n = {c['n']} languages"
        if c["n"] < 3:
            verdict = "cannot check"
        elif c["p"] < 0.05:
            verdict = "agrees" if c["r"] * expect > 0 else "contradicts"
        else:
            verdict = "inconclusive"
        add(claim, "Section 2.1 (tokenization argument; no number given)", ours, verdict,
            "Pearson r across languages of tokens per character (chosen and rejected pooled) against "
            + ("summed log-prob accuracy" if key == "baseline_acc" else "the accuracy difference")
            + (f"; {c['note']}" if c.get("note") else ""))
    return out


# ---------------------------------------------------------------------------------------------
# the whole analysis
# ---------------------------------------------------------------------------------------------

def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _bleu_source(data_file, target: ScoredRun | None, runs: Sequence[ScoredRun]) -> tuple[Path | None, str]:
    if data_file is not None:
        p = Path(data_file)
        if not p.is_file():
            raise UserError(f"--data {p}: file not found")
        return p, "given with --data"
    for run in ([target] if target else []) + [r for r in runs if r is not target]:
        train = ((run.train_config or {}).get("data") or {}).get("train")
        if train:
            p = _resolve(train, run.train_dir or run.dir)
            if p is not None and p.is_file():
                return p, f"training data of run {run.name} (as the paper's Fig. 7)"
    for run in ([target] if target else []) + list(runs):
        p = _resolve(run.meta.get("data"), run.dir)
        if p is not None and p.is_file():
            return p, f"scored (evaluation) data of run {run.name}: no training data found"
    return None, "no data file found (pass --data)"


def analyze(run_dirs: Sequence[str | Path], out_dir: str | Path, baseline: str = "dpo", target: str = "capo",
            data_file: str | Path | None = None, n_boot: int = 1000, seed: int = 0, reward_kind: str = "sum",
            plots: bool = True, note: str | None = None) -> dict[str, Any]:
    """Load scored runs, compute every analysis, write results.json, plots/, report.md, report.html.

    `baseline` and `target` name a run (scoring.json "name") or a method held by exactly one run.
    BLEU between chosen and rejected uses `data_file`, else the target's training data (the paper's
    Fig. 7), else the scored data. `note` is shown at the top of the report (e.g. "synthetic runs").
    Returns the results dict (also saved as results.json).
    """
    from xlpo.fileio import write_json
    from xlpo.versions import library_versions

    if not run_dirs:
        raise UserError("no run directories given")
    if reward_kind not in KINDS:
        raise UserError(f"reward kind {reward_kind!r}: expected one of {', '.join(KINDS)}")
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UserError(f"two runs are named {dup!r} (scoring.json 'name'): names must be unique")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_run, targ_run = pick_run(runs, baseline, "baseline"), pick_run(runs, target, "target")
    by_name = {r.name: r for r in runs}
    compared = compared_runs(runs, targ_run)

    # accuracy
    accuracy = {r.name: accuracy_table(r.rows, r.meta.get("beta"), n_boot, seed) for r in runs}
    macro_acc = {}
    for name, table in accuracy.items():
        vals = [v["sum"]["acc"] for k, v in table.items() if k != ALL and "sum" in v]
        macro_acc[name] = float(np.mean(vals)) if vals else None
    best_by_lang: dict[str, list[str]] = {}
    # the paper's Fig. 5 settings: the target against the other methods (not its own variants)
    contenders = [r for r in compared if targ_run is None or r is targ_run or r.method != targ_run.method]
    for lang in sorted({k for r in contenders for k in accuracy[r.name] if k != ALL}):
        scores = {r.name: accuracy[r.name][lang]["sum"]["acc"] for r in contenders
                  if lang in accuracy[r.name] and "sum" in accuracy[r.name][lang]}
        if scores:
            top = max(scores.values())
            best_by_lang[lang] = [n for n, v in scores.items() if v == top]

    acc_diff: dict[str, Any] = {}
    dpo_nll = next((r for r in compared if r.method == "dpo_nll" and r is not base_run), None)
    if targ_run is not None:
        if base_run is not None:
            acc_diff["vs_baseline"] = accuracy_difference(base_run.rows, targ_run.rows, "sum", n_boot, seed)
            acc_diff["vs_baseline_mean"] = accuracy_difference(base_run.rows, targ_run.rows, "mean", n_boot, seed)
        if dpo_nll is not None and dpo_nll is not targ_run:
            acc_diff["vs_dpo_nll"] = accuracy_difference(dpo_nll.rows, targ_run.rows, "sum", n_boot, seed)
            acc_diff["vs_dpo_nll_mean"] = accuracy_difference(dpo_nll.rows, targ_run.rows, "mean", n_boot, seed)

    # reward differences, KDE-weighted means, shift
    kinds = [k for k in KINDS if k != "implicit" or all(any(_has_ref(x) for x in r.rows) for r in runs)]
    diff_summary: dict[str, dict] = {}
    for r in runs:
        diffs = reward_differences(r.rows, reward_kind) if reward_kind != "implicit" or any(
            _has_ref(x) for x in r.rows) else {}
        diff_summary[r.name] = {
            lang: {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
                   "std": float(v.std(ddof=1)) if v.size > 1 else None,
                   "share_positive": float((v > 0).mean()),
                   "kde_weighted_mean": kde_weighted_mean(v, "grid"),
                   "density_weighted_mean": kde_weighted_mean(v, "density")}
            for lang, v in diffs.items() if v.size}
    shift, shift_density, shift_vs_baseline = {}, {}, {}
    if base_run is not None and targ_run is not None and targ_run is not base_run:
        shift = kde_shift(base_run.rows, targ_run.rows, reward_kind, "grid", n_boot, seed)
        shift_density = kde_shift(base_run.rows, targ_run.rows, reward_kind, "density", n_boot, seed)
    if base_run is not None:
        for r in compared:
            if r is not base_run:
                s = kde_shift(base_run.rows, r.rows, reward_kind, "grid", 0, seed)
                shift_vs_baseline[r.name] = {k: v["shift"] for k, v in s.items()}

    # BLEU and correlation
    bleu_path, bleu_reason = _bleu_source(data_file, targ_run, runs)
    bleu = bleu_by_language(bleu_path) if bleu_path is not None else {}
    bleu_values = {k: v["bleu"] for k, v in bleu.items()}
    correlation = pearson(bleu_values, {k: v["shift"] for k, v in shift.items()})
    correlation_density = pearson(bleu_values, {k: v["shift"] for k, v in shift_density.items()})
    correlation_mean = pearson(bleu_values, {k: v["mean_shift"] for k, v in shift.items()})

    # training, alpha sweep
    curve_summaries = {r.name: curve_summary(r.curve) for r in runs if r.curve}
    sweep = alpha_sweep(runs, accuracy, targ_run.method if targ_run else None)
    alpha_diffs = {}
    low = [e for e in sweep if e["alpha"] <= PAPER["best_alpha"] and e["acc_sum"]
           and (targ_run is None or e["rrm"] == targ_run.rrm)]
    if low:
        ref = by_name[max(low, key=lambda e: e["acc_sum"]["acc"])["name"]]
        for e in sweep:
            if e["alpha"] > PAPER["best_alpha"] and e["rrm"] == ref.rrm:
                alpha_diffs[e["name"]] = accuracy_difference(ref.rows, by_name[e["name"]].rows, "sum", n_boot, seed)

    # RRM orientation: target-method runs with rrm paper and inverse at the same alpha
    orientation = None
    if targ_run is not None and targ_run.alpha is not None:
        cands = [r for r in runs if r.method == targ_run.method and r.alpha is not None]
        for want_alpha in [targ_run.alpha] + sorted({r.alpha for r in cands} - {targ_run.alpha}):
            pap = next((r for r in cands if r.rrm == "paper" and r.alpha == want_alpha), None)
            inv = next((r for r in cands if r.rrm == "inverse" and r.alpha == want_alpha), None)
            if pap and inv:
                orientation = {"alpha": want_alpha, "paper": pap.name, "inverse": inv.name,
                               "inverse_minus_paper": accuracy_difference(pap.rows, inv.rows, "sum", n_boot,
                                                                          seed)["all"],
                               "vs_baseline": {r.name: (accuracy_difference(base_run.rows, r.rows, "sum", n_boot,
                                                                            seed)["all"] if base_run else None)
                                               for r in (pap, inv)}}
                break

    # tokenization
    tokenization = {r.name: tokenization_diagnostics(r.rows) for r in runs}
    ref_tok = tokenization[(base_run or runs[0]).name]
    tpc = {}
    for lang, e in ref_tok.items():
        if lang != ALL and e["tokens_per_char"] is not None:
            tpc[lang] = e["tokens_per_char"]
    tok_test: dict[str, Any] = {}
    if base_run is not None:
        tok_test["baseline_acc"] = pearson(tpc, {k: v["sum"]["acc"] for k, v in accuracy[base_run.name].items()
                                                 if "sum" in v})
        if targ_run is not None and "vs_baseline" in acc_diff:
            tok_test["gain"] = pearson(tpc, {k: v["diff"] for k, v in acc_diff["vs_baseline"]["languages"].items()})
    if not tpc:
        for v in tok_test.values():
            v["note"] = "no character counts (chars_chosen / chars_rejected) in the scores"

    ctx = {"baseline_name": base_run.name if base_run else None, "target_name": targ_run.name if targ_run else None,
           "baseline_key": baseline, "target_key": target, "dpo_nll_name": dpo_nll.name if dpo_nll else None,
           "acc_diff": acc_diff, "macro_acc": macro_acc, "best_by_lang": best_by_lang,
           "pairs_by_lang": {lang: min(accuracy[r.name].get(lang, {}).get("sum", {}).get("n", 0) for r in contenders)
                             for lang in best_by_lang},
           "compared_names": [r.name for r in contenders], "shift": shift, "reward_kind": reward_kind,
           "correlation": correlation,
           "alpha_sweep": [e for e in sweep if targ_run is None or e["rrm"] == targ_run.rrm], "alpha_diffs": alpha_diffs,
           "curve_summaries": curve_summaries, "orientation": orientation, "tokenization_test": tok_test}
    verdicts = against_paper(ctx)

    seeds = {"bootstrap": seed}
    for r in runs:
        s = ((r.train_config or {}).get("training") or {}).get("seed")
        if s is not None:
            seeds[f"train:{r.name}"] = s
    results: dict[str, Any] = {
        "config": {"note": note, "runs": [str(d) for d in run_dirs], "out": str(out), "baseline": baseline,
                   "target": target,
                   "baseline_run": ctx["baseline_name"], "target_run": ctx["target_name"],
                   "data_file": str(bleu_path) if bleu_path else None, "bleu_source": bleu_reason,
                   "n_boot": n_boot, "ci_level": CI_LEVEL, "reward_kind": reward_kind, "reward_kinds_available": kinds,
                   "kde": {"estimator": "scipy.stats.gaussian_kde (Gaussian kernel, Scott's bandwidth)",
                           "range_cut_bandwidths": GRID_CUT, "plot_grid_points": GRID_SIZE,
                           "weighted_mean": "grid (primary): integral of x f(x) / integral of f(x) over "
                           "[min - cut*h, max + cut*h], exact; density (sensitivity): sum x_i f(x_i) / sum f(x_i)"}},
        "versions": library_versions(),
        "seeds": seeds,
        "runs": [{"name": r.name, "method": r.method, "dir": str(r.dir), "loss_params": r.loss_params or None,
                  "model": r.meta.get("model"), "adapter": r.meta.get("adapter"), "beta": r.meta.get("beta"),
                  "data": r.meta.get("data"), "train_dir": str(r.train_dir) if r.train_dir else r.meta.get("train_dir"),
                  "pairs": len(r.rows), "languages": _languages(r.rows), "has_reference": any(_has_ref(x) for x in r.rows),
                  "compared": r in compared, "notes": r.notes} for r in runs],
        "accuracy": accuracy,
        "macro_accuracy": macro_acc,
        "best_by_language": best_by_lang,
        "accuracy_difference": acc_diff,
        "reward_differences": {"kind": reward_kind, "runs": diff_summary},
        "shift": {"baseline": ctx["baseline_name"], "target": ctx["target_name"], "kind": reward_kind,
                  "grid": shift, "density": shift_density, "vs_baseline": shift_vs_baseline},
        "bleu": {"file": str(bleu_path) if bleu_path else None, "source": bleu_reason, "languages": bleu},
        "correlation": {"grid": correlation, "density": correlation_density, "mean": correlation_mean},
        "training": {"curves": {r.name: r.curve for r in runs if r.curve}, "summary": curve_summaries},
        "alpha_sweep": sweep,
        "alpha_differences": alpha_diffs,
        "rrm_orientation": orientation,
        "tokenization": {"runs": tokenization, "tokens_per_char": tpc, "tests": tok_test},
        "against_paper": verdicts,
        "plots": {},
    }
    results = _jsonable(results)
    plot_files: dict[str, Path] = {}
    if plots:
        from xlpo.eval.plots import make_plots

        diffs_by_run = {r.name: reward_differences(r.rows, reward_kind) for r in compared
                        if reward_kind != "implicit" or any(_has_ref(x) for x in r.rows)}
        plot_files = make_plots(results, diffs_by_run, out / "plots")
        results["plots"] = {k: str(v.relative_to(out)) for k, v in plot_files.items()}
    write_json(out / "results.json", results)
    from xlpo.eval.report import write_reports

    write_reports(results, out, plot_files)
    return results
