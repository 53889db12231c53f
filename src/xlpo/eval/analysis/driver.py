"""`analyze`: the whole analysis of a set of scored run directories, end to end.

The only module that knows about all the others: it loads the runs, picks baseline and target,
calls each computation, assembles `results.json` and hands it to the plots and the reports.
Nothing else in the package imports it, which keeps the import graph acyclic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xlpo.errors import UserError
from xlpo.eval.analysis.accuracy import (
    ALL,
    CI_LEVEL,
    KINDS,
    _has_ref,
    _languages,
    accuracy_difference,
    accuracy_table,
    reward_differences,
)
from xlpo.eval.analysis.correlation import bleu_by_language, pearson
from xlpo.eval.analysis.kde import GRID_CUT, GRID_SIZE, kde_shift, kde_weighted_mean
from xlpo.eval.analysis.paper import PAPER, against_paper
from xlpo.eval.analysis.runs import (
    ScoredRun,
    _resolve,
    alpha_sweep,
    compared_runs,
    curve_summary,
    load_run,
    pick_run,
    tokenization_diagnostics,
)


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
