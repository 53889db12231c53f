"""What the analysis report says, one function per section, from results.json's plain data.

Strings here are plain text: the renderers in eval/report.py escape everything that comes from
the data. The report opens with the headline (gains over the base model and target minus
baseline, with intervals over seeds and pairs), then the verdicts against the paper.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from xlpo.eval.analysis.compare import format_difference
from xlpo.eval.report import Image, Para, Section, Table

ALL = "all"
DEFINITION_NAMES = {"sum": "summed log-prob", "mean": "per-token mean log-prob", "implicit": "DPO implicit reward"}


def _pct(e: Mapping | None) -> str:
    if not e:
        return "–"
    if e.get("lo") is None:
        return f"{e['acc'] * 100:.1f}"
    return f"{e['acc'] * 100:.1f} [{e['lo'] * 100:.1f}, {e['hi'] * 100:.1f}]"


def _num(v: Any, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def _diff(d: Mapping | None, words: bool = False) -> str:
    """Points with the interval and, with `words`, "not established" / "underpowered" (tables say "points")."""
    return "–" if not d else format_difference(d, unit="", words=words, ci="")


def _nats(d: Mapping | None) -> str:
    return "–" if not d else format_difference(d, 1.0, "", 2)


def _corr(c: Mapping | None) -> str:
    if not c or c.get("r") is None:
        return f"undefined (n = {(c or {}).get('n', 0)} languages)" + (f": {c['note']}" if c and c.get("note") else "")
    s = f"r = {c['r']:+.3f}, p = {c['p']:.3f}, n = {c['n']} languages"
    if c.get("ci_lo") is not None:
        s += f", 95% CI [{c['ci_lo']:+.2f}, {c['ci_hi']:+.2f}]"
    return s + (f" ({c['note']})" if c.get("note") else "")


def _langs(tables: Mapping[str, Mapping], names: Sequence[str]) -> list[str]:
    langs = sorted({k for r in names for k in tables.get(r, {}) if k != ALL})
    return [*langs, ALL] if any(ALL in tables.get(r, {}) for r in names) else langs


def headline_table(results: Mapping[str, Any], definition: str) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the headline for one accuracy definition: per language (and macro), each trained
    method minus the base model and target minus baseline, in points with the plain status words."""
    h = results["headline"]
    rows = h["definitions"][definition]
    groups = [g["label"] for g in results["groups"] if any(g["label"] in row["gains"] for row in rows)]
    headers = ["lang", "pairs", *[f"{g} minus {h['base']}" for g in groups],
               *([f"{h['target']} minus {h['baseline']}"] if h["target"] else [])]
    return headers, [[row["lang"] + (" (underpowered)" if row["underpowered"] else ""), str(row["pairs"]),
                      *[_diff(row["gains"].get(g), True) for g in groups],
                      *([_diff(row["target_minus_baseline"], True)] if h["target"] else [])] for row in rows]


def headline_section(results: Mapping[str, Any]) -> Section:
    h, s = results["headline"], Section("headline", "Headline")
    s.blocks.append(Para(
        "Reward accuracy gains in percentage points: each trained method minus the base model, and "
        f"{h['target'] or results['config']['target']} minus {h['baseline'] or results['config']['baseline']}. "
        "Each number is the mean over a method's training seeds, with a 95% interval that covers the seeds (their "
        "spread pooled over every method with two seeds or more; a method with four or more keeps its own) and "
        "the evaluation pairs. 'not established' means the interval includes 0, or a method has a single "
        "training seed (then the interval covers pairs only); 'equal within ±3 points' replaces it where the "
        "interval includes 0 and two one-sided tests at 5% place the difference within 3 points (its 90% interval "
        f"inside ±3); 'underpowered' marks a language with fewer than {h['min_pairs']} pairs. The macro row is the "
        "unweighted mean over languages."))
    if h["base"] is None:
        s.blocks.append(Para("No base model was scored (a run with method 'base'): no gains over it."))
    if h["target"] is None or h["baseline"] is None:
        s.blocks.append(Para("Target or baseline missing: no target-minus-baseline column."))
    for definition in h["definitions"]:
        headers, rows = headline_table(results, definition)
        if rows:
            s.blocks.append(Table(headers, rows, f"Accuracy gains (points), {DEFINITION_NAMES[definition]} accuracy"))
    return s


