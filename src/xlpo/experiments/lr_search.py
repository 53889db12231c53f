"""Choosing a method's learning rate on the validation split: one entry per lr tried, and the rule that picks one.

The rule is stated before any run. Each rate's score is its validation accuracy by the chosen
definition over **all validation pairs pooled** (each pair counts once, so a language weighs by
the pairs it has: nine-pair languages cannot outvote hundred-pair ones). Rates within `tolerance`
of the best score count as tied, and a tie goes to the larger rate: with a fixed, small number of
optimizer steps, of two rates that score alike the larger is the one that moves the model more, so
the method is not judged at a rate where it hardly trained. When the top of the grid is chosen, the
grid grows past its top (`next_rate`), a bounded number of times.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from xlpo.eval.analysis.accuracy import ALL

DEFINITIONS = ("sum", "mean")  # summed log-prob accuracy (the paper's Appendix B) and per-token
AVERAGES = ("pooled", "macro")  # all validation pairs pooled; unweighted mean over languages


def macro(accuracy: Mapping[str, Mapping], definition: str) -> float:
    """Unweighted mean over languages of a scored run's accuracy (its accuracy.json), "all" left out."""
    values = [entry[definition]["acc"] for lang, entry in accuracy.items() if lang != ALL]
    return sum(values) / len(values)


def validation_entry(lr: float, run: str, accuracy: Mapping[str, Mapping]) -> dict[str, Any]:
    """What one lr scored on the validation split: pooled and macro accuracy by definition, and each language's."""
    return {"lr": lr, "run": run,
            "pooled": {d: accuracy[ALL][d]["acc"] for d in DEFINITIONS},
            "macro": {d: macro(accuracy, d) for d in DEFINITIONS},
            "languages": {lang: {d: entry[d]["acc"] for d in DEFINITIONS} | {"n": entry["sum"]["n"]}
                          for lang, entry in accuracy.items() if lang != ALL}}


def choose_lr(entries: Sequence[Mapping[str, Any]], definition: str = "sum", average: str = "pooled",
              tolerance: float = 0.0) -> float:
    """The largest lr whose `average` accuracy by `definition` is within `tolerance` of the best one's."""
    if not entries:
        raise ValueError("no learning rate was tried")
    # Rounded so that equal accuracies summed in another order still tie.
    scores = {e["lr"]: round(e[average][definition], 12) for e in entries}
    best = max(scores.values())
    return max(lr for lr, score in scores.items() if score >= round(best - tolerance, 12))


def next_rate(grid: Sequence[float]) -> float:
    """The rate one step past the top of `grid`, at the ratio of its top two rates (x3 for a one-rate grid)."""
    rates = sorted(grid)
    ratio = rates[-1] / rates[-2] if len(rates) > 1 else 3.0
    return float(f"{rates[-1] * ratio:.6g}")  # 1.5e-3 * 3 is 4.5e-3, not 0.0045000000000000005
