"""Simulations: each verdict's error rate when its claim is false, and the coverage of the seed-and-pair interval.

The simulated world is sized on issue 17's pilot: 8 languages x 100 evaluation pairs, methods
trained with two seeds, and a seed-to-seed spread of per-seed, per-language accuracy of about
4.7 points (the pooled spread of the pilot's eight seed pairs; its largest gap, 16 points, is
the "wide" setting). A pair's margin under a run is
    effect(method, language) + pair difficulty + method x pair + seed (overall and x language) + noise,
and the pair counts as correct when its margin is above 0. The claims' verdict functions are the
ones `analyze` uses, fed with the comparisons `compare` computes from these arrays.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from xlpo.eval.analysis.compare import compare_means, compare_shift, mean_difference
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


def simulate(rng, specs, seed_sd=SEED_SD, pairs=PAIRS, langs=LANGS):
    """Margins per group, (seeds, pairs) each, and the pairs' languages. specs: {label: (seeds, trained,
    effect: a number or {lang: number})}."""
    lang_of_pair = np.repeat(np.array(langs), pairs)
    difficulty = rng.normal(0, SD_PAIR, lang_of_pair.size)
    out = {}
    for label, (k, trained, effect) in specs.items():
        mu = np.repeat([effect.get(lang, 0.0) if isinstance(effect, dict) else effect for lang in langs], pairs)
        margin = mu + difficulty + rng.normal(0, SD_METHOD, lang_of_pair.size) + rng.normal(0, SD_NOISE, (k, mu.size))
        if trained:
            seed = (rng.normal(0, seed_sd / math.sqrt(2), (k, 1))
                    + np.repeat(rng.normal(0, seed_sd / math.sqrt(2), (k, len(langs))), pairs, axis=1))
            margin = margin + seed
        out[label] = margin
    return out, lang_of_pair


def true_accuracy(effect: float, trained: bool, seed_sd: float = SEED_SD) -> float:
    """Accuracy over the population of pairs (and seeds, for a trained method)."""
    return float(norm.cdf(effect / math.sqrt(SD_PAIR ** 2 + SD_METHOD ** 2 + SD_NOISE ** 2 + trained * seed_sd ** 2)))


def group(label: str, k: int = 2, trained: bool = True, alpha: float | None = None) -> Group:
    """A group for the claim rows (labels, seeds, alpha); the numbers come from the simulated arrays."""
    params = {"alpha": alpha} if alpha is not None else None
    return Group(label, [ScoredRun(f"{label}-s{s}", "capo" if alpha else label if trained else "base", Path("."),
                                   {"seed": s}, [], effective_loss_params=params) for s in range(k)])


def means(t, b, langs, trained=(True, True), labels=("t", "b")):
    return compare_means((t > 0).astype(float), (b > 0).astype(float), langs, trained, labels, "accuracy sum")


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


def shift_coverage(reps, rng, n_boot=100) -> float:
    hits = []
    for _ in range(reps):
        m, langs = simulate(rng, {"t": (2, True, 0.5), "b": (2, True, 0.0)})
        comp = compare_shift(m["t"], m["b"], langs, (True, True), ("t", "b"), "shift grid sum", n_boot=n_boot,
                             seed=int(rng.integers(1 << 30)))
        hits += [d.lo <= 0.5 <= d.hi for d in comp.languages.values()]
    return float(np.mean(hits))


METHODS = {"base": (1, False, 0.0), "dpo": (2, True, 0.0), "simpo": (2, True, 0.0), "dpo_nll": (2, True, 0.0),
           "capo": (2, True, 0.0)}


def accuracy_claims(m, langs):
    """The accuracy claims of one simulated study, as `against_paper` makes them."""
    g = {k: group(k, v[0], v[1]) for k, v in METHODS.items()}
    comps = {k: means(m["capo"], m[k], langs, (True, g[k].trained), ("capo", k)) for k in METHODS if k != "capo"}
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
        m, langs = simulate(rng, {**{k: (2, True, 0.0) for k in alphas}, "capo-inverse": (2, True, 0.0)})
        diffs = {k: means(m[k], m["capo"], langs, labels=(k, "capo")) for k in ("capo-a4", "capo-a8")}
        sweep = [{"alpha": a, "final_loss": None} for a in alphas.values()]
        alpha.append(claim_alpha_drop(sweep, group("capo", alpha=2.0), diffs).verdict)
        o = Orientation(2.0, "capo", "capo-inverse", means(m["capo-inverse"], m["capo"], langs), {})
        orient.append(claim_rrm_orientation("capo", o).verdict)
    return {"accuracy drops for alpha > 2": rates(alpha), "RRM a/b beats b/a": rates(orient)}


def boundary(reps, rng, n_boot=40) -> dict[str, Counter]:
    """The least favourable false case of the "every language" claims: clearly true in every language but
    one (de), where there is no difference."""
    best, shift = [], []
    effect = {lang: (0.0 if lang == "de" else -1.5) for lang in LANGS}
    for _ in range(reps):
        m, langs = simulate(rng, {"capo": (2, True, 0.0), "dpo": (2, True, effect), "simpo": (2, True, -1.5)})
        comps = {k: means(m["capo"], m[k], langs, labels=("capo", k)) for k in ("dpo", "simpo")}
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


def test_shift_interval_keeps_its_coverage():
    """The KDE-weighted mean shift's interval (bootstrap over pairs, plus seeds) covers the true shift."""
    assert shift_coverage(40, np.random.default_rng(2)) >= 0.93


# ---------------------------------------------------------------------------------------------
# each claim's verdict when the claim is false: at most 5% "agrees" and 5% "contradicts"
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed_sd", [SEED_SD, WIDE_SEED_SD])
def test_accuracy_claims_under_the_null(seed_sd):
    """"CAPO is highest in every language except en" was "partly agrees" 88% of the time under the old rule."""
    assert_at_most_5_percent(accuracy_null(400, np.random.default_rng(3), seed_sd))


def test_shift_and_correlation_claims_under_the_null():
    """"Shift to the right in every language" was "partly agrees" 18% of the time under the old rule."""
    assert_at_most_5_percent(shift_null(200, np.random.default_rng(5)))


def test_alpha_and_orientation_claims_under_the_null():
    assert_at_most_5_percent(alpha_null(400, np.random.default_rng(6)))


def test_every_language_claims_at_their_boundary():
    for name, r in boundary(200, np.random.default_rng(4)).items():
        assert r["agrees"] <= MAX_RATE, (name, r)


if __name__ == "__main__":  # the long runs behind the rates in docs/analysis.md
    rng = np.random.default_rng(2024)
    print(f"seed spread (points): {seed_spread(2000, SEED_SD, rng):.1f}, wide {seed_spread(2000, WIDE_SEED_SD, rng):.1f}")
    for seeds, sd in ((2, SEED_SD), (3, SEED_SD), (2, WIDE_SEED_SD)):
        print(f"coverage, {seeds} seeds, seed sd {sd}: seeds and pairs %.3f, pairs only %.3f" % coverage(2000, seeds, sd, rng))
    print(f"coverage of the shift interval: {shift_coverage(300, rng, 200):.3f}")
    for title, by_claim in (("null, pilot spread", accuracy_null(4000, rng)),
                            ("null, wide spread", accuracy_null(4000, rng, WIDE_SEED_SD)),
                            ("null", shift_null(1000, rng, 100)), ("null", alpha_null(4000, rng)),
                            ("boundary", boundary(1000, rng, 100))):
        for name, r in by_claim.items():
            print(f"{title}: {name}: agrees {r['agrees']:.3f}, contradicts {r['contradicts']:.3f}")
