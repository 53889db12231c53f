"""Method comparisons whose 95% intervals cover both training seeds and evaluation pairs.

A method's runs with different training seeds are replicates (see `groups`). A difference
between two methods varies with the seeds (the pilot of issue 17: CAPO - DPO was +16 points
under one seed and -2 under another, each interval over pairs excluding zero) and with the
pairs. The interval here adds the two sources: the between-seed variance of each side's
per-seed statistic (divided by its number of seeds) and the variance over pairs of the
seed-averaged difference (paired: every run scored the same pairs), with a Welch-Satterthwaite
t quantile. With two seeds the seed part has one degree of freedom, so the interval is wide;
that is what two seeds show. A language's seed variance is not taken below the method's average
over its languages (a pooled estimate with L(k - 1) degrees of freedom): one language's estimate
from two seeds is often near zero by chance, which made "contradicts" fire at the Bonferroni
tail in the simulations. A trained side with one seed has no seed variance to estimate: its
interval covers pairs only and the comparison is "not established". An untrained side (the base
model) has no seed variation. Both parts count the within-seed pair noise, which makes the
per-language intervals slightly conservative; the macro and pooled ones, whose seed variance
has k - 1 degrees of freedom, are slightly anti-conservative with two seeds (one-sided rates up
to 3.6% for 2.5%). tests/test_analysis_null.py measures both by simulation (docs/analysis.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from scipy.special import stdtrit

from xlpo.eval.analysis.accuracy import ALL, CI_LEVEL, MIN_PAIRS, lang_of, pair_correct, pair_margins, rng_for
from xlpo.eval.analysis.groups import Group
from xlpo.eval.analysis.kde import kde_weighted_means


@dataclass(frozen=True)
class Difference:
    """Target minus baseline of one statistic, with the pieces of its interval."""

    diff: float
    se: float | None  # None: no interval (no resamples, or nothing to estimate it from)
    df: float
    n: int  # evaluation pairs behind it
    seeds: tuple[int, int]  # runs on the target side, on the baseline side
    seed_sd: tuple[float | None, float | None]  # between-seed sd of each side's statistic (None: not estimable)
    covers_seeds: bool  # False: a trained side has a single seed, so the interval covers pairs only

    def bounds(self, level: float = CI_LEVEL) -> tuple[float | None, float | None]:
        """The two-sided interval at `level` (Student t with the Welch-Satterthwaite degrees of freedom)."""
        if self.se is None:
            return None, None
        half = float(stdtrit(self.df, 0.5 + level / 2)) * self.se if self.se > 0 else 0.0
        return self.diff - half, self.diff + half

    @cached_property
    def _ci(self) -> tuple[float | None, float | None]:
        return self.bounds()

    @property
    def lo(self) -> float | None:
        return self._ci[0]

    @property
    def hi(self) -> float | None:
        return self._ci[1]

    @property
    def status(self) -> str:
        """"underpowered", "not established" (one seed, or no interval), "above 0", "below 0" or "includes 0"."""
        if self.n < MIN_PAIRS:
            return "underpowered"
        lo, hi = self._ci
        if not self.covers_seeds or lo is None:
            return "not established"
        return "above 0" if lo > 0 else "below 0" if hi < 0 else "includes 0"

    def to_dict(self) -> dict[str, Any]:
        return {"diff": self.diff, "lo": self.lo, "hi": self.hi, "se": self.se, "df": self.df, "n": self.n,
                "seeds": list(self.seeds), "seed_sd": list(self.seed_sd), "covers_seeds": self.covers_seeds,
                "status": self.status}


@dataclass
class Comparison:
    """A target group against a baseline group on the pairs every run of both scored."""

    target: str
    baseline: str
    measure: str  # e.g. "accuracy sum", "shift grid sum"
    languages: dict[str, Difference] = field(default_factory=dict)
    pooled: Difference | None = None  # all pairs, stratified by language
    macro: Difference | None = None  # unweighted mean over languages (the paper's "on average")
    levels: dict[str, tuple[float, float]] = field(default_factory=dict)  # lang -> (baseline, target) seed means

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "baseline": self.baseline, "measure": self.measure,
                "languages": {k: v.to_dict() for k, v in self.languages.items()},
                "all": self.pooled.to_dict() if self.pooled else None,
                "macro": self.macro.to_dict() if self.macro else None,
                "levels": {k: {"baseline": b, "target": t} for k, (b, t) in self.levels.items()}}


def format_difference(d: Mapping[str, Any] | None, scale: float = 100.0, unit: str = " points", digits: int = 1,
                      words: bool = False, ci: str = "95% CI ") -> str:
    """"+7.0 points [95% CI -3.1, +17.2]" from `Difference.to_dict()`; with `words`, the plain status after it:
    "not established" where the interval includes 0 or covers one seed only, "underpowered" below MIN_PAIRS."""
    if not d:
        return "n/a"
    text = f"{d['diff'] * scale:+.{digits}f}{unit}"
    if d.get("lo") is not None:
        text += f" [{ci}{d['lo'] * scale:+.{digits}f}, {d['hi'] * scale:+.{digits}f}]"
    if not words:
        return text
    status = d.get("status")
    if status == "underpowered":
        return f"{text}, underpowered ({d['n']} pairs)"
    if status == "not established" and not d.get("covers_seeds", True):
        return f"{text}, not established (one training seed: the interval covers pairs only)"
    return f"{text}, not established" if status in ("not established", "includes 0") else text


# ---------------------------------------------------------------------------------------------
# the interval
# ---------------------------------------------------------------------------------------------

Floor = tuple[float, float] | None  # (variance, degrees of freedom) that a side's seed variance is not taken below


def pooled_seed_variance(per_language: np.ndarray) -> Floor:
    """A method's between-seed variance of a per-language statistic ((seeds, L) in), averaged over the
    languages: (variance, L * (seeds - 1) degrees of freedom); None with one seed."""
    k, n_langs = per_language.shape
    return (float(per_language.var(axis=0, ddof=1).mean()), float(n_langs * (k - 1))) if k > 1 else None


def combine(diff: float, per_seed: tuple[np.ndarray, np.ndarray], trained: tuple[bool, bool],
            pair_var: float | None, pair_df: float, n: int, floors: tuple[Floor, Floor] = (None, None)) -> Difference:
    """The seed-and-pair interval from each side's per-seed statistics and the pair variance of the
    seed-averaged difference (Welch-Satterthwaite degrees of freedom). A side's seed variance is not
    taken below its floor (`pooled_seed_variance` of its languages), with the floor's degrees of freedom."""
    parts, sds, covers = [], [], True
    for stats, is_trained, floor in zip(per_seed, trained, floors):
        k = len(stats)
        if not is_trained or k < 2:  # the untrained model gives the same scores under every seed
            sds.append(None)
            covers = covers and not is_trained
            continue
        var, df = float(np.var(stats, ddof=1)), float(k - 1)
        sds.append(math.sqrt(var))
        if floor is not None and floor[0] > var:
            var, df = floor
        parts.append((var / k, df))
    seeds = (len(per_seed[0]), len(per_seed[1]))
    if pair_var is None:
        return Difference(diff, None, math.inf, n, seeds, (sds[0], sds[1]), covers)
    parts.append((pair_var, max(pair_df, 1.0)))
    total = sum(v for v, _ in parts)
    denom = sum(v * v / d for v, d in parts)
    df = total * total / denom if denom > 0 else math.inf
    return Difference(diff, math.sqrt(total), df, n, seeds, (sds[0], sds[1]), covers)


