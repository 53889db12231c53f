"""The typed results of each analysis step, which the verdicts and results.json are built from.

One dataclass per step of `driver.analyze` (roles, accuracy, shift, BLEU, training, tokenization)
and `Findings`, which holds them all. Plain data only: no step reads another's files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlpo.eval.analysis.compare import Comparison, SeedPools
from xlpo.eval.analysis.groups import Group
from xlpo.eval.analysis.runs import ScoredRun


@dataclass
class Roles:
    """Which group plays which part: `--baseline`, `--target`, the untrained base model, DPO+NLL."""

    baseline_key: str
    target_key: str
    runs: list[ScoredRun]
    groups: list[Group]
    compared: list[Group]  # in the method comparisons (the target's alpha siblings are not)
    baseline: Group | None = None
    target: Group | None = None
    base: Group | None = None
    dpo_nll: Group | None = None
    pools: SeedPools | None = None  # the study's seed variance, pooled over its replicated groups (compare)


@dataclass
class AccuracyFindings:
    per_run: dict[str, dict]  # run name -> accuracy_table
    per_group: dict[str, dict]  # group label -> groups.group_accuracy (the seed-to-seed spread)
    vs_baseline: dict[str, Comparison] = field(default_factory=dict)  # definition -> target minus baseline
    vs_dpo_nll: dict[str, Comparison] = field(default_factory=dict)  # definition -> target minus DPO+NLL
    gains: dict[str, dict[str, Comparison]] = field(default_factory=dict)  # definition -> group -> minus base
    rivals: dict[str, Comparison] = field(default_factory=dict)  # other method's group -> target minus it


@dataclass
class ShiftFindings:
    kind: str
    per_run: dict[str, dict]  # run name -> language -> summary of its reward differences
    curves: dict[str, Any]  # language -> kde.kde_curves of each compared group (all its seeds pooled)
    grid: Comparison | None = None  # the KDE-weighted mean shift, target minus baseline (primary)
    density: Comparison | None = None  # the density-weighted mean shift (sensitivity)
    mean: Comparison | None = None  # the shift of plain means
    vs_baseline: dict[str, Comparison] = field(default_factory=dict)  # every compared group, no interval


@dataclass
class BleuFindings:
    file: Path | None
    source: str
    languages: dict[str, dict]
    correlation: dict[str, dict]  # shift measure ("grid", "density", "mean") -> correlation.pearson


@dataclass
class Orientation:
    """CAPO runs with the RRM as printed (a/b) and inverted (b/a) at one alpha."""

    alpha: float
    paper: str
    inverse: str
    inverse_minus_paper: Comparison
    vs_baseline: dict[str, Comparison]


@dataclass
class TrainingFindings:
    curves: dict[str, dict]  # run name -> training log
    summaries: dict[str, dict]  # run name -> runs.curve_summary
    sweep: list[dict]  # groups.alpha_sweep of the target's method and orientation
    alpha_reference: Group | None = None  # the comparison fixed in advance: the paper's best alpha
    alpha_diffs: dict[str, Comparison] = field(default_factory=dict)  # group with larger alpha -> minus reference
    orientation: Orientation | None = None


@dataclass
class TokenizationFindings:
    per_run: dict[str, dict]  # run name -> runs.tokenization_diagnostics
    tokens_per_char: dict[str, float]
    tests: dict[str, dict]  # "baseline_acc" / "gain" -> correlation.pearson


@dataclass
class Findings:
    roles: Roles
    accuracy: AccuracyFindings
    shift: ShiftFindings
    bleu: BleuFindings
    training: TrainingFindings
    tokenization: TokenizationFindings
