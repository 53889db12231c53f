"""Per-language analysis of scored runs: the CAPO paper's Figures 4-7 and 9, with intervals.

Pure functions (numpy/scipy) over the rows of scored runs, plus `analyze`, which loads run
directories, computes everything, and writes `results.json`, the plots, `report.md` and a
self-contained `report.html`. The definitions are documented in docs/analysis.md; in short:

- reward accuracy: share of pairs whose chosen response beats the rejected one, under three
  definitions: `sum` (summed log-probs, the CAPO paper's Appendix B), `mean` (per-token mean
  log-probs, SimPO's score), `implicit` (DPO's implicit reward, needs reference log-probs).
  Ties count as wrong. 95% percentile bootstrap intervals over pairs, seeded.
- reward difference (Fig. 6): per pair `logp_chosen - logp_rejected` in nats (reference-free,
  the score behind Appendix B's accuracy); `mean` and `implicit` are available too.
- KDE-weighted mean: the mean of the Gaussian KDE of the differences, integral x f(x) dx /
  integral f(x) dx over the range a KDE plot draws, [min - 3h, max + 3h] (what one computes from
  a plotted KDE curve; exact here). The density-weighted mean of the sample points
  (sum x_i f(x_i) / sum f(x_i)) is reported as a sensitivity check.
- shift: KDE-weighted mean of the target method minus that of the baseline, per language.

Modules (each imports only those above it; nothing imports `driver`):

- `accuracy`: shared constants and row helpers, the seeded bootstrap, reward accuracy and its
  paired differences, per-pair reward differences.
- `kde`: the Gaussian KDE, its plotting grid, KDE-weighted means and the shift between runs.
- `correlation`: BLEU per language and Pearson correlations across languages.
- `runs`: scored run directories (`ScoredRun`, reading and validation), training logs, curve and
  tokenization summaries, run selection and the alpha sweep.
- `paper`: the paper's numbers and the verdicts of each claim against ours.
- `driver`: `analyze`, which ties them together and writes results, plots and reports.

This package re-exports the public names, so `from xlpo.eval.analysis import ...` keeps working.
"""

from xlpo.eval.analysis.accuracy import (
    ALL,
    CI_LEVEL,
    DEFINITIONS,
    KINDS,
    accuracy_difference,
    accuracy_table,
    pair_correct,
    pair_margins,
    reward_differences,
)
from xlpo.eval.analysis.correlation import bleu_by_language, fisher_interval, pearson
from xlpo.eval.analysis.driver import analyze
from xlpo.eval.analysis.kde import (
    GRID_CUT,
    GRID_SIZE,
    KDE_METHODS,
    kde_curve,
    kde_grid,
    kde_shift,
    kde_weighted_mean,
    kde_weighted_means,
)
from xlpo.eval.analysis.paper import MIN_PAIRS, PAPER, against_paper
from xlpo.eval.analysis.runs import (
    ScoredRun,
    alpha_sweep,
    compared_runs,
    curve_summary,
    load_run,
    load_training_log,
    pick_run,
    read_scores,
    tokenization_diagnostics,
)

__all__ = [
    "ALL",
    "CI_LEVEL",
    "DEFINITIONS",
    "GRID_CUT",
    "GRID_SIZE",
    "KDE_METHODS",
    "KINDS",
    "MIN_PAIRS",
    "PAPER",
    "ScoredRun",
    "accuracy_difference",
    "accuracy_table",
    "against_paper",
    "alpha_sweep",
    "analyze",
    "bleu_by_language",
    "compared_runs",
    "curve_summary",
    "fisher_interval",
    "kde_curve",
    "kde_grid",
    "kde_shift",
    "kde_weighted_mean",
    "kde_weighted_means",
    "load_run",
    "load_training_log",
    "pair_correct",
    "pair_margins",
    "pearson",
    "pick_run",
    "read_scores",
    "reward_differences",
    "tokenization_diagnostics",
]