def _by_language(target: np.ndarray, baseline: np.ndarray, langs: np.ndarray):
    """Languages, pairs per language, per-seed means per language of each side (seeds, L), and the variance
    within each language of the per-pair seed-averaged differences."""
    names, stratum, counts = np.unique(langs, return_inverse=True, return_counts=True)
    onehot = np.zeros((langs.size, names.size))
    onehot[np.arange(langs.size), stratum] = 1.0
    d = target.mean(axis=0) - baseline.mean(axis=0)
    sums, squares = d @ onehot, (d * d) @ onehot
    within = np.where(counts > 1, (squares - sums * sums / counts) / np.maximum(counts - 1, 1), 0.0)
    return names, counts, target @ onehot / counts, baseline @ onehot / counts, np.maximum(within, 0.0)


def _weighted(t_lang: np.ndarray, b_lang: np.ndarray, within: np.ndarray, counts: np.ndarray, weights: np.ndarray,
              trained: tuple[bool, bool], floors: tuple[Floor, Floor] = (None, None)) -> Difference:
    """The difference of the languages' means weighted by `weights` (summing to 1), with a stratified pair variance."""
    per_seed = (t_lang @ weights, b_lang @ weights)
    pair_var = float(np.sum(weights * weights * within / counts))
    return combine(float(per_seed[0].mean() - per_seed[1].mean()), per_seed, trained, pair_var,
                   float(counts.sum() - counts.size), int(counts.sum()), floors)


