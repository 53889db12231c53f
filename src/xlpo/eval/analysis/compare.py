"""Method comparisons whose 95% intervals cover both training seeds and evaluation pairs.

A method's runs with different training seeds are replicates (see `groups`). A difference
between two methods varies with the seeds (the pilot of issue 17: CAPO - DPO was +16 points
under one seed and -2 under another, each interval over pairs excluding zero) and with the
pairs. The interval adds the two sources: the between-seed variance of each side's per-seed
statistic (divided by its number of seeds) and the variance over pairs of the seed-averaged
difference (paired: every run scored the same pairs), with a Welch-Satterthwaite t quantile.

The seed variance uses all the seed information a study has (issue 23): for each statistic (a
language's accuracy, the macro or pooled average, a KDE-weighted mean) the between-seed variances
of every trained group with two seeds or more are pooled, weighted by their degrees of freedom,
as the seed random effect of a mixed model `correct ~ method + (1|pair) + (1|method:seed)` does.
With two seeds per method that turns one degree of freedom per side into one per method of the
study. A side with few seeds (fewer than OWN_MIN_SEEDS) takes the larger of its own variance and
the pooled one, so a method whose seeds spread more than the others' is not narrowed by them, with
the pool's degrees of freedom; a side with more seeds keeps its own estimate and degrees of
freedom, which then hold on their own (and protect it from a pool of calmer methods). A
language's pooled variance is not taken below the languages' average (`language_floor`).
Intervals of accuracy differences are cut to [-1, 1], the range a difference of two accuracies can
take (which never lowers coverage). A trained side with one seed has no estimate of its own and its
comparisons are "not established"; an untrained side (the base model) has no seed variation. The
seed part also counts the within-seed pair noise that the pair part counts, which keeps the
interval on the conservative side. tests/test_analysis_null.py checks coverage and error rates by
simulation in the designs the project runs (docs/analysis.md).
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


EQUIVALENCE_MARGIN = 0.03  # "equal" means within 3 points of accuracy (the margin issue 24 fixed before its run)
EQUIVALENCE_LEVEL = 1 - 2 * (1 - CI_LEVEL)  # two one-sided tests at 5% each: the 90% interval


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
    feasible: tuple[float, float] | None = None  # the range the difference can take (accuracies: [-1, 1])

    def bounds(self, level: float = CI_LEVEL) -> tuple[float | None, float | None]:
        """The two-sided interval at `level` (Student t with the Welch-Satterthwaite degrees of freedom), cut to
        the feasible range."""
        if self.se is None:
            return None, None
        half = float(stdtrit(self.df, 0.5 + level / 2)) * self.se if self.se > 0 else 0.0
        lo, hi = self.diff - half, self.diff + half
        if self.feasible is not None:
            lo, hi = max(lo, self.feasible[0]), min(hi, self.feasible[1])
        return lo, hi

    @cached_property
    def _ci(self) -> tuple[float | None, float | None]:
        return self.bounds()

    @cached_property
    def _ci_equivalence(self) -> tuple[float | None, float | None]:
        return self.bounds(EQUIVALENCE_LEVEL)

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

    def equal_within(self, margin: float = EQUIVALENCE_MARGIN) -> bool:
        """Equivalence by two one-sided tests at 5% each (TOST): the 90% interval lies inside (-margin, +margin).
        Never for an underpowered or single-seed comparison, whose interval does not cover what it must."""
        lo, hi = self._ci_equivalence
        return self.status not in ("underpowered", "not established") and -margin < lo and hi < margin

    def to_dict(self) -> dict[str, Any]:
        lo90, hi90 = self._ci_equivalence
        return {"diff": self.diff, "lo": self.lo, "hi": self.hi, "se": self.se, "df": self.df, "n": self.n,
                "seeds": list(self.seeds), "seed_sd": list(self.seed_sd), "covers_seeds": self.covers_seeds,
                "status": self.status, "equivalence": {"margin": EQUIVALENCE_MARGIN, "lo90": lo90, "hi90": hi90,
                                                        "equal": self.equal_within()}}


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
    if status == "includes 0" and (d.get("equivalence") or {}).get("equal"):
        return f"{text}, equal within ±{d['equivalence']['margin'] * scale:g}{unit}"
    return f"{text}, not established" if status in ("not established", "includes 0") else text


# ---------------------------------------------------------------------------------------------
# the interval
# ---------------------------------------------------------------------------------------------

Pooled = tuple[float, float] | None  # (between-seed variance, degrees of freedom) of one statistic; None: no pool
OWN_MIN_SEEDS = 4  # from this many seeds on, a group's own seed variance (3+ degrees of freedom) stands alone
ACCURACY_RANGE = (-1.0, 1.0)  # what a difference of two accuracies can be


@dataclass(frozen=True)
class SeedPool:
    """Each trained group's per-pair values, one row per seed ((seeds, n), groups with two seeds or more), on
    the pairs they all scored, and those pairs' languages: what a statistic's seed variance is pooled from."""

    values: tuple[np.ndarray, ...]
    langs: np.ndarray

    @classmethod
    def of(cls, arrays: Sequence[np.ndarray], langs: np.ndarray) -> SeedPool | None:
        replicated = tuple(a for a in arrays if a.shape[0] > 1)
        return cls(replicated, langs) if replicated and langs.size else None

    def variance(self, statistic: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Pooled:
        """The between-seed variance of `statistic(values, langs)` (one value per seed), pooled over the groups
        with their k - 1 degrees of freedom as weights: (variance, sum of k - 1)."""
        df = sum(v.shape[0] - 1 for v in self.values)
        total = sum((v.shape[0] - 1) * float(np.var(statistic(v, self.langs), ddof=1)) for v in self.values)
        return total / df, float(df)

    def mean_variance(self, weights: Mapping[str, float]) -> Pooled:
        """`variance` of the `weights`-weighted mean over languages of the per-pair values; None when the pool
        lacks one of the languages."""
        names = list(map(str, np.unique(self.langs)))
        if set(weights) - set(names):
            return None
        onehot = (self.langs[:, None] == np.array(names)[None, :]).astype(float)
        w = np.array([weights.get(lang, 0.0) for lang in names]) / onehot.sum(axis=0)
        return self.variance(lambda v, langs: v @ (onehot @ w))


def language_floor(per_language: Sequence[Pooled]) -> Pooled:
    """The pooled seed variance of a per-language statistic averaged over the languages, with all their degrees of
    freedom: what one language's variance is not taken below. From two seeds a language's estimate is often near
    zero by chance, which let "contradicts" fire at the Bonferroni tail of the every-language claims."""
    known = [p for p in per_language if p is not None]
    return (float(np.mean([v for v, _ in known])), float(sum(df for _, df in known))) if known else None


def floored(pooled: Pooled, floor: Pooled) -> Pooled:
    """`pooled`, or `floor` where the floor's variance is larger."""
    return floor if pooled is None or (floor is not None and floor[0] > pooled[0]) else pooled