def paper_section(results: Mapping[str, Any]) -> Section:
    s = Section("paper", "Against the paper")
    s.blocks.append(Para("Each claim of the CAPO paper (arXiv 2511.07691) checked against these runs. "
                         + results["legend"]["text"]))
    s.blocks.append(Table(["verdict", "meaning"], [[k, v] for k, v in results["legend"]["verdicts"].items()],
                          "How verdicts are made"))
    s.blocks.append(Table(["claim", "paper", "compared", "test", "ours", "verdict", "detail"],
                          [[v["claim"], v["paper"], v["compared"], v["test"], v["ours"], v["verdict"], v["detail"]]
                           for v in results["against_paper"]], "Claims"))
    return s


def setup_section(results: Mapping[str, Any]) -> Section:
    cfg, s = results["config"], Section("setup", "Setup")
    s.blocks.append(Para(
        f"Baseline: {cfg['baseline']} (group {cfg['baseline_group'] or 'not found'}); target: {cfg['target']} "
        f"(group {cfg['target_group'] or 'not found'}); base model: {cfg['base_group'] or 'not scored'}. Runs of one "
        f"group are seeds of one method. Per-run accuracies have 95% percentile bootstrap intervals over pairs "
        f"({cfg['n_boot']} resamples, seed {cfg['bootstrap_seed']}); method differences: {cfg['interval']}"))
    s.blocks.append(Table(
        ["run", "group", "seed", "method", "loss params", "model", "adapter", "pairs", "languages", "ref",
         "training run"],
        [[r["name"], r["group"], str(r["seed"] if r["seed"] is not None else "–"), r["method"],
          ", ".join(f"{k}={v}" for k, v in r["loss_params"].items()) if r["loss_params"] else "–",
          str(r["model"] or "–"), str(r["adapter"] or "–"), str(r["pairs"]), " ".join(r["languages"]),
          "yes" if r["has_reference"] else "no", str(r["train_dir"] or "–")] for r in results["runs"]],
        "Scored runs"))
    notes = [f"{r['name']}: {n}" for r in results["runs"] for n in r["notes"]]
    if notes:
        s.blocks.append(Para("Notes: " + "; ".join(notes)))
    left_out = [g["label"] for g in results["groups"] if not g["compared"]]
    if left_out:
        s.blocks.append(Para("Left out of the method comparisons (alpha-sweep siblings of the target, shown in the "
                             "alpha sweep): " + ", ".join(left_out) + "."))
    shown = ("note", "baseline", "target", "data_file", "bleu_source", "n_boot", "ci_level", "reward_kind",
             "reward_kinds_available")
    s.blocks.append(Table(["setting", "value"], [[k, cfg[k] if isinstance(cfg[k], str) else json.dumps(cfg[k])]
                                                 for k in shown if cfg.get(k) is not None],
                          "Analysis configuration (all of it, run directories included, in results.json)"))
    versions, per_row = list(results["versions"].items()), 4
    s.blocks.append(Table(["package", "version"] * per_row,
                          [[c for k, v in versions[i:i + per_row] for c in (k, str(v))]
                           + ["", ""] * (per_row - len(versions[i:i + per_row]))
                           for i in range(0, len(versions), per_row)], "Versions"))
    return s


def seeds_section(results: Mapping[str, Any]) -> Section:
    s = Section("seeds", "Seed-to-seed spread")
    s.blocks.append(Para(
        "A group's runs are one method trained with different seeds on the same data, scored on the same pairs. "
        "Their spread is why a comparison of methods needs several seeds: an interval over pairs alone treats one "
        "training run as the method. Accuracy (%) of each seed, and the standard deviation across seeds (points)."))
    rows = []
    for g in results["groups"]:
        table = results["group_accuracy"].get(g["label"], {})
        for lang, entry in table.items():
            cells = [f"{' / '.join(f'{v * 100:.1f}' for v in e['per_seed'])} (sd "
                     f"{'–' if e['sd'] is None else format(e['sd'] * 100, '.1f')})" if e else "–"
                     for e in (entry.get("sum"), entry.get("mean"))]
            rows.append([g["label"], ", ".join("?" if x is None else str(x) for x in g["seeds"]) if g["trained"]
                         else "untrained", lang, str((entry.get("sum") or {}).get("n", "–")), *cells])
    s.blocks.append(Table(["group", "seeds", "lang", "pairs", "summed: per seed (sd)", "per-token: per seed (sd)"],
                          rows, "Accuracy per seed"))
    return s