def mean_difference(target: np.ndarray, baseline: np.ndarray, langs: np.ndarray, trained: tuple[bool, bool],
                    macro: bool = False, floors: tuple[Floor, Floor] = (None, None)) -> Difference:
    """Difference of means of per-pair values: `target` (k_t, n) and `baseline` (k_b, n) hold one row per
    seed on the same n pairs. Pooled (each pair weighs 1/n) or macro (each language weighs 1/L); the pair
    variance is the stratified variance of the weighted mean of the per-pair seed-averaged differences."""
    names, counts, t_lang, b_lang, within = _by_language(target, baseline, langs)
    weights = np.full(names.size, 1.0 / names.size) if macro else counts / counts.sum()
    return _weighted(t_lang, b_lang, within, counts, weights, trained, floors)


def statistic_difference(target: np.ndarray, baseline: np.ndarray, langs: np.ndarray, trained: tuple[bool, bool],
                         statistic: Callable[[np.ndarray], np.ndarray], n_boot: int,
                         rng: np.random.Generator, floors: tuple[Floor, Floor] = (None, None)) -> Difference:
    """Difference of any per-run statistic (`statistic` maps (B, n) samples to B values), with the pair
    variance from a paired bootstrap stratified by language (`n_boot` resamples; 0: no interval)."""
    per_seed = (statistic(target), statistic(baseline))
    diff = float(per_seed[0].mean() - per_seed[1].mean())
    strata = np.unique(langs)
    if n_boot == 0:
        return combine(diff, per_seed, trained, None, 0, langs.size, floors)
    idx = np.concatenate([rng.choice(np.flatnonzero(langs == lang), size=(n_boot, int((langs == lang).sum())))
                          for lang in strata], axis=1)
    boot = (np.mean([statistic(row[idx]) for row in target], axis=0)
            - np.mean([statistic(row[idx]) for row in baseline], axis=0))
    return combine(diff, per_seed, trained, float(boot.var(ddof=1)), langs.size - strata.size, langs.size, floors)


# ---------------------------------------------------------------------------------------------
# groups of scored runs
# ---------------------------------------------------------------------------------------------

def aligned(groups: Sequence[Group], values: Callable[[Sequence[Mapping]], np.ndarray]
            ) -> tuple[list[np.ndarray], np.ndarray]:
    """Per group a (seeds, n) array of per-pair `values` on the pairs every run of every group scored
    (matched by id, sorted by language then id; pairs undefined in any run dropped), and their languages."""
    runs = [r for g in groups for r in g.runs]
    common = set.intersection(*({row["id"] for row in r.rows} for r in runs))
    first = {row["id"]: row for row in runs[0].rows if row["id"] in common}
    ids = sorted(common, key=lambda i: (lang_of(first[i]), i))
    arrays = []
    for g in groups:
        rows = []
        for r in g.runs:
            by_id = {row["id"]: row for row in r.rows}
            rows.append(values([by_id[i] for i in ids]))
        arrays.append(np.array(rows).reshape(len(g.runs), len(ids)))
    ok = np.all([~np.isnan(a).any(axis=0) for a in arrays], axis=0) if ids else np.zeros(0, bool)
    langs = np.array([lang_of(first[i]) for i in ids])[ok] if ids else np.array([], dtype=str)
    return [a[:, ok] for a in arrays], langs


