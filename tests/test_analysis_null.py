"""Simulations: each verdict's error rate when its claim is false, and the coverage of the seed-and-pair interval.

The claims' world is sized on issue 17's pilot: 8 languages x 100 evaluation pairs, methods
trained with two seeds, and a seed-to-seed spread of per-seed, per-language accuracy of about
4.7 points (the pooled spread of the pilot's eight seed pairs; its largest gap, 16 points, is
the "wide" setting). A pair's margin under a run is
    effect(method, language) + pair difficulty + method x pair + seed (overall and x language) + noise,
and the pair counts as correct when its margin is above 0. The claims' verdict functions are the
ones `analyze` uses, fed with the comparisons `compare` computes from these arrays, the seed
variance pooled over every simulated trained group as in a study.

Coverage is checked in the designs the project runs (`DESIGNS`: the committed study's pairs per
language and seven methods with two seeds, `make demo`'s two methods with two seeds, the decisive
study's eight seeds), with equal and with unequal seed spreads (`UNEQUAL`: one method's spread
twice another's, and one language's twice another's), for every interval the headline reports.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import first_fast
from scipy.optimize import brentq
from scipy.stats import norm

from xlpo.eval.analysis.compare import EQUIVALENCE_MARGIN, SeedPool, compare_means, compare_shift, mean_difference
from xlpo.eval.analysis.correlation import pearson
from xlpo.eval.analysis.findings import Orientation
from xlpo.eval.analysis.groups import Group
from xlpo.eval.analysis.paper import (
    claim_alpha_drop,
    claim_average_accuracy,
    claim_best_everywhere,
    claim_bleu_correlation,
    claim_rrm_orientation,
    claim_shift_everywhere,
    claim_tokenization,
    claim_worse_in_en,
)
from xlpo.eval.analysis.runs import ScoredRun

LANGS = ("en", "de", "zh", "ar", "it", "nl", "tr", "vi")
PAIRS = 100
SD_PAIR, SD_METHOD, SD_NOISE = 2.0, 1.0, 0.5
SEED_SD = 0.23  # latent seed effect giving the pilot's ~4.7-point spread (checked below)
WIDE_SEED_SD = 0.62  # ~11 points: the pilot's largest gap (CAPO per-token de, 65 vs 49)
BLEU = dict(zip(LANGS, (90.0, 57.6, 50.9, 40.0, 60.0, 55.0, 45.0, 35.0)))
TOKENS_PER_CHAR = dict(zip(LANGS, (0.25, 0.3, 0.9, 0.45, 0.28, 0.3, 0.4, 0.42)))
MAX_RATE = 0.05


def simulate(rng, specs, seed_sd=SEED_SD, pairs=PAIRS, langs=LANGS, lang_spread=None, sd_method=SD_METHOD):
    """Margins per group, (seeds, pairs) each, and the pairs' languages. specs: {label: (seeds, trained,
    effect: a number or {lang: number}[, spread: this method's seed sd relative to seed_sd])}; pairs: per
    language, one number or one per language; lang_spread: {lang: relative seed sd}."""
    counts = [pairs] * len(langs) if isinstance(pairs, int) else list(pairs)
    lang_of_pair = np.repeat(np.array(langs), counts)
    difficulty = rng.normal(0, SD_PAIR, lang_of_pair.size)
    lang_sd = np.repeat([(lang_spread or {}).get(lang, 1.0) for lang in langs], counts)
    out = {}
    for label, (k, trained, effect, *spread) in specs.items():
        mu = np.repeat([effect.get(lang, 0.0) if isinstance(effect, dict) else effect for lang in langs], counts)
        margin = mu + difficulty + rng.normal(0, sd_method, lang_of_pair.size) + rng.normal(0, SD_NOISE, (k, mu.size))
        if trained:
            sd = seed_sd * (spread[0] if spread else 1.0) * lang_sd / math.sqrt(2)
            seed = (rng.normal(0, 1, (k, 1)) + np.repeat(rng.normal(0, 1, (k, len(langs))), counts, axis=1)) * sd
            margin = margin + seed
        out[label] = margin
    return out, lang_of_pair


def true_accuracy(effect: float, trained: bool, seed_sd: float = SEED_SD, sd_method: float = SD_METHOD) -> float:
    """Accuracy over the population of pairs (and seeds, for a trained method)."""
    return float(norm.cdf(effect / math.sqrt(SD_PAIR ** 2 + sd_method ** 2 + SD_NOISE ** 2 + trained * seed_sd ** 2)))


def group(label: str, k: int = 2, trained: bool = True, alpha: float | None = None) -> Group:
    """A group for the claim rows (labels, seeds, alpha); the numbers come from the simulated arrays."""
    params = {"alpha": alpha} if alpha is not None else None
    return Group(label, [ScoredRun(f"{label}-s{s}", "capo" if alpha else label if trained else "base", Path("."),
                                   {"seed": s}, [], effective_loss_params=params) for s in range(k)])


def means(t, b, langs, trained=(True, True), labels=("t", "b"), pool=None):
    return compare_means((t > 0).astype(float), (b > 0).astype(float), langs, trained, labels, "accuracy sum", pool)


def study_pool(margins, specs, langs):
    """The seed pool of a simulated study: every trained group's correctness, as `analyze` pools it."""
    return SeedPool.of([(margins[k] > 0).astype(float) for k, spec in specs.items() if spec[1]], langs)


def rates(verdicts: list[str]) -> Counter:
    return Counter({k: v / len(verdicts) for k, v in Counter(verdicts).items()})


# ---------------------------------------------------------------------------------------------
# the simulations (the tests run them briefly; `python tests/test_analysis_null.py` at length)
# ---------------------------------------------------------------------------------------------

def seed_spread(reps, seed_sd, rng) -> float:
    """Between-seed sd (points) of per-language accuracy, estimated from seed pairs as in the pilot."""
    gaps = []
    for _ in range(reps):
        margins, langs = simulate(rng, {"m": (2, True, 0.0)}, seed_sd)
        acc = np.array([[(margins["m"][s, langs == lang] > 0).mean() for lang in LANGS] for s in range(2)])
        gaps += list((acc[0] - acc[1]) * 100)
    return math.sqrt(np.mean(np.square(gaps)) / 2)


def coverage(reps, seeds, seed_sd, rng) -> tuple[float, float]:
    """Coverage of the true accuracy difference by the seed-and-pair interval (per language and macro) and by
    an interval over pairs only (per language), with a true difference of 0.3 latent units."""
    truth = true_accuracy(0.3, True, seed_sd) - true_accuracy(0.0, True, seed_sd)
    hits, pair_only = [], []
    for _ in range(reps):
        m, langs = simulate(rng, {"t": (seeds, True, 0.3), "b": (seeds, True, 0.0)}, seed_sd)
        comp = means(m["t"], m["b"], langs)
        hits += [d.lo <= truth <= d.hi for d in [*comp.languages.values(), comp.macro]]
        t, b = (m["t"] > 0).astype(float), (m["b"] > 0).astype(float)
        for lang in LANGS:
            mask = langs == lang
            d = mean_difference(t[:, mask], b[:, mask], langs[mask], (False, False))  # pairs only
            pair_only.append(d.lo <= truth <= d.hi)
    return float(np.mean(hits)), float(np.mean(pair_only))


# The designs the project runs: languages with their evaluation pairs, and each method's seeds. Effects put
# CAPO 0.2 latent units above the others (DPO+NLL at the base model's level, as it was in the study).
DESIGNS = {
    "study": (("ar", "de", "it", "nl", "tr", "uk", "vi", "zh"), (12, 100, 11, 9, 11, 12, 12, 100),
              {"dpo": 2, "simpo": 2, "dpo_nll": 2, "capo": 2, "capo_inverse": 2, "capo_alpha1": 2, "capo_alpha4": 2}),
    "demo": (("de", "zh"), (80, 80), {"dpo": 2, "capo": 2}),
    "decisive": (("de", "zh"), (300, 300), {"dpo": 8, "capo": 8, "simpo": 3, "capo_inverse": 3}),
}
# Unequal seed spreads: CAPO's twice DPO's (the study's CAPO seeds differed most), the first language's
# twice the last one's.
UNEQUAL_METHODS = {"dpo": 0.7, "capo": 1.4, "capo_alpha1": 1.4}
COMPARISONS = (("capo", "dpo"), ("capo", "base"), ("dpo", "base"))  # what the headline reports


def design_specs(design: str, unequal: bool) -> tuple[tuple, tuple, dict, dict | None]:
    langs, counts, seeds = DESIGNS[design]
    effects = {"capo": 0.5, "dpo_nll": 0.0}
    specs = {"base": (1, False, 0.0)} | {m: (k, True, effects.get(m, 0.3), UNEQUAL_METHODS.get(m, 1.0) if unequal else 1.0)
                                        for m, k in seeds.items()}
    spread = {langs[0]: 1.4, langs[-1]: 0.7} if unequal else None
    return langs, counts, specs, spread


def design_coverage(design: str, reps: int, seed_sd: float, unequal: bool, rng) -> dict[str, float]:
    """Coverage of every headline interval (per language, macro, pooled; CAPO - DPO and each gain over the base
    model) of the true difference, in one of the `DESIGNS`, the seed variance pooled over the study's groups."""
    langs, counts, specs, spread = design_specs(design, unequal)
    sd = {m: seed_sd * (spec[3] if spec[1] else 0.0) for m, spec in specs.items()}
    truth = {m: np.array([true_accuracy(spec[2], spec[1], sd[m] * (spread or {}).get(lang, 1.0)) for lang in langs])
             for m, spec in specs.items()}
    hits: dict[str, list[bool]] = {}
    for _ in range(reps):
        m, lang_of = simulate(rng, specs, seed_sd, counts, langs, spread)
        pool = study_pool(m, specs, lang_of)
        for t, b in COMPARISONS:
            comp = means(m[t], m[b], lang_of, (specs[t][1], specs[b][1]), (t, b), pool)
            by_lang = dict(zip(langs, truth[t] - truth[b]))
            cells = {f"{t}-{b} {lang}": (comp.languages[lang], by_lang[lang]) for lang in langs}
            cells[f"{t}-{b} macro"] = (comp.macro, float(np.mean(list(by_lang.values()))))
            cells[f"{t}-{b} pooled"] = (comp.pooled, float(np.dot(list(by_lang.values()), counts) / sum(counts)))
            for key, (d, true) in cells.items():
                hits.setdefault(key, []).append(d.lo <= true <= d.hi)
    return {k: float(np.mean(v)) for k, v in hits.items()}


# The decisive study's own world: methods that disagree less on a pair, and seeds that spread less, than the
# pilot's (its macro CAPO - DPO interval was +-2.55 points; this world gives about +-2.65). In the pilot's world
# the interval is too wide (+-4.6) for "equal within 3 points" ever to be said, which would test nothing.
DECISIVE_WORLD = {"seed_sd": 0.12, "sd_method": 0.3}


def equivalence_rate(reps: int, unequal: bool, difference: float, rng, world=DECISIVE_WORLD) -> float:
    """How often CAPO - DPO (macro) is called equal within EQUIVALENCE_MARGIN in the decisive design, with a true
    macro difference of `difference`: at +-EQUIVALENCE_MARGIN, the false-equivalence rate (at most 5%)."""
    langs, counts, specs, spread = design_specs("decisive", unequal)

    def macro_truth(spec) -> float:
        sd = world["seed_sd"] * (spec[3] if spec[1] else 0.0)
        return float(np.mean([true_accuracy(spec[2], spec[1], sd * (spread or {}).get(lang, 1.0), world["sd_method"])
                              for lang in langs]))

    def with_effect(e):
        return (*specs["capo"][:2], e, *specs["capo"][3:])

    dpo = macro_truth(specs["dpo"])
    effect = brentq(lambda e: macro_truth(with_effect(e)) - dpo - difference, -3.0, 3.0)
    specs = {**specs, "capo": with_effect(effect)}
    called = []
    for _ in range(reps):
        m, lang_of = simulate(rng, specs, world["seed_sd"], counts, langs, spread, world["sd_method"])
        comp = means(m["capo"], m["dpo"], lang_of, (True, True), ("capo", "dpo"), study_pool(m, specs, lang_of))
        called.append(comp.macro.equal_within())
    return float(np.mean(called))


def shift_coverage(reps, rng, n_boot=100) -> float:
    """The shift's interval in a study of four two-seed methods, the seed variance of the KDE-weighted mean pooled
    over the four as `analyze` does."""
    hits = []
    specs = {"t": (2, True, 0.5), "b": (2, True, 0.0), "c": (2, True, 0.3), "d": (2, True, 0.0)}
    for _ in range(reps):
        m, langs = simulate(rng, specs)
        pool = SeedPool.of(list(m.values()), langs)
        comp = compare_shift(m["t"], m["b"], langs, (True, True), ("t", "b"), "shift grid sum", n_boot=n_boot,
                             seed=int(rng.integers(1 << 30)), pool=pool)
        hits += [d.lo <= 0.5 <= d.hi for d in comp.languages.values()]
    return float(np.mean(hits))


METHODS = {"base": (1, False, 0.0), "dpo": (2, True, 0.0), "simpo": (2, True, 0.0), "dpo_nll": (2, True, 0.0),
           "capo": (2, True, 0.0)}


def accuracy_claims(m, langs):
    """The accuracy claims of one simulated study, as `against_paper` makes them."""
    g = {k: group(k, v[0], v[1]) for k, v in METHODS.items()}
    pool = study_pool(m, METHODS, langs)
    comps = {k: means(m["capo"], m[k], langs, (True, g[k].trained), ("capo", k), pool) for k in METHODS if k != "capo"}
    macro = {k: float((m[k] > 0).mean()) for k in METHODS}
    dpo_acc = {k: float((m["dpo"][:, langs == k] > 0).mean()) for k in LANGS}
    return {
        "average accuracy vs DPO": claim_average_accuracy("capo", "dpo", g["capo"], g["dpo"], {"sum": comps["dpo"]},
                                                          16.0, macro["dpo"]),
        "average accuracy vs DPO+NLL": claim_average_accuracy("capo", "dpo_nll", g["capo"], g["dpo_nll"],
                                                              {"sum": comps["dpo_nll"]}, 33.0, macro["dpo_nll"]),
        "highest in every language but en": claim_best_everywhere("capo", g["capo"], comps, [g[k] for k in comps]),
        "worse than DPO in en": claim_worse_in_en("capo", "dpo", comps["dpo"]),
        "tokenization: baseline accuracy": claim_tokenization("", pearson(TOKENS_PER_CHAR, dpo_acc), False, ""),
        "tokenization: gain": claim_tokenization(
            "", pearson(TOKENS_PER_CHAR, {k: d.diff for k, d in comps["dpo"].languages.items()}), True, ""),
    }


def accuracy_null(reps, rng, seed_sd=SEED_SD) -> dict[str, Counter]:
    """Five equally good methods (the issue's simulation, with seeds): each accuracy claim's verdict rates."""
    verdicts: dict[str, list[str]] = {}
    for _ in range(reps):
        m, langs = simulate(rng, METHODS, seed_sd)
        for name, claim in accuracy_claims(m, langs).items():
            verdicts.setdefault(name, []).append(claim.verdict)
    return {k: rates(v) for k, v in verdicts.items()}


def shift_null(reps, rng, n_boot=40) -> dict[str, Counter]:
    """No shift at all, and BLEU unrelated to the shift."""
    shift, corr = [], []
    for _ in range(reps):
        m, langs = simulate(rng, {"capo": (2, True, 0.0), "dpo": (2, True, 0.0)})
        s = compare_shift(m["capo"], m["dpo"], langs, (True, True), ("capo", "dpo"), "shift grid sum", n_boot=n_boot,
                          seed=int(rng.integers(1 << 30)))
        shift.append(claim_shift_everywhere("capo", "dpo", s).verdict)
        corr.append(claim_bleu_correlation(pearson(BLEU, {k: d.diff for k, d in s.languages.items()}), True).verdict)
    return {"shift to the right in every language": rates(shift), "BLEU correlates negatively with the shift": rates(corr)}


def alpha_null(reps, rng) -> dict[str, Counter]:
    """Every alpha equally good; both RRM orientations equally good."""
    alpha, orient = [], []
    alphas = {"capo-a1": 1.0, "capo": 2.0, "capo-a4": 4.0, "capo-a8": 8.0}
    for _ in range(reps):
        specs = {**{k: (2, True, 0.0) for k in alphas}, "capo-inverse": (2, True, 0.0)}
        m, langs = simulate(rng, specs)
        pool = study_pool(m, specs, langs)
        diffs = {k: means(m[k], m["capo"], langs, labels=(k, "capo"), pool=pool) for k in ("capo-a4", "capo-a8")}
        sweep = [{"alpha": a, "final_loss": None} for a in alphas.values()]
        alpha.append(claim_alpha_drop(sweep, group("capo", alpha=2.0), diffs).verdict)
        o = Orientation(2.0, "capo", "capo-inverse", means(m["capo-inverse"], m["capo"], langs, pool=pool), {})
        orient.append(claim_rrm_orientation("capo", o).verdict)
    return {"accuracy drops for alpha > 2": rates(alpha), "RRM a/b beats b/a": rates(orient)}


def boundary(reps, rng, n_boot=40) -> dict[str, Counter]:
    """The least favourable false case of the "every language" claims: clearly true in every language but
    one (de), where there is no difference."""
    best, shift = [], []
    effect = {lang: (0.0 if lang == "de" else -1.5) for lang in LANGS}
    for _ in range(reps):
        specs = {"capo": (2, True, 0.0), "dpo": (2, True, effect), "simpo": (2, True, -1.5)}
        m, langs = simulate(rng, specs)
        pool = study_pool(m, specs, langs)
        comps = {k: means(m["capo"], m[k], langs, labels=("capo", k), pool=pool) for k in ("dpo", "simpo")}
        best.append(claim_best_everywhere("capo", group("capo"), comps, [group("dpo"), group("simpo")]).verdict)
        s = compare_shift(m["capo"], m["dpo"], langs, (True, True), ("capo", "dpo"), "shift grid sum", n_boot=n_boot,
                          seed=int(rng.integers(1 << 30)))
        shift.append(claim_shift_everywhere("capo", "dpo", s).verdict)
    return {"highest in every language but en": rates(best), "shift to the right in every language": rates(shift)}


def assert_at_most_5_percent(by_claim: dict[str, Counter]) -> None:
    for name, r in by_claim.items():
        assert r["agrees"] <= MAX_RATE and r["contradicts"] <= MAX_RATE, (name, r)
        assert set(r) <= {"agrees", "contradicts", "inconclusive"}, (name, r)  # never "partly agrees"


# ---------------------------------------------------------------------------------------------
# the simulated world matches the pilot, and the interval keeps its coverage there
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed_sd, lo, hi", [(SEED_SD, 3.5, 6.0), (WIDE_SEED_SD, 9.0, 13.0)])
def test_simulated_seed_spread_matches_the_pilot(seed_sd, lo, hi):
    assert lo < seed_spread(200, seed_sd, np.random.default_rng(0)) < hi


@pytest.mark.parametrize("seeds, seed_sd", [(2, SEED_SD), (3, SEED_SD), (2, WIDE_SEED_SD)])
def test_seed_and_pair_interval_keeps_its_coverage(seeds, seed_sd):
    """95% coverage of the true difference over seeds and pairs, where an interval over pairs alone (what
    one run's bootstrap gives) misses it far more often."""
    hits, pair_only = coverage(300, seeds, seed_sd, np.random.default_rng(1))
    assert hits >= 0.93 and pair_only < 0.90


@pytest.mark.parametrize("design, seed_sd, unequal, reps", first_fast([
    ("study", SEED_SD, True, 300), ("study", SEED_SD, False, 300), ("study", WIDE_SEED_SD, False, 300),
    ("decisive", SEED_SD, False, 1000), ("decisive", SEED_SD, True, 1000), ("decisive", WIDE_SEED_SD, False, 1000),
    ("demo", SEED_SD, False, 1000), ("demo", SEED_SD, True, 1000)]))
def test_every_headline_interval_covers_in_the_designs_run(design, seed_sd, unequal, reps):
    """Issue 23: in the committed study's design the old two-seed intervals covered 92.4% (macro) with unequal
    seed spreads. Every headline cell (per language, macro, pooled; CAPO - DPO and the gains over the base
    model) now covers at least 94% on average over cells, and no cell falls far below (a few hundred
    replicates here, so a margin for their noise; `python tests/test_analysis_null.py` runs 4,000 and
    docs/analysis.md has those rates, the demo's at the wide spread included)."""
    cells = design_coverage(design, reps, seed_sd, unequal, np.random.default_rng(12))
    assert np.mean(list(cells.values())) >= 0.94 and min(cells.values()) >= 0.91, cells


@pytest.mark.slow  # a further design of the sweep above: the fast tier checks the committed study's
def test_the_decisive_design_covers_with_unequal_and_wide_seed_spreads():
    """Eight seeds per compared method: each side's own seed variance stands, so a CAPO whose seeds spread twice
    as much as DPO's in its widest language is still covered (the pool of calmer methods would narrow it)."""
    cells = design_coverage("decisive", 1000, WIDE_SEED_SD, True, np.random.default_rng(13))
    assert min(cells.values()) >= 0.925, cells


def test_shift_interval_keeps_its_coverage():
    """The KDE-weighted mean shift's interval (bootstrap over pairs, plus seeds) covers the true shift."""
    assert shift_coverage(40, np.random.default_rng(2)) >= 0.93


# ---------------------------------------------------------------------------------------------
# each claim's verdict when the claim is false: at most 5% "agrees" and 5% "contradicts"
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed_sd", first_fast([SEED_SD, WIDE_SEED_SD]))
def test_accuracy_claims_under_the_null(seed_sd):
    """"CAPO is highest in every language except en" was "partly agrees" 88% of the time under the old rule."""
    assert_at_most_5_percent(accuracy_null(400, np.random.default_rng(3), seed_sd))


@pytest.mark.slow  # several seconds: make test-all
def test_shift_and_correlation_claims_under_the_null():
    """"Shift to the right in every language" was "partly agrees" 18% of the time under the old rule."""
    assert_at_most_5_percent(shift_null(200, np.random.default_rng(5)))


@pytest.mark.slow  # several seconds: make test-all
def test_alpha_and_orientation_claims_under_the_null():
    assert_at_most_5_percent(alpha_null(400, np.random.default_rng(6)))


@pytest.mark.slow  # several seconds: make test-all
def test_every_language_claims_at_their_boundary():
    for name, r in boundary(200, np.random.default_rng(4)).items():
        assert r["agrees"] <= MAX_RATE, (name, r)


@pytest.mark.parametrize("sign, unequal", first_fast([(1, False), (-1, True)]))
def test_equal_within_the_margin_is_rarely_said_of_a_difference_at_the_margin(sign, unequal):
    """'equal within ±3 points' (two one-sided tests at 5%) of a true macro difference of exactly 3 points, in
    the decisive study's design and spread: at most 5% (a few hundred replicates here, so a margin for their
    noise; 4,000 in docs/analysis.md)."""
    assert equivalence_rate(600, unequal, sign * EQUIVALENCE_MARGIN, np.random.default_rng(14)) <= 0.07


def test_equal_within_the_margin_is_said_of_equal_methods_in_the_decisive_design():
    """The power side: with no true difference the decisive design calls CAPO and DPO equal about half the
    time, so the check above is not empty."""
    assert equivalence_rate(300, False, 0.0, np.random.default_rng(15)) > 0.3


if __name__ == "__main__":  # the long runs behind the rates in docs/analysis.md
    rng = np.random.default_rng(2024)
    print(f"seed spread (points): {seed_spread(2000, SEED_SD, rng):.1f}, wide {seed_spread(2000, WIDE_SEED_SD, rng):.1f}")
    for seeds, sd in ((2, SEED_SD), (3, SEED_SD), (2, WIDE_SEED_SD)):
        print(f"coverage, {seeds} seeds, seed sd {sd}: seeds and pairs %.3f, pairs only %.3f" % coverage(2000, seeds, sd, rng))
    for design in DESIGNS:
        for (name, sd), unequal in [(s, u) for s in (("pilot", SEED_SD), ("wide", WIDE_SEED_SD)) for u in (False, True)]:
            cells = design_coverage(design, 4000, sd, unequal, rng)
            low = min(cells, key=cells.get)
            print(f"coverage, {design}, {name} spread, {'unequal' if unequal else 'equal'}: mean over cells "
                  f"{np.mean(list(cells.values())):.3f}, lowest {cells[low]:.3f} ({low})")
    print(f"coverage of the shift interval: {shift_coverage(300, rng, 200):.3f}")
    for unequal, difference in [(u, d) for u in (False, True) for d in (EQUIVALENCE_MARGIN, -EQUIVALENCE_MARGIN, 0.0)]:
        print(f"equal within the margin, decisive design and spread, true difference {difference * 100:+.0f} points, "
              f"{'unequal' if unequal else 'equal'} spreads: {equivalence_rate(4000, unequal, difference, rng):.3f}")
    for title, by_claim in (("null, pilot spread", accuracy_null(4000, rng)),
                            ("null, wide spread", accuracy_null(4000, rng, WIDE_SEED_SD)),
                            ("null", shift_null(1000, rng, 100)), ("null", alpha_null(4000, rng)),
                            ("boundary", boundary(1000, rng, 100))):
        for name, r in by_claim.items():
            print(f"{title}: {name}: agrees {r['agrees']:.3f}, contradicts {r['contradicts']:.3f}")