def accuracy_section(results: Mapping[str, Any]) -> Section:
    s, acc = Section("accuracy", "Reward accuracy per language"), results["accuracy"]
    runs = [r["name"] for r in results["runs"]]
    s.blocks.append(Para(
        "Share of pairs (%) whose chosen response (post-edit) scores higher than the rejected one (raw MT) under "
        "the run's own model, with 95% bootstrap intervals over pairs (one run each). 'sum' compares summed "
        "log-probs (the CAPO paper's Appendix B), 'mean' per-token mean log-probs (SimPO's score), 'implicit' DPO's "
        "implicit reward (needs reference log-probs). Ties count as wrong. The 'all' row pools every pair."))
    for definition in ("sum", "mean", "implicit"):
        have = [r for r in runs if any(definition in v for v in acc.get(r, {}).values())]
        if have:
            rows = [[lang, str(max((acc[r].get(lang, {}).get(definition, {}).get("n", 0) for r in have), default=0)),
                     *[_pct(acc[r].get(lang, {}).get(definition)) for r in have]] for lang in _langs(acc, have)]
            s.blocks.append(Table(["lang", "pairs", *have], rows, f"Accuracy (%), definition '{definition}'"))
    s.blocks.append(Image("accuracy", "Reward accuracy per language and run (95% CI whiskers; dashed: chance)."))
    diffs = results["accuracy_difference"]["vs_baseline"]
    if diffs:
        d, dm = diffs["sum"], diffs.get("mean") or {}
        rows = [[lang, str(e["n"]), _diff(e, True), _diff((dm.get("languages") or {}).get(lang), True)]
                for lang, e in d["languages"].items()]
        rows.append(["all (pooled)", str(d["all"]["n"]) if d["all"] else "–", _diff(d["all"], True),
                     _diff(dm.get("all"), True)])
        rows.append(["macro avg", "–", _diff(d["macro"], True), _diff(dm.get("macro"), True)])
        s.blocks.append(Table(["lang", "pairs", "sum (points)", "mean (points)"], rows,
                              f"Accuracy difference {d['target']} minus {d['baseline']} (points; 95% intervals over "
                              "seeds and pairs)"))
    return s


def kde_section(results: Mapping[str, Any]) -> Section:
    s, kind = Section("kde", "Reward-difference distributions"), results["reward_differences"]["kind"]
    s.blocks.append(Para(
        {"sum": "Reward difference per pair = logp(chosen) - logp(rejected), summed over response tokens, in nats, "
                "under the run's own model (reference-free, the score behind the paper's reward accuracy).",
         "mean": "Reward difference per pair = per-token mean log-prob of chosen minus that of rejected (nats).",
         "implicit": "Reward difference per pair = DPO's implicit-reward margin (logp_c - ref_c) - (logp_r - ref_r) "
                     "(nats, not multiplied by beta)."}[kind]
        + " Curves: Gaussian KDE (scipy.stats.gaussian_kde, Scott's bandwidth h) of each group's pairs, all its "
          "seeds pooled. KDE-weighted mean = the mean of the KDE density over the plotted range [min - 3h, max + 3h], "
          "integral x f(x) dx / integral f(x) dx (for a Gaussian KDE this is the sample mean up to that truncation); "
          "the density-weighted mean of the sample points, sum x_i f(x_i) / sum f(x_i), leans toward the mode (a "
          "sensitivity check)."))
    s.blocks.append(Image("kde", "KDE of the reward difference per language and method (seeds pooled)."))
    rd = results["reward_differences"]["runs"]
    have = [r["name"] for r in results["runs"] if r["compared"] and r["name"] in rd]
    s.blocks.append(Table(["lang", *[f"{r}: KDE mean / density mean / share > 0" for r in have]],
                          [[lang, *[(f"{rd[r][lang]['kde_weighted_mean']:+.2f} / "
                                     f"{rd[r][lang]['density_weighted_mean']:+.2f} / "
                                     f"{rd[r][lang]['share_positive'] * 100:.0f}%") if lang in rd[r] else "–"
                                    for r in have]] for lang in _langs(rd, have)],
                          "KDE-weighted means of the reward difference per run (nats)"))
    return s


