"""results.json from the typed findings: every number the report and the plots show, as plain data.

The report (eval/report.py) and the plots (eval/plots.py) read only this dictionary, so a saved
results.json can be rendered again without the runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from xlpo.eval.analysis.accuracy import ALL, KINDS, MIN_PAIRS, has_reference
from xlpo.eval.analysis.compare import Comparison
from xlpo.eval.analysis.findings import Findings
from xlpo.eval.analysis.kde import GRID_CUT, GRID_SIZE
from xlpo.eval.analysis.paper import BLEU_NOTE, LEGEND, VERDICTS, Claim
from xlpo.versions import library_versions

INTERVAL = ("95% Welch-Satterthwaite t interval: between-seed variance of each trained group's per-seed "
            "statistic / its number of seeds, plus the variance over evaluation pairs of the seed-averaged "
            "difference (paired, stratified by language; analytic for accuracies, bootstrap for KDE-weighted "
            "means). A trained group with one seed: pairs only, 'not established'. The base model has no seed "
            "variation.")


def _comparisons(by_key: Mapping[str, Comparison | None]) -> dict[str, Any]:
    return {k: c.to_dict() for k, c in by_key.items() if c is not None}


def _shift(comp: Comparison | None) -> dict[str, Any]:
    """{lang (and "all"): the difference with both sides' levels} of a shift comparison."""
    if comp is None:
        return {}
    diffs = {**comp.languages, **({ALL: comp.pooled} if comp.pooled else {})}
    return {k: {**d.to_dict(), "baseline": comp.levels[k][0], "target": comp.levels[k][1]} for k, d in diffs.items()}


def headline(f: Findings) -> dict[str, Any]:
    """Per accuracy definition and language: each trained method's gain over the base model and the
    target minus the baseline, with intervals over seeds and pairs and the plain status of each."""
    r, acc = f.roles, f.accuracy
    out: dict[str, Any] = {"base": r.base.label if r.base else None, "target": r.target.label if r.target else None,
                           "baseline": r.baseline.label if r.baseline else None, "min_pairs": MIN_PAIRS,
                           "definitions": {}}
    for definition in ("sum", "mean"):
        gains = acc.gains.get(definition, {})
        vs = acc.vs_baseline.get(definition)
        comps = [*gains.values(), *([vs] if vs else [])]
        langs = sorted({k for c in comps for k in c.languages})
        rows: list[dict[str, Any]] = []
        out["definitions"][definition] = rows
        if not langs:
            continue
        for lang in [*langs, "macro"]:
            pick = (lambda c: c.macro) if lang == "macro" else (lambda c, lang=lang: c.languages.get(lang))
            cells = {g: pick(c) for g, c in gains.items()}
            target_minus = pick(vs) if vs else None
            n = max((d.n for d in [*cells.values(), target_minus] if d is not None), default=0)
            rows.append({"lang": lang, "pairs": n, "underpowered": lang != "macro" and n < MIN_PAIRS,
                         "gains": {g: d.to_dict() for g, d in cells.items() if d is not None},
                         "target_minus_baseline": target_minus.to_dict() if target_minus else None})
    return out


def _groups(f: Findings) -> list[dict[str, Any]]:
    r = f.roles
    return [{"label": g.label, "method": g.method, "runs": [x.name for x in g.runs], "seeds": g.seeds,
             "trained": g.trained, "replicated": g.replicated, "compared": g in r.compared, "alpha": g.alpha,
             "rrm": g.rrm} for g in r.groups]


def _runs(f: Findings) -> list[dict[str, Any]]:
    compared = {x.name for g in f.roles.compared for x in g.runs}
    return [{"name": x.name, "group": x.group, "seed": x.seed, "method": x.method, "dir": str(x.dir),
             "loss_params": x.loss_params or None, "model": x.meta.get("model"), "adapter": x.meta.get("adapter"),
             "beta": x.meta.get("beta"), "data": x.meta.get("data"),
             "train_dir": str(x.train_dir) if x.train_dir else x.meta.get("train_dir"), "pairs": len(x.rows),
             "languages": sorted({row.get("lang") or "unknown" for row in x.rows}),
             "has_reference": any(has_reference(row) for row in x.rows), "compared": x.name in compared,
             "notes": x.notes} for x in f.roles.runs]


def results_json(f: Findings, claims: Sequence[Claim], config: Mapping[str, Any]) -> dict[str, Any]:
    r, acc, sh, tr = f.roles, f.accuracy, f.shift, f.training
    label = lambda g: g.label if g else None  # noqa: E731
    return {
        "config": {**config, "baseline_group": label(r.baseline), "target_group": label(r.target),
                   "base_group": label(r.base), "data_file": str(f.bleu.file) if f.bleu.file else None,
                   "bleu_source": f.bleu.source, "interval": INTERVAL,
                   "reward_kinds_available": [k for k in KINDS if k != "implicit" or all(
                       any(has_reference(x) for x in run.rows) for run in r.runs)],
                   "kde": {"estimator": "scipy.stats.gaussian_kde (Gaussian kernel, Scott's bandwidth)",
                           "range_cut_bandwidths": GRID_CUT, "plot_grid_points": GRID_SIZE,
                           "weighted_mean": "grid (primary): integral of x f(x) / integral of f(x) over "
                           "[min - cut*h, max + cut*h], exact; density (sensitivity): sum x_i f(x_i) / sum f(x_i)"}},
        "versions": library_versions(),
        "seeds": {"bootstrap": config["bootstrap_seed"], "runs": {x.name: x.seed for x in r.runs}},
        "runs": _runs(f),
        "groups": _groups(f),
        "headline": headline(f),
        "accuracy": acc.per_run,
        "group_accuracy": acc.per_group,
        "accuracy_difference": {"vs_baseline": _comparisons(acc.vs_baseline),
                                "vs_dpo_nll": _comparisons(acc.vs_dpo_nll), "rivals": _comparisons(acc.rivals),
                                "gains": {d: _comparisons(g) for d, g in acc.gains.items()}},
        "reward_differences": {"kind": sh.kind, "runs": sh.per_run},
        "kde": {"kind": sh.kind, "curves": sh.curves},
        "shift": {"baseline": label(r.baseline), "target": label(r.target), "kind": sh.kind, "grid": _shift(sh.grid),
                  "density": _shift(sh.density), "mean": _shift(sh.mean),
                  "vs_baseline": {g: {k: d.diff for k, d in {**c.languages, ALL: c.pooled}.items() if d is not None}
                                  for g, c in sh.vs_baseline.items()}},
        "bleu": {"file": str(f.bleu.file) if f.bleu.file else None, "source": f.bleu.source,
                 "languages": f.bleu.languages, "note": BLEU_NOTE},
        "correlation": f.bleu.correlation,
        "training": {"curves": tr.curves, "summary": tr.summaries},
        "alpha_sweep": tr.sweep,
        "alpha_reference": label(tr.alpha_reference),
        "alpha_differences": _comparisons(tr.alpha_diffs),
        "rrm_orientation": None if tr.orientation is None else {
            "alpha": tr.orientation.alpha, "paper": tr.orientation.paper, "inverse": tr.orientation.inverse,
            "inverse_minus_paper": tr.orientation.inverse_minus_paper.to_dict(),
            "vs_baseline": _comparisons(tr.orientation.vs_baseline)},
        "tokenization": {"runs": f.tokenization.per_run, "tokens_per_char": f.tokenization.tokens_per_char,
                         "tests": f.tokenization.tests},
        "against_paper": [c.to_dict() for c in claims],
        "legend": {"text": LEGEND, "verdicts": VERDICTS},
        "plots": {},
    }
