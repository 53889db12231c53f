"""Choosing a method's learning rate on the validation split: one entry per lr tried, and the rule that picks one.

The rule is stated before any run: the highest macro validation accuracy (unweighted mean over
languages) by the chosen definition; a tie goes to the other definition, then to the smaller lr.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from xlpo.eval.analysis.accuracy import ALL

DEFINITIONS = ("sum", "mean")  # summed log-prob accuracy (the paper's Appendix B) and per-token


def macro(accuracy: Mapping[str, Mapping], definition: str) -> float:
    """Unweighted mean over languages of a scored run's accuracy (its accuracy.json), "all" left out."""
    values = [entry[definition]["acc"] for lang, entry in accuracy.items() if lang != ALL]
    return sum(values) / len(values)


def validation_entry(lr: float, run: str, accuracy: Mapping[str, Mapping]) -> dict[str, Any]:
    """What one lr scored on the validation split: macro accuracy by definition, and each language's."""
    return {"lr": lr, "run": run, "macro": {d: macro(accuracy, d) for d in DEFINITIONS},
            "languages": {lang: {d: entry[d]["acc"] for d in DEFINITIONS} | {"n": entry["sum"]["n"]}
                          for lang, entry in accuracy.items() if lang != ALL}}


def choose_lr(entries: Sequence[Mapping[str, Any]], definition: str = "sum") -> float:
    """The lr with the highest macro accuracy by `definition`; ties: the other definition, then the smaller lr."""
    if not entries:
        raise ValueError("no learning rate was tried")
    other = next(d for d in DEFINITIONS if d != definition)
    # Rounded so that equal accuracies summed in another order still tie.
    best = max(entries, key=lambda e: (round(e["macro"][definition], 12), round(e["macro"][other], 12), -e["lr"]))
    return best["lr"]