def shift_section(results: Mapping[str, Any]) -> Section:
    s, cfg = Section("shift", "Shift and BLEU correlation"), results["config"]
    sh, bleu = results["shift"], results["bleu"]
    if not sh["grid"]:
        s.blocks.append(Para(f"No shift: needs scored runs for both the baseline ({cfg['baseline']}) and the target "
                             f"({cfg['target']})."))
    else:
        base, targ = sh["baseline"], sh["target"]
        s.blocks.append(Para(
            f"Shift = KDE-weighted mean of {targ}'s reward differences minus {base}'s, per language, averaged over "
            f"seeds, with a 95% interval over seeds and pairs. BLEU: corpus BLEU (sacrebleu) of the rejected text "
            f"against the chosen one, from {bleu['file'] or 'no file'} ({bleu['source']}). Note: {bleu['note']}."))
        langs = [k for k in sh["grid"] if k != ALL] + [ALL]
        s.blocks.append(Table(
            ["lang", "BLEU", "chrF", f"{base} KDE mean", f"{targ} KDE mean", "shift [95% CI]",
             "shift (density-weighted) [95% CI]", "shift of plain means [95% CI]"],
            [[lang, _num(bleu["languages"].get(lang, {}).get("bleu"), ".1f"),
              _num(bleu["languages"].get(lang, {}).get("chrf"), ".1f"), f"{sh['grid'][lang]['baseline']:+.2f}",
              f"{sh['grid'][lang]['target']:+.2f}", _nats(sh["grid"][lang]), _nats(sh["density"].get(lang)),
              _nats(sh["mean"].get(lang))] for lang in langs],
            f"Shift of the reward-difference distribution, {targ} minus {base} (nats)"))
        s.blocks.append(Image("shift", "Shift per language with 95% intervals over seeds and pairs."))
        corr = results["correlation"]
        s.blocks.append(Table(["shift measure", "Pearson correlation with BLEU across languages"],
                              [["KDE-weighted mean (primary)", _corr(corr["grid"])],
                               ["density-weighted mean", _corr(corr["density"])], ["plain mean", _corr(corr["mean"])]],
                              "BLEU(chosen, rejected) against the shift (scipy.stats.pearsonr)"))
        s.blocks.append(Image("bleu_shift", "BLEU against the shift per language, with the least-squares line."))
    others = sh["vs_baseline"]
    if others:
        langs = sorted({k for v in others.values() for k in v if k != ALL}) + [ALL]
        s.blocks.append(Table(["lang", *others], [[lang, *[_num(others[g].get(lang), "+.2f") for g in others]]
                                                  for lang in langs],
                              f"KDE-weighted mean shift of every compared method against {sh['baseline']} "
                              "(nats, mean over seeds, no interval)"))
    return s


def training_section(results: Mapping[str, Any]) -> Section:
    s, summ = Section("training", "Training curves"), results["training"]["summary"]
    if not summ:
        s.blocks.append(Para("No training logs: no scored run names a training directory with metrics.jsonl."))
        return s
    s.blocks.append(Image("training", "Training loss and training reward accuracy per step (thin: raw; thick: "
                                      "moving average). Losses of different methods are different functions."))
    s.blocks.append(Table(["run", "steps", "first loss", "final loss", "mean loss", "roughness",
                           "final train accuracy"],
                          [[r, str(v["steps"]), _num(v["first_loss"]), _num(v["final_loss"]), _num(v["mean_loss"]),
                            _num(v["roughness"], ".4f"), _num(v["final_accuracy"], ".3f")] for r, v in summ.items()],
                          "Training summary (roughness: std of step-to-step loss changes)"))
    return s


