"""Recompute the committed study's accuracy intervals and verdicts with the pooled seed variance (issue 23).

The study's run directories are not part of the repository, but its results.json holds what the
intervals need: each group's per-seed accuracy per language and definition, and each comparison's
difference, standard error and pair count. The old interval's pair variance is recovered exactly
(its variance minus its seed parts, which follow from the per-seed values); the new interval
combines that pair variance with the seed variance pooled over every replicated group, by the
same `compare.combine` that `xlpo analyze` uses. The verdicts follow from the new intervals by the
same rules (`paper.sign_verdict`, `paper.every_verdict`).

    python scripts/reinterval_study.py docs/study/results.json [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from xlpo.eval.analysis.accuracy import ALL
from xlpo.eval.analysis.compare import Difference, combine, floored, format_difference, language_floor
from xlpo.eval.analysis.paper import every_verdict, sign_verdict

MACRO = "macro"


def per_seed(group: Mapping, cell: str, definition: str) -> np.ndarray:
    """A group's per-seed value of one cell (a language, "all" pooled, or the macro mean over languages)."""
    if cell == MACRO:
        langs = [k for k in group if k != ALL]
        return np.mean([group[k][definition]["per_seed"] for k in langs], axis=0)
    return np.array(group[ALL if cell == "all" else cell][definition]["per_seed"])


def old_seed_part(group: Mapping, cell: str, definition: str, trained: bool) -> float:
    """The old interval's seed part of one side: own variance / k, a language's floored at the group's
    average over its languages (compare.py before issue 23)."""
    values = per_seed(group, cell, definition)
    if not trained or values.size < 2:
        return 0.0
    var = float(np.var(values, ddof=1))
    if cell not in (MACRO, "all"):
        langs = [k for k in group if k != ALL]
        var = max(var, float(np.mean([np.var(group[k][definition]["per_seed"], ddof=1) for k in langs])))
    return var / values.size


def pooled(groups: Mapping[str, Mapping], trained: Mapping[str, bool], cell: str, definition: str):
    """The seed variance of one cell pooled over every trained group with two seeds or more."""
    parts = [per_seed(g, cell, definition) for k, g in groups.items() if trained[k]]
    parts = [p for p in parts if p.size > 1]
    df = sum(p.size - 1 for p in parts)
    return (sum((p.size - 1) * float(np.var(p, ddof=1)) for p in parts) / df, float(df)) if df else None


def recompute(results: Mapping, comparison: Mapping, definition: str) -> dict[str, Difference]:
    """Every cell of one stored comparison, with the new interval."""
    groups = results["group_accuracy"]
    trained = {g["label"]: g["trained"] for g in results["groups"]}
    t, b = comparison["target"], comparison["baseline"]
    n_langs = len([k for k in groups[t] if k != ALL])
    cells = {**comparison["languages"], "all": comparison["all"], MACRO: comparison["macro"]}
    floor = language_floor([pooled(groups, trained, lang, definition) for lang in comparison["languages"]])
    out = {}
    for cell, old in cells.items():
        seed_parts = old_seed_part(groups[t], cell, definition, trained[t]) + old_seed_part(
            groups[b], cell, definition, trained[b])
        pair_var = max(old["se"] ** 2 - seed_parts, 0.0)
        pair_df = old["n"] - (n_langs if cell in (MACRO, "all") else 1)
        out[cell] = combine(old["diff"], (per_seed(groups[t], cell, definition), per_seed(groups[b], cell, definition)),
                            (trained[t], trained[b]), pair_var, pair_df, old["n"],
                            floored(pooled(groups, trained, cell, definition), None if cell in (MACRO, "all") else floor),
                            (-1.0, 1.0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--json", type=Path, help="write every recomputed interval here")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    acc = results["accuracy_difference"]
    table: dict[str, dict] = {}
    for definition in ("sum", "mean"):
        table[f"capo-dpo {definition}"] = recompute(results, acc["vs_baseline"][definition], definition)
        table[f"capo-dpo_nll {definition}"] = recompute(results, acc["vs_dpo_nll"][definition], definition)
        for group, comp in acc["gains"][definition].items():
            table[f"{group}-base {definition}"] = recompute(results, comp, definition)
    for group, comp in acc["rivals"].items():
        table[f"capo-{group} rival"] = recompute(results, comp, "sum")
    for group, comp in (results.get("alpha_differences") or {}).items():
        table[f"{group}-capo alpha"] = recompute(results, comp, "sum")
    orientation = results.get("rrm_orientation") or {}
    if orientation.get("inverse_minus_paper"):
        table["inverse-paper rrm"] = recompute(results, orientation["inverse_minus_paper"], "sum")
    for key, cells in table.items():
        print(key)
        for cell, d in cells.items():
            print(f"  {cell:6} {format_difference(d.to_dict(), words=True)}  (df {d.df:.1f})")
    non_en = [c for c in table["capo-dpo sum"] if c not in ("en", "all", MACRO)]
    rivals = [table[k][c] for k in table if k.endswith(" rival") for c in non_en]
    print("verdicts:")
    print("  capo beats dpo (macro summed):", sign_verdict(table["capo-dpo sum"][MACRO], True))
    print("  capo beats dpo_nll (macro summed):", sign_verdict(table["capo-dpo_nll sum"][MACRO], True))
    print("  capo highest in every language but en:", every_verdict(rivals, True))
    alpha = [cells["all"] for k, cells in table.items() if k.endswith(" alpha")]
    if alpha:
        print("  accuracy drops for alpha > 2:", every_verdict(alpha, False))
    if "inverse-paper rrm" in table:
        print("  printed RRM (a/b) beats the prose's (b/a):", sign_verdict(table["inverse-paper rrm"]["all"], False))
    if args.json:
        args.json.write_text(json.dumps({k: {c: d.to_dict() for c, d in cells.items()} for k, cells in table.items()},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
