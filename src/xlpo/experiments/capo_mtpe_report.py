"""The experiment's own report section (data per direction, seeds, learning rates chosen on validation),
placed after the analysis report's headline; reads only results.json's `experiment` entry."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xlpo.data.mtpe.common import SPLITS
from xlpo.eval.analysis.accuracy import MIN_PAIRS
from xlpo.eval.report import Para, Section, Table, write_reports
from xlpo.eval.report_sections import build_sections


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def data_table(manifest: Mapping[str, Any]) -> Table:
    counts = manifest["counts"]
    directions = list(counts["train"])
    rows = [[d, *[str(counts[s][d]) for s in SPLITS],
             "underpowered (fewer than %d evaluation pairs)" % MIN_PAIRS if counts["evaluation"][d] < MIN_PAIRS else ""]
            for d in directions]
    return Table(["direction", *SPLITS, "note"], rows, "MTPE pairs per direction and split (chosen = post-edit, "
                 "rejected = raw MT; split by source sentence)")


def lr_table(search: Mapping[str, Mapping], lrs: Mapping[str, float]) -> Table:
    """Every rate tried, per method: its validation accuracy pooled, macro and per language (summed; n pairs)."""
    first = next(iter(search.values()))["entries"][0]
    langs = list(first["languages"])
    rows = []
    for method, s in search.items():
        for e in s["entries"]:
            pooled = e.get("pooled", {})
            rows.append([method, f"{e['lr']:g}", _pct(pooled.get("sum")), _pct(pooled.get("mean")),
                         _pct(e["macro"]["sum"]), _pct(e["macro"]["mean"]),
                         *[_pct(e["languages"].get(lang, {}).get("sum")) for lang in langs],
                         "chosen" if e["lr"] == lrs[method] else "added past the grid's top"
                         if e["lr"] in s.get("extended", []) else ""])
    heads = [f"{lang} (n {first['languages'][lang]['n']})" for lang in langs]
    return Table(["method", "learning rate", "pooled summed (%)", "pooled per-token (%)", "macro summed (%)",
                  "macro per-token (%)", *heads, ""], rows,
                 "Validation accuracy of each learning rate tried (first seed; per language: summed)")


def _rule(first: Mapping[str, Any]) -> str:
    """The rule the search used, in words (results written before the pooled rule used the macro one)."""
    definition = "summed log-prob" if first["definition"] == "sum" else "per-token mean log-prob"
    if "tolerance" in first:
        over = ("over all validation pairs pooled (each pair counts once, so a language weighs by its pairs)"
                if first["average"] == "pooled" else "as the unweighted mean over languages")
        return (f"the largest rate whose {definition} accuracy {over} was within "
                f"{100 * first['tolerance']:g} points of the best was kept (rates that close count as tied, and a "
                "tie goes to the larger rate: at a fixed small number of steps it is the one that trains more); "
                "when that was the top of the grid, the next rate up was tried too")
    other = "per-token" if first["definition"] == "sum" else "summed"
    return (f"the one with the highest macro (unweighted mean over languages) {definition} accuracy on the "
            f"validation pairs was kept (a tie goes to the {other} accuracy, then to the smaller rate)")


def experiment_section(results: Mapping[str, Any]) -> Section:
    exp = results["experiment"]
    s = Section("experiment", "Experiment: data, seeds, learning rates")
    seeds = ", ".join(map(str, exp["seeds"]))
    s.blocks.append(Para(
        f"Every method was trained once per training seed ({seeds}) on the same training pairs, and every run was "
        f"scored on the {exp['config']['eval']['split']} split. Learning rate of each method: "
        + ", ".join(f"{m} {lr:g}" for m, lr in exp["learning_rates"].items()) + "."))
    s.blocks.append(data_table(exp["data_manifest"]))
    search = exp.get("lr_search")
    if search:
        first = next(iter(search.values()))
        base = exp.get("base_validation") or {}
        s.blocks.append(Para(
            f"Learning rates were chosen on the validation split, as the paper chose its hyper-parameters: each method "
            f"was trained at every learning rate of the grid with seed {first['seed']}, and {_rule(first)}; rule "
            f"fixed before the runs. That run is also the method's seed-{first['seed']} run; the other seeds were "
            f"trained at the chosen rate. The evaluation split played no part in the choice."
            + "".join(f" {m} used {of}'s rate instead of a search of its own."
                      for m, of in exp.get("lr_shared", {}).items())
            + (f" The base model's validation accuracy: pooled summed {_pct(base['pooled_sum'])}%, per-token "
               f"{_pct(base['pooled_mean'])}%; macro summed {_pct(base['sum'])}%, per-token {_pct(base['mean'])}%."
               if "pooled_sum" in base else
               f" The base model's macro validation accuracy: summed {_pct(base['sum'])}%, per-token "
               f"{_pct(base['mean'])}%." if base else "")))
        s.blocks.append(lr_table(search, exp["learning_rates"]))
    return s


def write_experiment_report(results: Mapping[str, Any], report_dir: Path) -> None:
    """Write report.md and report.html again with the experiment section after the headline."""
    sections = build_sections(results)
    sections.insert(1, experiment_section(results))
    plots = {k: report_dir / v for k, v in results.get("plots", {}).items()}
    write_reports(sections, results, report_dir, plots)
