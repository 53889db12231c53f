"""Win rate and AlpacaEval 2.0's length-controlled win rate (LC), with 95% bootstrap intervals.

LC (Dubois et al., 2024, "Length-Controlled AlpacaEval") fits a logistic regression (soft labels)
of the judge's preference for the candidate on tanh of the standardised length difference, the
instruction's difficulty and a model term; LC is the mean prediction with the length term at 0.
The AlpacaEval 2.0 leaderboard and the ICR paper report `length_controlled_v1`: that regression
fitted together with the judge's annotations of two "gamed" GPT-4 Turbo baselines (prompted to be
verbose and concise; weight 0.1 each, no model term), which pull the length and difficulty
coefficients toward theirs, L1-penalised with the penalty chosen by 5-fold grouped
cross-validation on log-loss. The fit is scikit-learn's LogisticRegressionCV called as alpaca_eval
calls it, so the numbers are alpaca_eval's (tests/test_bench_xalpacaeval_lc.py). Without the gamed
annotations the same fit is AlpacaEval's `length_controlled_noreg` (difficulty, no gamed rows) or
`length_controlled_minimal` (neither): other numbers, labelled as such.
Intervals resample instructions (clusters) and refit each resample at the penalty chosen on all
annotations, with a batched solver of the same objective (`fit_batched`).
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

CI_LEVEL = 0.95
PENALTIES = np.logspace(-4, 4, 10)  # LogisticRegressionCV's default grid of C (the inverse L1 strength)
CV_FOLDS = 5
GAMED_WEIGHT = 0.2 / 2  # length_controlled_v1's regularize_to_baseline_lambda, shared by two gamed baselines
NO_CV_PENALTY = 100.0  # alpaca_eval's C when it does not cross-validate; used below 2 annotations
SOLVER_SEED = 123  # liblinear's coordinate order, as alpaca_eval sets it

V1, NOREG, MINIMAL = "length_controlled_v1", "length_controlled_noreg", "length_controlled_minimal"
SHORT_NAMES = {V1: "LC", NOREG: "LC-noreg", MINIMAL: "LC-minimal"}
LABELS = {
    V1: "LC: AlpacaEval 2.0's length-controlled win rate (length_controlled_v1), as on its leaderboard",
    NOREG: "LC-noreg: LC without the gamed-baseline regularisation (AlpacaEval's length_controlled_noreg): "
           "not comparable with the AlpacaEval leaderboard",
    MINIMAL: "LC-minimal: LC without difficulty term or gamed-baseline regularisation (AlpacaEval's "
             "length_controlled_minimal): not comparable with the AlpacaEval leaderboard",
}


@dataclass(frozen=True)
class Annotations:
    """One row per judge annotation of one language.

    preference: probability that the candidate's answer is better, in [0, 1] (a tie is 0.5);
    delta_chars: len(candidate answer) - len(baseline answer), in characters;
    group: the instruction each annotation belongs to (both orders of one instruction share it);
    difficulty: optional per-annotation instruction difficulty (AlpacaEval's gamma_x).
    """

    preference: np.ndarray
    delta_chars: np.ndarray
    group: Sequence[str]
    difficulty: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.preference)
        if len(self.delta_chars) != n or len(self.group) != n or (self.difficulty is not None and len(self.difficulty) != n):
            raise ValueError("Annotations: preference, delta_chars, group and difficulty need one value per row")
        p = np.asarray(self.preference, dtype=float)
        if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
            raise ValueError("Annotations: preferences must lie in [0, 1] (leave unparseable ones out)")


@dataclass(frozen=True)
class GamedBaselines:
    """AlpacaEval's gamed-baseline annotations (its df_gamed.csv), one row per annotation.

    preference: probability that the gamed output is better than the baseline's, in [0, 1];
    std_delta_len: (baseline length - gamed length) / its sd, as the file gives it;
    difficulty: the instruction's difficulty (the same per instruction in every row).
    """

    preference: np.ndarray
    std_delta_len: np.ndarray
    difficulty: np.ndarray


def check_method(method: str, ann: Annotations, gamed: GamedBaselines | None) -> None:
    """Refuse inputs that do not make `method`: v1 needs the gamed annotations and the difficulties,
    noreg the difficulties and no gamed rows, minimal neither (so a substitute is never computed by accident)."""
    if method not in LABELS:
        raise ValueError(f"unknown LC method {method!r}: expected one of {', '.join(LABELS)}")
    if (gamed is not None) != (method == V1):
        raise ValueError(f"{method}: AlpacaEval's gamed annotations (xlpo.bench.xalpacaeval.lc_files) are "
                         f"{'needed' if method == V1 else 'used only'} by {V1}")
    if (ann.difficulty is None) != (method == MINIMAL):
        raise ValueError(f"{method}: {'no' if method == MINIMAL else 'each annotation needs its'} instruction difficulty")


def _features(ann: Annotations, weights: np.ndarray) -> np.ndarray:
    """Rows [tanh(-delta / sd(delta)), difficulty?, 1] in alpaca_eval's column order, (B, n, p) for
    weights (B, n). alpaca_eval's length difference is baseline minus candidate; the sd (ddof=1,
    pandas' `.std()`) is taken under each set of weights, since it is part of the estimator. A zero
    sd gives a length term of 0."""
    delta = np.asarray(ann.delta_chars, dtype=float)
    total = weights.sum(axis=1, keepdims=True)
    mean = (weights * delta).sum(axis=1, keepdims=True) / total
    sd = np.sqrt((weights * (delta - mean) ** 2).sum(axis=1, keepdims=True) / np.maximum(total - 1.0, 1e-12))
    with np.errstate(divide="ignore", invalid="ignore"):
        length = np.where(sd > 0, np.tanh(-delta / np.where(sd > 0, sd, 1.0)), 0.0)
    columns = [length] + ([np.broadcast_to(np.asarray(ann.difficulty, dtype=float), length.shape)]
                          if ann.difficulty is not None else [])
    return np.stack([*columns, np.ones_like(length)], axis=-1)


def _training_rows(ann: Annotations, weights: np.ndarray, gamed: GamedBaselines | None):
    """(X (B, m, p), soft labels (m,), sample weights (B, m)): the gamed annotations first (no model
    term, weight GAMED_WEIGHT), then ours with `weights` (B, n)."""
    X, y = _features(ann, weights), np.asarray(ann.preference, dtype=float)
    if gamed is None:
        return X, y, weights
    B, k = len(weights), len(gamed.preference)
    Xg = np.column_stack([np.tanh(gamed.std_delta_len), gamed.difficulty, np.zeros(k)])
    return (np.concatenate([np.broadcast_to(Xg, (B, k, 3)), X], axis=1), np.concatenate([gamed.preference, y]),
            np.concatenate([np.full((B, k), GAMED_WEIGHT), weights], axis=1))


def _two_copies(X: np.ndarray, y: np.ndarray, w: np.ndarray):
    """Soft labels as classes: each row once as class 1 with weight y*w and once as class 0 with (1-y)*w."""
    return np.vstack([X, X]), np.repeat([1.0, 0.0], len(y)), np.concatenate([y * w, (1.0 - y) * w])


def _soft_log_loss(label, predicted, soft, weight):
    """Mean weighted log-loss of the soft labels (each row's two copies carry the same), alpaca_eval's CV score."""
    q = np.clip(predicted, 1e-15, 1 - 1e-15)
    return -np.mean(weight * (soft * np.log(q) + (1.0 - soft) * np.log(1.0 - q)))


def fit_cv(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
    """(coefficients, C): L1-penalised soft-label logistic regression, no intercept, with C chosen from
    PENALTIES by grouped K-fold CV (one group per row, both copies together) on `_soft_log_loss`;
    liblinear through LogisticRegressionCV, as alpaca_eval's fit_LogisticRegressionCV calls it."""
    import sklearn  # about 1 s to import: only when an LC is fitted
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    folds = min(CV_FOLDS, len(y))
    if folds < 2:
        return fit_fixed(X, y, w, NO_CV_PENALTY), NO_CV_PENALTY
    Xd, yd, wd = _two_copies(X, y, w)
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The fitted attributes of LogisticRegressionCV", FutureWarning)
        scorer = make_scorer(_soft_log_loss, response_method="predict_proba", greater_is_better=False)
        model = LogisticRegressionCV(Cs=PENALTIES, l1_ratios=(1.0,), solver="liblinear", fit_intercept=False,
                                     cv=GroupKFold(folds), random_state=SOLVER_SEED,
                                     scoring=scorer.set_score_request(soft=True, weight=True))
        model.set_fit_request(sample_weight=True)
        model.fit(Xd, yd, sample_weight=wd, groups=np.tile(np.arange(len(y)), 2), soft=np.tile(y, 2),
                  weight=np.tile(w, 2))
    return model.coef_[0].copy(), float(np.ravel(model.C_)[0])


def fit_fixed(X: np.ndarray, y: np.ndarray, w: np.ndarray, C: float) -> np.ndarray:
    """The same regression at a given C with liblinear (rows of weight 0 left out: they change nothing)."""
    from sklearn.linear_model import LogisticRegression  # about 1 s to import: only when an LC is fitted

    keep = w > 0
    Xd, yd, wd = _two_copies(X[keep], y[keep], w[keep])
    model = LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", fit_intercept=False, random_state=SOLVER_SEED)
    return model.fit(Xd, yd, sample_weight=wd).coef_[0].copy()


def _penalised_loss(z: np.ndarray, beta: np.ndarray, y: np.ndarray, w: np.ndarray, C: float) -> np.ndarray:
    """|beta|_1 / C + sum_i w_i [log(1 + e^z_i) - y_i z_i] per replicate: liblinear's objective / C."""
    return np.abs(beta).sum(axis=1) / C + (w * (np.logaddexp(0.0, z) - y * z)).sum(axis=1)


def fit_batched(X: np.ndarray, y: np.ndarray, w: np.ndarray, C: float, tol: float = 1e-10,
                max_iter: int = 100) -> np.ndarray:
    """`fit_fixed` for B replicates at once, X (B, m, p), w (B, m) -> (B, p): proximal Newton (the
    quadratic model plus the L1 term minimised by cyclic coordinate descent), step halving where the
    objective would rise. One liblinear call per resample costs milliseconds; this solves 1,000 together."""
    B, _, p = X.shape
    beta, z = np.zeros((B, p)), np.zeros(X.shape[:2])
    current = _penalised_loss(z, beta, y, w, C)
    for _ in range(max_iter):
        prob = expit(z)
        grad = np.einsum("bmp,bm->bp", X, w * (prob - y))
        hess = np.einsum("bmp,bmq,bm->bpq", X, X, w * prob * (1.0 - prob))
        target = beta.copy()
        for _ in range(50):  # coordinate descent on grad.d + d'Hd/2 + |beta + d|_1 / C
            for j in range(p):
                hjj = hess[:, j, j] + 1e-12
                moved = target - beta
                slope = grad[:, j] + np.einsum("bq,bq->b", hess[:, j], moved) - hjj * moved[:, j]
                u = beta[:, j] - slope / hjj
                target[:, j] = np.sign(u) * np.maximum(np.abs(u) - 1.0 / (C * hjj), 0.0)
        step, scale = target - beta, np.ones(B)
        for _ in range(60):
            trial = beta + scale[:, None] * step
            z_trial = np.einsum("bmp,bp->bm", X, trial)
            value = _penalised_loss(z_trial, trial, y, w, C)
            worse = value > current + 1e-12 * np.abs(current)
            if not worse.any():
                break
            scale = np.where(worse, scale / 2, scale)
        beta, z, current = trial, z_trial, np.minimum(value, current)
        if np.max(np.abs(scale[:, None] * step)) < tol:
            break
    return beta


def _lc(ann: Annotations, weights: np.ndarray, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LC (percent) per row of weights (B, n) and coef (B, p), and the predicted preferences (B, n)
    of every annotation with the length term at 0."""
    X0 = _features(ann, weights)
    X0[..., 0] = 0.0
    predicted = expit(np.einsum("bnp,bp->bn", X0, coef))
    return 100.0 * (weights * predicted).sum(axis=1) / weights.sum(axis=1), predicted


def _sem(values: np.ndarray) -> float | None:
    """Standard error of the mean (ddof=1), as AlpacaEval's standard_error and lc_standard_error."""
    return float(100 * np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None


def _glm(method: str, coef: np.ndarray) -> dict:
    """Coefficients by name; `length` is on tanh of candidate-minus-baseline length (> 0: longer wins)."""
    terms = ("length", "difficulty", "model") if method != MINIMAL else ("length", "model")
    out = dict(zip(terms, map(float, coef)))
    out["length"] = -out["length"]
    return out


def bootstrap_counts(groups: Sequence[str], n_boot: int, seed: int, label: str = "") -> dict[str, np.ndarray]:
    """How often each distinct group is drawn in each of `n_boot` resamples of the groups: {group: (B,)}.

    The generator is seeded by (seed, label), so adding a language never changes another's interval.
    Pass the same groups and label to resample several languages jointly (same instructions).
    """
    distinct = sorted(set(groups))
    rng = np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])
    counts = rng.multinomial(len(distinct), np.full(len(distinct), 1.0 / len(distinct)), size=n_boot) \
        if distinct and n_boot else np.zeros((n_boot, len(distinct)))
    return {g: counts[:, i].astype(float) for i, g in enumerate(distinct)}


def percentile_interval(values: np.ndarray) -> list[float] | None:
    """The central CI_LEVEL percentile interval of bootstrap values (nan left out); None if none."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    alpha = (1.0 - CI_LEVEL) / 2.0
    lo, hi = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return [float(lo), float(hi)]


def _replicates(ann: Annotations, weights: np.ndarray, gamed: GamedBaselines | None, C: float,
                chunk: int = 250) -> dict:
    """WR and LC of each resample (rows of `weights`, (B, n)), refitted at the penalty C; nan if empty."""
    y = np.asarray(ann.preference, dtype=float)
    wr, lc = np.full(len(weights), np.nan), np.full(len(weights), np.nan)
    usable = np.flatnonzero(weights.sum(axis=1) > 0)
    for start in range(0, len(usable), chunk):  # bounds memory: B x rows x 3 floats per chunk
        rows = usable[start:start + chunk]
        w = weights[rows]
        wr[rows] = 100.0 * (w * y).sum(axis=1) / w.sum(axis=1)
        lc[rows] = _lc(ann, w, fit_batched(*_training_rows(ann, w, gamed), C))[0]
    return {"win_rate": wr, "lc_win_rate": lc}


def summarize(ann: Annotations, counts: Mapping[str, np.ndarray] | None = None,
              gamed: GamedBaselines | None = None, method: str = V1) -> dict:
    """WR and LC (percent) of one language, AlpacaEval's standard errors, percentile-bootstrap intervals.

    LC is `method`: by default AlpacaEval 2.0's length_controlled_v1, which needs `gamed` and
    `ann.difficulty`; the substitutes (NOREG, MINIMAL) only when asked for (`check_method`). `counts` come from `bootstrap_counts` over (at least) this language's
    groups; None = no intervals. The bootstrap replicates (`_boot`) give averages over languages
    theirs. AlpacaEval's standard errors are the standard errors of the mean over annotations of
    the preferences (WR) and of the fitted preferences at length difference 0 (LC, the fit held fixed).
    """
    check_method(method, ann, gamed)
    n = len(ann.preference)
    out = {"annotations": n, "groups": len(set(ann.group)), "lc_method": method, "win_rate": None, "win_rate_ci": None,
           "lc_win_rate": None, "lc_win_rate_ci": None, "alpacaeval_standard_error": None,
           "alpacaeval_lc_standard_error": None, "glm": None, "glm_penalty_C": None, "_boot": None}
    if n == 0:
        return out
    ones = np.ones((1, n))
    y = np.asarray(ann.preference, dtype=float)
    X, labels, w = _training_rows(ann, ones, gamed)
    coef, C = fit_cv(X[0], labels, w[0])
    lc, predicted = (v[0] for v in _lc(ann, ones, coef[None]))
    boot = None if counts is None else _replicates(ann, np.stack([counts[g] for g in ann.group], axis=1), gamed, C)
    out.update(win_rate=100.0 * float(y.mean()), lc_win_rate=float(lc), alpacaeval_standard_error=_sem(y),
               alpacaeval_lc_standard_error=_sem(predicted), glm=_glm(method, coef), glm_penalty_C=C, _boot=boot)
    if boot:
        out.update(win_rate_ci=percentile_interval(boot["win_rate"]),
                   lc_win_rate_ci=percentile_interval(boot["lc_win_rate"]))
    return out


def average(summaries: Sequence[dict]) -> dict:
    """Mean WR and LC over languages (the papers' Avg column), with intervals from the joint replicates."""
    if not summaries or any(s["win_rate"] is None for s in summaries):
        return {"win_rate": None, "win_rate_ci": None, "lc_win_rate": None, "lc_win_rate_ci": None}
    out = {}
    for name in ("win_rate", "lc_win_rate"):
        out[name] = float(np.mean([s[name] for s in summaries]))
        boots = [s["_boot"][name] for s in summaries if s["_boot"] is not None]
        out[f"{name}_ci"] = percentile_interval(np.mean(boots, axis=0)) if len(boots) == len(summaries) else None
    return out