def alpha_section(results: Mapping[str, Any]) -> Section:
    s, sweep = Section("alpha", "Alpha sweep"), results["alpha_sweep"]
    if len({e["alpha"] for e in sweep}) < 2:
        s.blocks.append(Para("No alpha sweep: fewer than two runs with different alpha values "
                             f"({', '.join(format(e['alpha'], 'g') for e in sweep) or 'none'})."))
    if not sweep:
        return s

    def acc(e: Mapping | None) -> str:
        seeds = " / ".join(f"{v * 100:.1f}" for v in (e or {}).get("per_seed", []))
        return "–" if not e else f"{e['mean'] * 100:.1f} (seeds: {seeds})"

    s.blocks.append(Table(["group", "method", "rrm", "alpha", "seeds", "final train loss", "mean train loss",
                           "eval accuracy sum (%)", "eval accuracy mean (%)"],
                          [[e["name"], e["method"], str(e["rrm"]), format(e["alpha"], "g"), str(e["seeds"]),
                            _num(e["final_loss"]), _num(e["mean_loss"]), acc(e["acc_sum"]), acc(e["acc_mean"])]
                           for e in sweep],
                          "Alpha sweep (evaluation accuracy = reward accuracy on the scored pairs; losses: mean over "
                          "seeds)"))
    diffs = results["alpha_differences"]
    if diffs:
        s.blocks.append(Table(["group", f"minus {results['alpha_reference']} (points, pooled)"],
                              [[k, _diff(v["all"], True)] for k, v in diffs.items()],
                              "Accuracy against the paper's best alpha (2), the comparison fixed in advance"))
    s.blocks.append(Image("alpha", "Final training loss and evaluation accuracy against alpha."))
    return s


def tokenization_section(results: Mapping[str, Any]) -> Section:
    s, tok = Section("tokenization", "Tokenization diagnostics"), results["tokenization"]
    s.blocks.append(Para(
        "The paper argues that DPO's reward difference depends on a language's tokenization rate and that RRM "
        "corrects for it. Tokens per character (ratio of sums) and the mean per-token log-prob (sum of log-probs "
        "over sum of tokens) per language; the tests correlate tokens per character with the baseline's accuracy "
        "and with the target's accuracy gain across languages."))
    compared = [r["name"] for r in results["runs"] if r["compared"]] or [r["name"] for r in results["runs"]]
    first, runs = compared[0], tok["runs"]
    t0 = runs[first]
    s.blocks.append(Table(
        ["lang", "pairs", "tokens/char chosen", "tokens/char rejected",
         *[f"{r}: logp/token chosen / rejected" for r in compared]],
        [[lang, str(t0[lang]["n"]), _num(t0[lang]["tokens_per_char_chosen"]),
          _num(t0[lang]["tokens_per_char_rejected"]),
          *[f"{_num(runs[r].get(lang, {}).get('logp_per_token_chosen'))} / "
            f"{_num(runs[r].get(lang, {}).get('logp_per_token_rejected'))}" for r in compared]]
         for lang in t0], f"Tokenization per language (tokens per character from run {first})"))
    base, targ = results["shift"]["baseline"], results["shift"]["target"]
    if tok["tests"]:
        s.blocks.append(Table(["test", "Pearson correlation"],
                              [[{"baseline_acc": f"tokens/char vs {base} accuracy",
                                 "gain": f"tokens/char vs accuracy gain {targ} minus {base}"}.get(k, k), _corr(v)]
                               for k, v in tok["tests"].items()], "Tokenization tests"))
    s.blocks.append(Image("tokenization", "Tokens per character and mean per-token log-prob per language."))
    return s


SECTIONS = (headline_section, paper_section, setup_section, seeds_section, accuracy_section, kde_section,
            shift_section, training_section, alpha_section, tokenization_section)


def build_sections(results: Mapping[str, Any]) -> list[Section]:
    """The report's sections, headline first."""
    return [make(results) for make in SECTIONS]
