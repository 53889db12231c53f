"""`analyze`: the whole analysis of a set of scored run directories, end to end, one function per step.

The only module that knows about all the others: it loads the runs and groups their seeds, runs
each step into a typed result (findings), checks the paper's claims, assembles `results.json`
and hands it to the plots and the reports. Nothing else in the package imports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xlpo.errors import UserError
from xlpo.eval.analysis.accuracy import ALL, CI_LEVEL, KINDS, accuracy_table, has_reference, reward_differences
from xlpo.eval.analysis.compare import SeedPools, accuracy_comparison, shift_comparison
from xlpo.eval.analysis.correlation import bleu_by_language, pearson
from xlpo.eval.analysis.findings import (
    AccuracyFindings,
    BleuFindings,
    Findings,
    Orientation,
    Roles,
    ShiftFindings,
    TokenizationFindings,
    TrainingFindings,
)
from xlpo.eval.analysis.groups import (
    alpha_sweep,
    compared_groups,
    group_accuracy,
    group_runs,
    pick_group,
)
from xlpo.eval.analysis.kde import kde_curves, kde_weighted_mean
from xlpo.eval.analysis.paper import PAPER, against_paper
from xlpo.eval.analysis.results import results_json
from xlpo.eval.analysis.runs import curve_summary, load_run, resolve_path, tokenization_diagnostics
from xlpo.eval.plots import make_plots
from xlpo.eval.report import write_reports
from xlpo.eval.report_sections import build_sections
from xlpo.fileio import write_json

HEADLINE_DEFINITIONS = ("sum", "mean")  # summed and per-token log-prob accuracy


def load_roles(run_dirs: Sequence[str | Path], baseline: str, target: str) -> Roles:
    """The scored runs, their groups, and which group is the baseline, the target, the base model, DPO+NLL."""
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UserError(f"two runs are named {dup!r} (scoring.json 'name'): names must be unique")
    groups = group_runs(runs)
    base_g, targ_g = pick_group(groups, baseline, "baseline"), pick_group(groups, target, "target")
    compared = compared_groups(groups, targ_g)
    return Roles(baseline, target, runs, groups, compared, base_g, targ_g,
                 base=next((g for g in groups if not g.trained), None),
                 dpo_nll=next((g for g in compared if g.method == "dpo_nll" and g not in (base_g, targ_g)), None),
                 pools=SeedPools(groups))


def accuracy_step(roles: Roles, n_boot: int, seed: int) -> AccuracyFindings:
    """Each run's accuracy, each group's seed spread, and the method comparisons over seeds and pairs."""
    per_run = {r.name: accuracy_table(r.rows, n_boot, seed) for r in roles.runs}
    out = AccuracyFindings(per_run, {g.label: group_accuracy(g, per_run) for g in roles.groups})
    t, b = roles.target, roles.baseline

    def compare(target: Group, baseline: Group, definition: str):
        return accuracy_comparison(target, baseline, definition, roles.pools.accuracy(definition))

    if t is not None:
        if b is not None and b is not t:
            out.vs_baseline = {d: compare(t, b, d) for d in HEADLINE_DEFINITIONS}
        if roles.dpo_nll is not None:
            out.vs_dpo_nll = {d: compare(t, roles.dpo_nll, d) for d in HEADLINE_DEFINITIONS}
        out.rivals = {g.label: compare(t, g, "sum") for g in roles.compared if g is not t and g.method != t.method}
    if roles.base is not None:
        out.gains = {d: {g.label: compare(g, roles.base, d) for g in roles.compared if g.trained}
                     for d in HEADLINE_DEFINITIONS}
    return out


def shift_step(roles: Roles, kind: str, n_boot: int, seed: int) -> ShiftFindings:
    """Reward differences per run, the KDE curves per compared group, and the shift target minus baseline."""
    diffs = {r.name: reward_differences(r.rows, kind) for r in roles.runs
             if kind != "implicit" or any(has_reference(x) for x in r.rows)}
    per_run = {name: {lang: {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
                             "std": float(v.std(ddof=1)) if v.size > 1 else None,
                             "share_positive": float((v > 0).mean()), "kde_weighted_mean": kde_weighted_mean(v, "grid"),
                             "density_weighted_mean": kde_weighted_mean(v, "density")}
                      for lang, v in d.items() if v.size} for name, d in diffs.items()}
    pooled = {g.label: [diffs[r.name] for r in g.runs if r.name in diffs] for g in roles.compared}
    langs = sorted({k for parts in pooled.values() for d in parts for k in d if k != ALL})
    curves = {lang: kde_curves({g: np.concatenate([d.get(lang, np.zeros(0)) for d in parts])
                                for g, parts in pooled.items() if parts}) for lang in langs}
    out = ShiftFindings(kind, per_run, {k: v for k, v in curves.items() if v is not None})
    b, t = roles.baseline, roles.target
    pool = roles.pools.margins(kind)
    if b is not None and t is not None and t is not b:
        out.grid = shift_comparison(t, b, kind, "grid", n_boot, seed, pool)
        out.density = shift_comparison(t, b, kind, "density", n_boot, seed, pool)
        out.mean = shift_comparison(t, b, kind, "mean", pool=pool)
    if b is not None:
        out.vs_baseline = {g.label: shift_comparison(g, b, kind, "grid", 0, seed, pool)
                           for g in roles.compared if g is not b}
    return out


def bleu_source(data_file: str | Path | None, roles: Roles) -> tuple[Path | None, str]:
    """`data_file`, else the target's training data (the paper's Fig. 7), else the scored data."""
    if data_file is not None:
        p = Path(data_file)
        if not p.is_file():
            raise UserError(f"--data {p}: file not found")
        return p, "given with --data"
    first = roles.target.runs if roles.target else []
    order = first + [r for r in roles.runs if r not in first]
    for run in order:
        train = ((run.train_config or {}).get("data") or {}).get("train")
        p = resolve_path(train, run.train_dir or run.dir) if train else None
        if p is not None and p.is_file():
            return p, f"training data of run {run.name} (as the paper's Fig. 7)"
    for run in order:
        p = resolve_path(run.meta.get("data"), run.dir)
        if p is not None and p.is_file():
            return p, f"scored (evaluation) data of run {run.name}: no training data found"
    return None, "no data file found (pass --data)"


def bleu_step(path: Path | None, reason: str, shift: ShiftFindings) -> BleuFindings:
    languages = bleu_by_language(path) if path is not None else {}
    bleu = {k: v["bleu"] for k, v in languages.items()}
    correlation = {m: pearson(bleu, {k: d.diff for k, d in comp.languages.items()} if comp else {})
                   for m, comp in (("grid", shift.grid), ("density", shift.density), ("mean", shift.mean))}
    return BleuFindings(path, reason, languages, correlation)


def training_step(roles: Roles, accuracy: AccuracyFindings) -> TrainingFindings:
    """Training curves, the alpha sweep against the paper's best alpha, and the RRM orientation."""
    curves = {r.name: r.curve for r in roles.runs if r.curve}
    t = roles.target
    out = TrainingFindings(curves, {k: curve_summary(c) for k, c in curves.items()},
                           alpha_sweep(roles.groups, accuracy.per_group, t.method if t else None))
    if t is None or t.alpha is None:
        return out
    siblings = [g for g in roles.groups if g.method == t.method and g.alpha is not None]
    out.alpha_reference = next((g for g in siblings if g.rrm == t.rrm and g.alpha == PAPER["best_alpha"]), None)
    pool = roles.pools.accuracy("sum")
    if out.alpha_reference is not None:
        out.alpha_diffs = {g.label: accuracy_comparison(g, out.alpha_reference, "sum", pool) for g in siblings
                           if g.rrm == t.rrm and g.alpha > PAPER["best_alpha"]}
    for alpha in [t.alpha] + sorted({g.alpha for g in siblings} - {t.alpha}):
        pap = next((g for g in siblings if g.rrm == "paper" and g.alpha == alpha), None)
        inv = next((g for g in siblings if g.rrm == "inverse" and g.alpha == alpha), None)
        if pap and inv:
            vs = ({g.label: accuracy_comparison(g, roles.baseline, "sum", pool) for g in (pap, inv)}
                  if roles.baseline else {})
            out.orientation = Orientation(alpha, pap.label, inv.label, accuracy_comparison(inv, pap, "sum", pool), vs)
            break
    return out