def combine(diff: float, per_seed: tuple[np.ndarray, np.ndarray], trained: tuple[bool, bool],
            pair_var: float | None, pair_df: float, n: int, pooled: Pooled = None,
            feasible: tuple[float, float] | None = None) -> Difference:
    """The seed-and-pair interval from each side's per-seed statistics and the pair variance of the
    seed-averaged difference (Welch-Satterthwaite degrees of freedom). With a pooled seed variance, a side with
    fewer than OWN_MIN_SEEDS seeds takes the larger of its own variance and the pool's, with the pool's degrees
    of freedom; a side with more keeps its own (a method whose seeds spread more than the study's others is
    then judged by its own spread with its own degrees of freedom)."""
    parts, sds, covers = [], [], True
    for stats, is_trained in zip(per_seed, trained):
        k = len(stats)
        if not is_trained or k < 2:  # the untrained model gives the same scores under every seed
            sds.append(None)
            covers = covers and not is_trained
            continue
        var, df = float(np.var(stats, ddof=1)), float(k - 1)
        sds.append(math.sqrt(var))
        if pooled is not None and k < OWN_MIN_SEEDS:
            var, df = max(var, pooled[0]), pooled[1]
        parts.append((var / k, df))
    seeds = (len(per_seed[0]), len(per_seed[1]))
    if pair_var is None:
        return Difference(diff, None, math.inf, n, seeds, (sds[0], sds[1]), covers, feasible)
    parts.append((pair_var, max(pair_df, 1.0)))
    total = sum(v for v, _ in parts)
    denom = sum(v * v / d for v, d in parts)
    df = total * total / denom if denom > 0 else math.inf
    return Difference(diff, math.sqrt(total), df, n, seeds, (sds[0], sds[1]), covers, feasible)


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
              trained: tuple[bool, bool], pooled: Pooled = None,
              feasible: tuple[float, float] | None = None) -> Difference:
    """The difference of the languages' means weighted by `weights` (summing to 1), with a stratified pair variance."""
    per_seed = (t_lang @ weights, b_lang @ weights)
    pair_var = float(np.sum(weights * weights * within / counts))
    return combine(float(per_seed[0].mean() - per_seed[1].mean()), per_seed, trained, pair_var,
                   float(counts.sum() - counts.size), int(counts.sum()), pooled, feasible)


