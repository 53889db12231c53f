"""Win rate and length-controlled win rate (AlpacaEval 2.0's GLM) with 95% bootstrap intervals.

The length-controlled (LC) win rate of Dubois et al. (2024, "Length-Controlled AlpacaEval") fits a
logistic regression of the judge's preference for the candidate on a model term, the tanh of the
standardised length difference and, optionally, an instruction-difficulty term; LC is the win rate
that fit predicts with the length term set to 0. Intervals resample instructions (clusters).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

CI_LEVEL = 0.95
# A tiny L2 penalty on the log-likelihood sum keeps the fit finite when the data are separable
# (e.g. the judge always prefers the longer answer); at 805 annotations it moves no estimate visibly.
RIDGE = 1e-3
TERMS = ("model", "length", "difficulty")


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


def design(delta_chars: np.ndarray, weights: np.ndarray, difficulty: np.ndarray | None) -> np.ndarray:
    """Feature rows [1, tanh(delta / sd(delta)), difficulty] for each set of weights.

    `weights` is (B, n): the sd (ddof=1, as AlpacaEval's pandas `.std()`) is recomputed under each
    set of weights, because it is part of the estimator. A zero sd (all lengths equal) gives a
    length feature of 0. Returns (B, n, p).
    """
    delta = np.asarray(delta_chars, dtype=float)
    total = weights.sum(axis=1, keepdims=True)
    mean = (weights * delta).sum(axis=1, keepdims=True) / total
    var = (weights * (delta - mean) ** 2).sum(axis=1, keepdims=True) / np.maximum(total - 1.0, 1e-12)
    sd = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        length = np.where(sd > 0, np.tanh(delta / np.where(sd > 0, sd, 1.0)), 0.0)
    columns = [np.ones_like(length), length]
    if difficulty is not None:
        columns.append(np.broadcast_to(np.asarray(difficulty, dtype=float), length.shape))
    return np.stack(columns, axis=-1)


def _linear(X: np.ndarray, beta: np.ndarray) -> np.ndarray:
    return np.matmul(X, beta[..., None])[..., 0]  # (B, n)


def _objective(z: np.ndarray, beta: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float) -> np.ndarray:
    """Weighted soft-label log-likelihood minus (ridge / 2) * |beta|^2 per replicate (B,), from z = X beta.

    y log s(z) + (1 - y) log(1 - s(z)) = log s(z) - (1 - y) z, with log s(z) = -log(1 + e^-z).
    """
    loglik = -np.logaddexp(0.0, -z) - (1.0 - y) * z
    return (w * loglik).sum(axis=1) - 0.5 * ridge * (beta ** 2).sum(axis=1)


def fit_logistic(X: np.ndarray, y: np.ndarray, weights: np.ndarray, ridge: float = RIDGE,
                 max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Maximise `_objective` for each of B replicates at once by Newton's method with step halving.

    X: (B, n, p) or (n, p); y: (n,) soft labels in [0, 1]; weights: (B, n) or (n,). Returns (B, p)
    (or (p,) for unbatched input). The objective is strictly concave for ridge > 0.
    """
    single = X.ndim == 2
    X = X[None] if single else X
    w = np.broadcast_to(np.atleast_2d(weights), X.shape[:2]).astype(float)
    y = np.asarray(y, dtype=float)
    B, _, p = X.shape
    Xt = X.transpose(0, 2, 1)
    beta = np.zeros((B, p))
    z = np.zeros(X.shape[:2])
    current = _objective(z, beta, y, w, ridge)
    for _ in range(max_iter):
        prob = expit(z)
        grad = np.matmul(Xt, (w * (y - prob))[..., None])[..., 0] - ridge * beta
        hess = np.matmul(Xt, X * (w * prob * (1.0 - prob))[..., None]) + ridge * np.eye(p)
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        scale = np.ones(B)
        for _ in range(60):  # halve the step of each replicate whose objective did not improve
            trial = beta + scale[:, None] * step
            z_trial = _linear(X, trial)
            value = _objective(z_trial, trial, y, w, ridge)
            worse = value < current - 1e-12 * np.abs(current)
            if not worse.any():
                break
            scale = np.where(worse, scale / 2, scale)
        beta, z, current = trial, z_trial, value
        if np.max(np.abs(scale[:, None] * step)) < tol:
            break
    return beta[0] if single else beta


def win_rates(ann: Annotations, weights: np.ndarray, ridge: float = RIDGE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(WR, LC, coefficients) in percent for each row of `weights` (B, n): (B,), (B,), (B, p).

    WR = weighted mean preference. LC = weighted mean over annotations of the fitted probability
    with the length term set to 0: sigmoid(model + difficulty_coef * difficulty).
    """
    y = np.asarray(ann.preference, dtype=float)
    X = design(ann.delta_chars, weights, ann.difficulty)
    beta = fit_logistic(X, y, weights, ridge)
    total = weights.sum(axis=1)
    wr = 100.0 * (weights * y).sum(axis=1) / total
    X0 = X.copy()
    X0[..., 1] = 0.0  # no length difference
    lc = 100.0 * (weights * expit(_linear(X0, beta))).sum(axis=1) / total
    return wr, lc, beta


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


def summarize(ann: Annotations, counts: Mapping[str, np.ndarray] | None = None, ridge: float = RIDGE) -> dict:
    """WR and LC (percent) of one language with percentile-bootstrap intervals over instructions.

    `counts` come from `bootstrap_counts` over (at least) this language's groups; None = no intervals.
    Also returns the bootstrap replicates (`_boot`) so that averages over languages get intervals.
    """
    n = len(ann.preference)
    if n == 0:
        return {"annotations": 0, "win_rate": None, "win_rate_ci": None, "lc_win_rate": None, "lc_win_rate_ci": None,
                "glm": None, "_boot": None}
    wr, lc, beta = win_rates(ann, np.ones((1, n)), ridge)
    out = {"annotations": n, "groups": len(set(ann.group)), "win_rate": float(wr[0]),
           "lc_win_rate": float(lc[0]), "glm": dict(zip(TERMS, map(float, beta[0])))}
    boot = None
    if counts is not None:
        weights = np.stack([counts[g] for g in ann.group], axis=1)  # (B, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            usable = weights.sum(axis=1) > 0
            bwr, blc = np.full(len(weights), np.nan), np.full(len(weights), np.nan)
            if usable.any():
                bwr[usable], blc[usable], _ = win_rates(ann, weights[usable], ridge)
        boot = {"win_rate": bwr, "lc_win_rate": blc}
    out["win_rate_ci"] = percentile_interval(boot["win_rate"]) if boot else None
    out["lc_win_rate_ci"] = percentile_interval(boot["lc_win_rate"]) if boot else None
    out["_boot"] = boot
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