def tokenization_step(roles: Roles, accuracy: AccuracyFindings) -> TokenizationFindings:
    """Tokens per character per language, correlated with the baseline's accuracy and the target's gain."""
    per_run = {r.name: tokenization_diagnostics(r.rows) for r in roles.runs}
    first = (roles.baseline or roles.groups[0]).runs[0]
    tpc = {k: e["tokens_per_char"] for k, e in per_run[first.name].items()
           if k != ALL and e["tokens_per_char"] is not None}
    tests: dict[str, dict] = {}
    if roles.baseline is not None:
        table = accuracy.per_group[roles.baseline.label]
        tests["baseline_acc"] = pearson(tpc, {k: v["sum"]["mean"] for k, v in table.items() if "sum" in v})
        if "sum" in accuracy.vs_baseline:
            tests["gain"] = pearson(tpc, {k: d.diff for k, d in accuracy.vs_baseline["sum"].languages.items()})
    if not tpc:
        for v in tests.values():
            v["note"] = "no character counts (chars_chosen / chars_rejected) in the scores"
    return TokenizationFindings(per_run, tpc, tests)


def analyze(run_dirs: Sequence[str | Path], out_dir: str | Path, baseline: str = "dpo", target: str = "capo",
            data_file: str | Path | None = None, n_boot: int = 1000, seed: int = 0, reward_kind: str = "sum",
            plots: bool = True, note: str | None = None) -> dict[str, Any]:
    """Load scored runs, compute every analysis, write results.json, plots/, report.md, report.html.

    `baseline` and `target` name a group (scoring.json "group", by default a run's own name) or a
    method held by exactly one group; a group's runs are seeds of one method. BLEU between chosen
    and rejected uses `data_file`, else the target's training data (the paper's Fig. 7), else the
    scored data. `note` is shown at the top of the report. Returns the results (also results.json).
    """
    if not run_dirs:
        raise UserError("no run directories given")
    if reward_kind not in KINDS:
        raise UserError(f"reward kind {reward_kind!r}: expected one of {', '.join(KINDS)}")
    if n_boot < 0:
        raise UserError(f"n_boot must be >= 0, got {n_boot}")
    roles = load_roles(run_dirs, baseline, target)
    bleu_path, bleu_reason = bleu_source(data_file, roles)
    accuracy = accuracy_step(roles, n_boot, seed)
    shift = shift_step(roles, reward_kind, n_boot, seed)
    findings = Findings(roles, accuracy, shift, bleu_step(bleu_path, bleu_reason, shift),
                        training_step(roles, accuracy), tokenization_step(roles, accuracy))
    out = Path(out_dir)
    config = {"note": note, "runs": [str(d) for d in run_dirs], "out": str(out), "baseline": baseline,
              "target": target, "n_boot": n_boot, "ci_level": CI_LEVEL, "reward_kind": reward_kind,
              "bootstrap_seed": seed}
    results = _jsonable(results_json(findings, against_paper(findings), config))
    out.mkdir(parents=True, exist_ok=True)
    plot_files = make_plots(results, out / "plots") if plots else {}
    results["plots"] = {k: v.relative_to(out).as_posix() for k, v in plot_files.items()}
    write_json(out / "results.json", results)
    write_reports(build_sections(results), results, out, plot_files)
    return results


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