def _own_pool(target: np.ndarray, baseline: np.ndarray, langs: np.ndarray, trained: tuple[bool, bool]) -> SeedPool | None:
    """Without a study's pool, the seed variance is pooled over the two compared groups."""
    return SeedPool.of([a for a, t in zip((target, baseline), trained) if t], langs)


def mean_difference(target: np.ndarray, baseline: np.ndarray, langs: np.ndarray, trained: tuple[bool, bool],
                    macro: bool = False, pool: SeedPool | None = None,
                    feasible: tuple[float, float] | None = None, floor: Pooled = None) -> Difference:
    """Difference of means of per-pair values: `target` (k_t, n) and `baseline` (k_b, n) hold one row per
    seed on the same n pairs. Pooled (each pair weighs 1/n) or macro (each language weighs 1/L); the pair
    variance is the stratified variance of the weighted mean of the per-pair seed-averaged differences. The
    seed variance is pooled over `pool` (default: the two sides) and not taken below `floor`."""
    names, counts, t_lang, b_lang, within = _by_language(target, baseline, langs)
    weights = np.full(names.size, 1.0 / names.size) if macro else counts / counts.sum()
    pool = pool or _own_pool(target, baseline, langs, trained)
    pooled = pool.mean_variance(dict(zip(map(str, names), weights))) if pool else None
    return _weighted(t_lang, b_lang, within, counts, weights, trained, floored(pooled, floor), feasible)


def statistic_difference(target: np.ndarray, baseline: np.ndarray, langs: np.ndarray, trained: tuple[bool, bool],
                         statistic: Callable[[np.ndarray], np.ndarray], n_boot: int,
                         rng: np.random.Generator, pooled: Pooled = None) -> Difference:
    """Difference of any per-run statistic (`statistic` maps (B, n) samples to B values), with the pair
    variance from a paired bootstrap stratified by language (`n_boot` resamples; 0: no interval)."""
    per_seed = (statistic(target), statistic(baseline))
    diff = float(per_seed[0].mean() - per_seed[1].mean())
    strata = np.unique(langs)
    if n_boot == 0:
        return combine(diff, per_seed, trained, None, 0, langs.size, pooled)
    idx = np.concatenate([rng.choice(np.flatnonzero(langs == lang), size=(n_boot, int((langs == lang).sum())))
                          for lang in strata], axis=1)
    boot = (np.mean([statistic(row[idx]) for row in target], axis=0)
            - np.mean([statistic(row[idx]) for row in baseline], axis=0))
    return combine(diff, per_seed, trained, float(boot.var(ddof=1)), langs.size - strata.size, langs.size, pooled)


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


def seed_pool(groups: Sequence[Group], values: Callable[[Sequence[Mapping]], np.ndarray]) -> SeedPool | None:
    """The pool of a study's trained groups with two seeds or more, on the pairs they all scored."""
    members = [g for g in groups if g.trained and len(g.runs) > 1]
    return SeedPool.of(*aligned(members, values)) if members else None


class SeedPools:
    """A study's seed pools, one per kind of per-pair value (an accuracy definition, a reward margin), built once."""

    def __init__(self, groups: Sequence[Group]):
        self.groups = list(groups)
        self._cache: dict[tuple[str, str], SeedPool | None] = {}

    def accuracy(self, definition: str) -> SeedPool | None:
        key = ("accuracy", definition)
        if key not in self._cache:
            self._cache[key] = seed_pool(self.groups, lambda rows: pair_correct(rows, definition))
        return self._cache[key]

    def margins(self, kind: str) -> SeedPool | None:
        key = ("margins", kind)
        if key not in self._cache:
            self._cache[key] = seed_pool(self.groups, lambda rows: pair_margins(rows, kind))
        return self._cache[key]


