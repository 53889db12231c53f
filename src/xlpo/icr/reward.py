"""ICR's reward arithmetic as pure functions: implicit rewards, the length penalty fit, pair selection.

The reward of a response is `beta * (log pi(y|x') - log pi_ref(y|x'))` where x' depends on the
kind (R_c: prefix + English instruction; R_m: the target-language prompt; R_t: the English
instruction, scoring the response translated to English). Pairs are chosen on the penalised
reward `beta * (delta - alpha * chars)`; alpha is fitted per language so that chosen and
rejected responses have the same mean length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

REWARD_KINDS = ("crosslingual", "multilingual", "translate")
SYMBOLS = {"crosslingual": "R_c", "multilingual": "R_m", "translate": "R_t"}


def implicit_rewards(policy_logps: Sequence[float], reference_logps: Sequence[float], beta: float) -> np.ndarray:
    """beta * (log pi - log pi_ref) per response (summed response log-probs)."""
    return beta * (np.asarray(policy_logps, dtype=np.float64) - np.asarray(reference_logps, dtype=np.float64))


def penalised_rewards(rewards: Sequence[float], lengths: Sequence[float], alpha: float, beta: float) -> np.ndarray:
    """beta * (delta - alpha * |y|) = rewards - beta * alpha * |y|.

    alpha is per character of the UNSCALED log-ratio, as in the authors' code (which has no beta);
    the paper's alpha in Eq. 9 is beta times this one. The choice of pairs does not depend on beta.
    """
    return np.asarray(rewards, dtype=np.float64) - beta * alpha * np.asarray(lengths, dtype=np.float64)


def select_pair(penalised: Sequence[float]) -> tuple[int, int]:
    """(argmax, argmin) of the penalised rewards; ties go to the first response."""
    values = np.asarray(penalised, dtype=np.float64)
    return int(np.argmax(values)), int(np.argmin(values))


def alpha_grid(start: float = 0.0, stop: float = 1.0, step: float = 0.001) -> np.ndarray:
    """0, 0.001, ..., 0.999 by default (the authors' grid); exact decimals, stop excluded."""
    count = int(round((stop - start) / step))
    return np.round(start + step * np.arange(count), 10)


@dataclass(frozen=True)
class AlphaFit:
    alpha: float
    length_gap: float  # mean chars(chosen) - chars(rejected) at the fitted alpha
    gap_at_zero: float  # the same without a length penalty
    groups: int


def _padded(values: Sequence[Sequence[float]], fill: float) -> np.ndarray:
    width = max(len(v) for v in values)
    out = np.full((len(values), width), fill, dtype=np.float64)
    for i, v in enumerate(values):
        out[i, :len(v)] = v
    return out


def length_gaps(deltas: Sequence[Sequence[float]], lengths: Sequence[Sequence[float]],
                alphas: Sequence[float]) -> np.ndarray:
    """Mean chars(argmax) - chars(argmin) over groups, for each alpha (on the unscaled log-ratio).

    Groups without a pair at that alpha (all penalised rewards equal) are left out; NaN if none is left.
    """
    d = _padded(deltas, np.nan)
    lens = _padded(lengths, 0.0)
    valid = ~np.isnan(d)
    rows = np.arange(d.shape[0])[None, :]
    gaps = []
    for start in range(0, len(alphas), 128):  # (alphas, groups, N) in slices: bounded memory
        a = np.asarray(alphas[start:start + 128], dtype=np.float64)[:, None, None]
        penalised = d[None] - a * lens[None]
        best = np.where(valid[None], penalised, -np.inf).argmax(-1)
        worst = np.where(valid[None], penalised, np.inf).argmin(-1)
        diff = lens[rows, best] - lens[rows, worst]
        # A group whose penalised rewards all tie (argmax = argmin) gives no pair: it does not count.
        paired = best != worst
        count = paired.sum(-1)
        total = np.where(paired, diff, 0.0).sum(-1)
        gaps.append(np.where(count > 0, total / np.maximum(count, 1), np.nan))
    return np.concatenate(gaps)


def fit_length_penalty(deltas: Sequence[Sequence[float]], lengths: Sequence[Sequence[float]],
                       grid: Sequence[float] | None = None) -> AlphaFit:
    """The alpha of `grid` whose pairs (argmax vs argmin of delta - alpha*len per group) minimise
    |mean(len(chosen) - len(rejected))|; among equally good alphas the smallest wins, so alpha = 0
    when the pairs are already balanced. `deltas[g]` are one group's (prompt's) unscaled log-ratios.
    An alpha at which every group's rewards tie (no pair at all) is never chosen over one with pairs.
    """
    if not deltas:
        raise ValueError("fit_length_penalty needs at least one group")
    grid = alpha_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    gaps = length_gaps(deltas, lengths, grid)
    # Round before comparing: the same gap reached through different sums must count as a tie.
    best = int(np.argmin(np.where(np.isnan(gaps), np.inf, np.round(np.abs(gaps), 9))))
    zero = float(length_gaps(deltas, lengths, [0.0])[0])
    return AlphaFit(alpha=float(grid[best]), length_gap=float(gaps[best]), gap_at_zero=zero, groups=len(deltas))
