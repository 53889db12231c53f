"""The CAPO paper's claims checked against the analysis results, with verdicts drawn from intervals.

The paper's numbers (claims, not verdicts) and the rules that turn an interval into "agrees",
"contradicts" or "inconclusive" live together here, so that what counts as agreement is decided
in one place and never fixed in advance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xlpo.eval.analysis.accuracy import ALL
from xlpo.eval.analysis.correlation import fisher_interval

MIN_PAIRS = 10  # fewer pairs behind an interval: no verdict is drawn from it

# The paper's numbers that the report compares against (claims, not verdicts).
PAPER = {
    "acc_gain_vs_dpo": 16.0,      # "CAPO significantly outperforms DPO by 16%" (points or relative: not said)
    "acc_gain_vs_dpo_nll": 33.0,  # "... and DPONLL by 33%"
    "bleu_shift_r": -0.47,        # "inverse correlation (r = -0.47) between BLEU scores and the ... shift"
    "bleu_shift_languages": 8,    # Fig. 7 shows eight languages
    "best_alpha": 2.0,            # "increases up to alpha = 2.0 but drops sharply beyond that point"
}


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