def compare_means(target: np.ndarray, baseline: np.ndarray, langs: np.ndarray, trained: tuple[bool, bool],
                  labels: tuple[str, str], measure: str) -> Comparison:
    """Per language, pooled and macro differences of the mean of per-pair values (accuracy: 0/1)."""
    out = Comparison(labels[0], labels[1], measure)
    if langs.size == 0:
        return out
    names, counts, t_lang, b_lang, within = _by_language(target, baseline, langs)
    one, floors = np.ones(1), (pooled_seed_variance(t_lang), pooled_seed_variance(b_lang))
    for j, lang in enumerate(map(str, names)):
        out.languages[lang] = _weighted(t_lang[:, j:j + 1], b_lang[:, j:j + 1], within[j:j + 1], counts[j:j + 1],
                                        one, trained, floors)
        out.levels[lang] = (float(b_lang[:, j].mean()), float(t_lang[:, j].mean()))
    out.pooled = _weighted(t_lang, b_lang, within, counts, counts / counts.sum(), trained)
    out.macro = _weighted(t_lang, b_lang, within, counts, np.full(names.size, 1.0 / names.size), trained)
    out.levels[ALL] = (float(baseline.mean()), float(target.mean()))
    return out


def compare_shift(target: np.ndarray, baseline: np.ndarray, langs: np.ndarray, trained: tuple[bool, bool],
                  labels: tuple[str, str], measure: str, method: str = "grid", n_boot: int = 1000,
                  seed: int = 0) -> Comparison:
    """Per language and pooled: the KDE-weighted mean (`method` "grid" or "density", see kde) or the plain
    mean ("mean") of per-pair reward differences, target minus baseline, averaged over seeds."""
    out = Comparison(labels[0], labels[1], measure)
    stat = (lambda x: x.mean(axis=1)) if method == "mean" else (lambda x: kde_weighted_means(x, method))
    names = list(map(str, np.unique(langs)))
    levels = {lang: (stat(baseline[:, langs == lang]), stat(target[:, langs == lang])) for lang in names}
    floors = (pooled_seed_variance(np.array([levels[k][1] for k in names]).T),
              pooled_seed_variance(np.array([levels[k][0] for k in names]).T)) if names else (None, None)
    for lang in [*names, ALL] if langs.size else []:
        mask = langs == lang if lang != ALL else np.ones(langs.size, bool)
        tv, bv = target[:, mask], baseline[:, mask]
        floor = floors if lang != ALL else (None, None)
        out.languages[lang] = (mean_difference(tv, bv, langs[mask], trained, floors=floor) if method == "mean" else
                               statistic_difference(tv, bv, langs[mask], trained, stat, n_boot,
                                                    rng_for(seed, lang, measure, "shift"), floor))
        out.levels[lang] = (float(stat(bv).mean()), float(stat(tv).mean()))
    out.pooled = out.languages.pop(ALL, None)
    return out


def accuracy_comparison(target: Group, baseline: Group, definition: str = "sum") -> Comparison:
    """Target minus baseline reward accuracy (`definition`: sum, mean or implicit) over seeds and pairs."""
    (t, b), langs = aligned([target, baseline], lambda rows: pair_correct(rows, definition))
    return compare_means(t, b, langs, (target.trained, baseline.trained), (target.label, baseline.label),
                         f"accuracy {definition}")


def shift_comparison(target: Group, baseline: Group, kind: str = "sum", method: str = "grid", n_boot: int = 1000,
                     seed: int = 0) -> Comparison:
    """The shift of the reward-difference distribution (`kind`: sum, mean or implicit margins), target minus
    baseline, per language and over all pairs (see `compare_shift`)."""
    (t, b), langs = aligned([target, baseline], lambda rows: pair_margins(rows, kind))
    return compare_shift(t, b, langs, (target.trained, baseline.trained), (target.label, baseline.label),
                         f"shift {method} {kind}", method, n_boot, seed)
