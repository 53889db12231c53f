"""Runs grouped into methods: the runs of one group are replicates trained with different seeds.

A scored run's `group` (scoring.json; default: its own name) names the method label its seeds
share, e.g. runs "capo-s42" and "capo-s7" of group "capo". Every method comparison is made
between groups, so its interval can cover the seed-to-seed spread (see `compare`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xlpo.errors import UserError
from xlpo.eval.analysis.accuracy import ALL
from xlpo.eval.analysis.runs import ScoredRun, curve_summary


@dataclass
class Group:
    """The runs of one method that differ only in their training seed."""

    label: str
    runs: list[ScoredRun]

    @property
    def method(self) -> str:
        return self.runs[0].method

    @property
    def alpha(self) -> float | None:
        return self.runs[0].alpha

    @property
    def rrm(self) -> str | None:
        return self.runs[0].rrm

    @property
    def trained(self) -> bool:
        return self.runs[0].trained

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    @property
    def replicated(self) -> bool:
        """Whether the group's interval can cover its seed-to-seed spread: untrained, or two seeds or more."""
        return not self.trained or len(self.runs) >= 2

    def describe(self) -> str:
        """"capo (2 seeds: 42, 7)" / "base (untrained)": for the rows that say what was compared."""
        if not self.trained:
            return f"{self.label} (untrained)"
        seeds = ", ".join("?" if s is None else str(s) for s in self.seeds)
        return f"{self.label} ({len(self.runs)} seed{'s' if len(self.runs) > 1 else ''}: {seeds})"


def group_runs(runs: Sequence[ScoredRun]) -> list[Group]:
    """Runs grouped by `group`, in order of first appearance; UserError when a group mixes methods or
    loss settings, or repeats a seed (two runs of one seed are not independent replicates)."""
    groups: dict[str, Group] = {}
    for run in runs:
        groups.setdefault(run.group, Group(run.group, [])).runs.append(run)
    for g in groups.values():
        first = g.runs[0]
        for other in g.runs[1:]:
            if (other.method, other.alpha, other.rrm, other.trained) != (first.method, first.alpha, first.rrm,
                                                                         first.trained):
                raise UserError(f"runs {first.name!r} and {other.name!r} share group {g.label!r} (scoring.json "
                                "'group') but differ in method or loss settings: a group holds seeds of one method")
        seeds = [s for s in g.seeds if s is not None]
        if len(set(seeds)) < len(seeds):
            dup = next(s for s in seeds if seeds.count(s) > 1)
            raise UserError(f"group {g.label!r} has two runs with seed {dup}: replicates need different seeds")
    return list(groups.values())


def pick_group(groups: Sequence[Group], key: str, role: str) -> Group | None:
    """The group labelled `key`, else the only group of method `key`; None if none; UserError if ambiguous
    or if `key` names one seed of a group (method comparisons are made between whole groups)."""
    for g in groups:
        if g.label == key:
            return g
    for g in groups:
        if any(r.name == key for r in g.runs):
            raise UserError(f"--{role} {key!r} is one seed of group {g.label!r}: pass the group label (to compare "
                            "one seed alone, analyze only that run's directory)")
    matches = [g for g in groups if g.method == key]
    if len(matches) > 1:
        names = [r.name for g in matches for r in g.runs]
        raise UserError(f"--{role} {key!r} matches {len(names)} runs of that method in {len(matches)} groups "
                        f"({', '.join(names)}): pass one group or run name")
    return matches[0] if matches else None


def compared_groups(groups: Sequence[Group], target: Group | None) -> list[Group]:
    """Groups in the method comparisons: all but the alpha-sweep siblings of the target (same method and
    RRM orientation, another alpha), which appear in the alpha sweep instead."""
    if target is None:
        return list(groups)
    return [g for g in groups if g is target or g.label == target.label
            or not (g.method == target.method and g.rrm == target.rrm and g.alpha != target.alpha)]


def group_accuracy(group: Group, accuracy: Mapping[str, Mapping]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per language and definition: each seed's accuracy, their mean and standard deviation (the
    seed-to-seed spread), from the runs' accuracy tables."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    tables = [accuracy[r.name] for r in group.runs]
    langs = sorted({k for t in tables for k in t if k != ALL}) + [ALL]
    for lang in langs:
        for definition in ("sum", "mean", "implicit"):
            cells = [t.get(lang, {}).get(definition) for t in tables]
            if any(c is None for c in cells):
                continue
            values = np.array([c["acc"] for c in cells])
            out.setdefault(lang, {})[definition] = {
                "mean": float(values.mean()), "per_seed": values.tolist(),
                "sd": float(values.std(ddof=1)) if values.size > 1 else None, "n": cells[0]["n"]}
    return out


def macro_accuracy(table: Mapping[str, Mapping], definition: str = "sum") -> float | None:
    """Unweighted mean over languages of a (group) accuracy table's "mean" (or "acc") entries."""
    vals = [v[definition].get("mean", v[definition].get("acc")) for k, v in table.items()
            if k != ALL and definition in v]
    return float(np.mean(vals)) if vals else None


def alpha_sweep(groups: Sequence[Group], group_acc: Mapping[str, Mapping], method: str | None = None
                ) -> list[dict[str, Any]]:
    """Groups whose loss_params have alpha, sorted by (method, rrm, alpha): the final and mean training
    loss averaged over seeds (from metrics.jsonl) and the evaluation accuracy ("sum" and "mean", pooled
    over languages: each seed's and their mean)."""
    out = []
    for g in groups:
        if g.alpha is None or (method is not None and g.method != method):
            continue
        summaries = [curve_summary(r.curve) for r in g.runs if r.curve]
        final = [s["final_loss"] for s in summaries if s["final_loss"] is not None]
        mean = [s["mean_loss"] for s in summaries if s["mean_loss"] is not None]
        acc = group_acc[g.label].get(ALL, {})
        out.append({"name": g.label, "method": g.method, "rrm": g.rrm, "alpha": g.alpha, "seeds": len(g.runs),
                    "final_loss": float(np.mean(final)) if final else None,
                    "mean_loss": float(np.mean(mean)) if mean else None,
                    "acc_sum": acc.get("sum"), "acc_mean": acc.get("mean")})
    return sorted(out, key=lambda e: (e["method"], str(e["rrm"]), e["alpha"]))
