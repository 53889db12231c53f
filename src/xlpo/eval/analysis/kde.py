"""KDE of reward differences: the evaluation grid, the plotted curves and the KDE-weighted mean (Fig. 6).

Everything here is about one estimator (scipy's Gaussian KDE, Scott's bandwidth) and the range a
KDE plot draws, so the plotted curves, the weighted means and the bootstrapped shift (in
`compare`) agree on the same bandwidth and cut. The vectorised `kde_weighted_means` exists
because the shift's bootstrap evaluates thousands of resamples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import ndtr
from scipy.stats import gaussian_kde

KDE_METHODS = ("grid", "density")
GRID_SIZE = 256  # points of the plotted KDE curves
GRID_CUT = 3.0  # the KDE range: this many bandwidths beyond the data (seaborn kdeplot's default cut)


def _kde(values: np.ndarray):
    """scipy's Gaussian KDE (Scott's bandwidth) or None when degenerate (fewer than 2 distinct values)."""
    if values.size < 2 or np.ptp(values) == 0:
        return None
    try:
        return gaussian_kde(values)
    except (np.linalg.LinAlgError, ValueError):
        return None


def kde_grid(values: np.ndarray, kde=None, size: int = GRID_SIZE, cut: float = GRID_CUT) -> np.ndarray:
    """Evaluation grid: from min - cut*h to max + cut*h, h the KDE bandwidth."""
    kde = kde if kde is not None else _kde(values)
    h = math.sqrt(float(kde.covariance[0, 0])) if kde is not None else 1.0
    return np.linspace(values.min() - cut * h, values.max() + cut * h, size)


def kde_weighted_mean(values, method: str = "grid", cut: float = GRID_CUT) -> float:
    """KDE-weighted mean of a sample under scipy.stats.gaussian_kde's estimator (Gaussian kernel,
    Scott's bandwidth h = std(ddof=1) * n**(-1/5)).

    method "grid" (default): the mean of the KDE density over the range a KDE plot draws,
    integral x f(x) dx / integral f(x) dx over [min - cut*h, max + cut*h] (cut = 3, seaborn's
    kdeplot default). It is what one computes from a plotted KDE curve, sum(x*y)/sum(y) over its
    grid; here the integrals are exact (closed form in the normal cdf/pdf), so no grid
    resolution enters. For a Gaussian KDE it equals the sample mean up to the truncation at
    `cut` bandwidths.
    method "density": the sample points weighted by the density at them, sum x_i f(x_i) / sum f(x_i),
    which leans toward the mode and discounts tails (a sensitivity check).
    Degenerate samples: empty gives nan; one value, or all values equal, gives that value.
    """
    if method not in KDE_METHODS:
        raise ValueError(f"unknown KDE-weighted mean method {method!r}; expected one of {', '.join(KDE_METHODS)}")
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    return float(kde_weighted_means(x[None, :], method, cut)[0])


def kde_weighted_means(samples: np.ndarray, method: str = "grid", cut: float = GRID_CUT) -> np.ndarray:
    """`kde_weighted_mean` of each row of a (B, n) array, vectorised (used by the bootstrap).

    Written out in numpy rather than through scipy.stats.gaussian_kde, whose evaluation does a
    triangular solve per call; the tests check both give the same numbers.
    """
    if method not in KDE_METHODS:
        raise ValueError(f"unknown KDE-weighted mean method {method!r}; expected one of {', '.join(KDE_METHODS)}")
    x_all = np.asarray(samples, dtype=float)
    n_rows, n = x_all.shape
    out = np.full(n_rows, np.nan)
    if n == 0:
        return out
    h_all = x_all.std(axis=1, ddof=1) * n ** (-0.2) if n > 1 else np.zeros(n_rows)
    degenerate = ~(h_all > 0)
    out[degenerate] = x_all[degenerate, 0]
    todo = np.flatnonzero(~degenerate)
    if method == "grid":
        x, h = x_all[todo], h_all[todo][:, None]
        lo = (x.min(axis=1, keepdims=True) - cut * h - x) / h  # standardised limits per kernel
        hi = (x.max(axis=1, keepdims=True) + cut * h - x) / h
        mass = ndtr(hi) - ndtr(lo)
        pdf = np.exp(-0.5 * lo * lo) - np.exp(-0.5 * hi * hi)
        first = x * mass + h * pdf / math.sqrt(2 * math.pi)  # integral of x * kernel_i(x) over the range
        out[todo] = first.sum(axis=1) / mass.sum(axis=1)
        return out
    step = max(1, int(2_000_000 // (n * n)))  # bounds memory (~16 MB per chunk)
    for start in range(0, todo.size, step):
        rows = todo[start:start + step]
        x, h = x_all[rows], h_all[rows][:, None, None]
        z = (x[:, :, None] - x[:, None, :]) / h
        w = np.exp(-0.5 * z * z).sum(axis=2)  # the normalising constant cancels in the ratio
        out[rows] = (w * x).sum(axis=1) / w.sum(axis=1)
    return out


def kde_curve(values, grid: np.ndarray) -> np.ndarray | None:
    """Density of the KDE of `values` on `grid` (None when degenerate)."""
    kde = _kde(np.asarray(values, dtype=float))
    return None if kde is None else kde(grid)


def kde_curves(samples: Mapping[str, np.ndarray], size: int = GRID_SIZE) -> dict[str, Any] | None:
    """The curves a KDE plot of several samples draws on one shared grid: {"grid": [...], "density":
    {name: [...] or None (degenerate: see "point")}, "point": {name: value of a degenerate sample}}."""
    samples = {k: np.asarray(v, float) for k, v in samples.items() if np.asarray(v).size}
    if not samples:
        return None
    grid = kde_grid(np.concatenate(list(samples.values())), size=size)
    density, point = {}, {}
    for name, values in samples.items():
        curve = kde_curve(values, grid)
        density[name] = None if curve is None else curve.tolist()
        if curve is None:
            point[name] = float(values[0])
    return {"grid": grid.tolist(), "density": density, "point": point}