def compare_means(target: np.ndarray, baseline: np.ndarray, langs: np.ndarray, trained: tuple[bool, bool],
                  labels: tuple[str, str], measure: str, pool: SeedPool | None = None,
                  feasible: tuple[float, float] | None = ACCURACY_RANGE) -> Comparison:
    """Per language, pooled and macro differences of the mean of per-pair values (accuracy: 0/1), each with the
    seed variance pooled over `pool` (default: the two compared groups)."""
    out = Comparison(labels[0], labels[1], measure)
    if langs.size == 0:
        return out
    pool = pool or _own_pool(target, baseline, langs, trained)
    names, counts, t_lang, b_lang, within = _by_language(target, baseline, langs)
    names = list(map(str, names))

    def part(weights: np.ndarray, select: slice = slice(None), floor: Pooled = None) -> Difference:
        pooled = pool.mean_variance(dict(zip(names[select], weights))) if pool else None
        return _weighted(t_lang[:, select], b_lang[:, select], within[select], counts[select], weights, trained,
                         floored(pooled, floor), feasible)

    floor = language_floor([pool.mean_variance({lang: 1.0}) for lang in names]) if pool else None
    for j, lang in enumerate(names):
        out.languages[lang] = part(np.ones(1), slice(j, j + 1), floor)
        out.levels[lang] = (float(b_lang[:, j].mean()), float(t_lang[:, j].mean()))
    out.pooled = part(counts / counts.sum())
    out.macro = part(np.full(len(names), 1.0 / len(names)))
    out.levels[ALL] = (float(baseline.mean()), float(target.mean()))
    return out


def compare_shift(target: np.ndarray, baseline: np.ndarray, langs: np.ndarray, trained: tuple[bool, bool],
                  labels: tuple[str, str], measure: str, method: str = "grid", n_boot: int = 1000,
                  seed: int = 0, pool: SeedPool | None = None) -> Comparison:
    """Per language and pooled: the KDE-weighted mean (`method` "grid" or "density", see kde) or the plain
    mean ("mean") of per-pair reward differences, target minus baseline, averaged over seeds."""
    out = Comparison(labels[0], labels[1], measure)
    stat = (lambda x: x.mean(axis=1)) if method == "mean" else (lambda x: kde_weighted_means(x, method))
    pool = pool or _own_pool(target, baseline, langs, trained)
    names = list(map(str, np.unique(langs)))

    def pooled_of(lang: str) -> Pooled:
        return pool.variance(lambda v, pl: stat(v[:, pl == lang] if lang != ALL else v)) if pool else None

    by_lang = {lang: pooled_of(lang) for lang in names}
    floor = language_floor(list(by_lang.values()))
    for lang in [*names, ALL] if langs.size else []:
        mask = langs == lang if lang != ALL else np.ones(langs.size, bool)
        tv, bv = target[:, mask], baseline[:, mask]
        pooled = floored(by_lang[lang], floor) if lang != ALL else pooled_of(ALL)
        if method == "mean":
            out.languages[lang] = mean_difference(tv, bv, langs[mask], trained, pool=_restricted(pool, lang),
                                                  floor=floor if lang != ALL else None)
        else:
            out.languages[lang] = statistic_difference(tv, bv, langs[mask], trained, stat, n_boot,
                                                       rng_for(seed, lang, measure, "shift"), pooled)
        out.levels[lang] = (float(stat(bv).mean()), float(stat(tv).mean()))
    out.pooled = out.languages.pop(ALL, None)
    return out


def _restricted(pool: SeedPool | None, lang: str) -> SeedPool | None:
    """The pool on one language's pairs (`ALL`: all of them)."""
    if pool is None or lang == ALL:
        return pool
    mask = pool.langs == lang
    return SeedPool.of([v[:, mask] for v in pool.values], pool.langs[mask])


def accuracy_comparison(target: Group, baseline: Group, definition: str = "sum",
                        pool: SeedPool | None = None) -> Comparison:
    """Target minus baseline reward accuracy (`definition`: sum, mean or implicit) over seeds and pairs; the seed
    variance pooled over `pool` (a study's `SeedPools.accuracy(definition)`; default: the two groups)."""
    (t, b), langs = aligned([target, baseline], lambda rows: pair_correct(rows, definition))
    return compare_means(t, b, langs, (target.trained, baseline.trained), (target.label, baseline.label),
                         f"accuracy {definition}", pool)


def shift_comparison(target: Group, baseline: Group, kind: str = "sum", method: str = "grid", n_boot: int = 1000,
                     seed: int = 0, pool: SeedPool | None = None) -> Comparison:
    """The shift of the reward-difference distribution (`kind`: sum, mean or implicit margins), target minus
    baseline, per language and over all pairs (see `compare_shift`)."""
    (t, b), langs = aligned([target, baseline], lambda rows: pair_margins(rows, kind))
    return compare_shift(t, b, langs, (target.trained, baseline.trained), (target.label, baseline.label),
                         f"shift {method} {kind}", method, n_boot, seed, pool)
