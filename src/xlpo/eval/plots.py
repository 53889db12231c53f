"""PNG plots of the analysis (matplotlib's Agg canvas, ~100 dpi, no pyplot and no global state).

Every function takes plain data (as in results.json: the KDE curves are computed by the analysis),
writes one PNG and returns its path, or None when there is nothing to draw. Labels from the data
are drawn as plain text (math text off).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xlpo.fileio import atomic_path

DPI = 100
ALL = "all"
_RC = {"text.parse_math": False, "font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
       "axes.spines.right": False, "savefig.facecolor": "white"}
COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
          "#64b5cd"]


def _figure(width: float, height: float):
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _rc():
    return matplotlib.rc_context(_RC)


def _color(i: int, name: str | None = None, colors: Mapping[str, str] | None = None) -> str:
    """The run's colour when a palette is given (the same run has the same colour in every plot)."""
    if colors is not None and name in colors:
        return colors[name]
    return COLORS[i % len(COLORS)]


def plot_accuracy(accuracy: Mapping[str, Mapping], runs: Sequence[str], path: Path,
                  definitions: Sequence[str] = ("sum", "mean"), colors: Mapping[str, str] | None = None
                  ) -> Path | None:
    """Grouped bars: reward accuracy per language (and all) and run, 95% CI whiskers; one panel per definition."""
    langs = sorted({k for r in runs for k in accuracy.get(r, {}) if k != ALL})
    langs = [*langs, ALL]
    definitions = [d for d in definitions if any(d in accuracy.get(r, {}).get(ALL, {}) for r in runs)]
    if not runs or not definitions:
        return None
    with _rc():
        fig = _figure(max(7.0, 0.22 * len(langs) * len(runs) + 2.5), 2.8 * len(definitions))
        axes = fig.subplots(len(definitions), 1, squeeze=False)[:, 0]
        width = 0.8 / len(runs)
        x = np.arange(len(langs))
        for ax, definition in zip(axes, definitions):
            for i, run in enumerate(runs):
                vals, lo, hi = [], [], []
                for lang in langs:
                    e = accuracy.get(run, {}).get(lang, {}).get(definition)
                    if e is None:
                        vals.append(np.nan), lo.append(0), hi.append(0)
                        continue
                    vals.append(e["acc"])
                    lo.append(e["acc"] - e["lo"] if e.get("lo") is not None else 0)
                    hi.append(e["hi"] - e["acc"] if e.get("hi") is not None else 0)
                ax.bar(x - 0.4 + width * (i + 0.5), vals, width, yerr=[lo, hi], label=run, color=_color(i, run, colors),
                       error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "#333333"})
            ax.axhline(0.5, color="#999999", lw=0.8, ls="--")
            ax.set_xticks(x, langs)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("reward accuracy")
            ax.set_title({"sum": "summed log-prob: logp(chosen) > logp(rejected)",
                          "mean": "per-token mean log-prob", "implicit": "DPO implicit reward"}.get(definition,
                                                                                                 definition))
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside upper center", ncols=min(len(runs), 6), fontsize=8, frameon=False)
        return _save(fig, path)


def plot_kde(curves: Mapping[str, Mapping[str, Any]], path: Path, xlabel: str = "reward difference (nats)",
             colors: Mapping[str, str] | None = None) -> Path | None:
    """Small multiples: per language, the KDE curve of each group's reward differences (computed by the
    analysis on a shared grid; a degenerate sample is drawn as a vertical line at its value)."""
    langs = sorted(curves)
    if not langs:
        return None
    cols = min(4, len(langs))
    rows = -(-len(langs) // cols)
    with _rc():
        fig = _figure(3.0 * cols, 2.3 * rows + 0.4)
        axes = fig.subplots(rows, cols, squeeze=False)
        for k, lang in enumerate(langs):
            ax = axes[k // cols][k % cols]
            grid = np.asarray(curves[lang]["grid"], float)
            for i, (name, dens) in enumerate(curves[lang]["density"].items()):
                if dens is None:
                    ax.axvline(curves[lang]["point"][name], color=_color(i, name, colors), lw=1.2, label=name)
                    continue
                ax.plot(grid, dens, color=_color(i, name, colors), lw=1.3, label=name)
                ax.fill_between(grid, dens, color=_color(i, name, colors), alpha=0.08)
            ax.axvline(0, color="#999999", lw=0.8, ls="--")
            ax.set_title(lang)
            ax.set_yticks([])
            if k // cols == rows - 1:
                ax.set_xlabel(xlabel)
        for k in range(len(langs), rows * cols):
            axes[k // cols][k % cols].set_visible(False)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 6), frameon=False)
        return _save(fig, path)


def plot_shift(shift: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> Path | None:
    """Per-language shift of the KDE-weighted mean (target minus baseline) with 95% CI whiskers (seeds and pairs)."""
    langs = [k for k in shift if k != ALL] + ([ALL] if ALL in shift else [])
    if not langs:
        return None
    with _rc():
        fig = _figure(max(5.0, 0.6 * len(langs) + 2), 2.8)
        ax = fig.subplots()
        vals = [shift[k]["diff"] for k in langs]
        err = [[shift[k]["diff"] - shift[k]["lo"] if shift[k]["lo"] is not None else 0 for k in langs],
               [shift[k]["hi"] - shift[k]["diff"] if shift[k]["hi"] is not None else 0 for k in langs]]
        ax.bar(np.arange(len(langs)), vals, 0.6, yerr=err, color=[_color(0) if v >= 0 else _color(3) for v in vals],
               error_kw={"elinewidth": 0.8, "capsize": 2})
        ax.axhline(0, color="#666666", lw=0.8)
        ax.set_xticks(np.arange(len(langs)), langs)
        ax.set_ylabel("shift (nats)")
        ax.set_title(title)
        return _save(fig, path)


def plot_bleu_shift(bleu: Mapping[str, float], shift: Mapping[str, float], corr: Mapping[str, Any], path: Path,
                    title: str) -> Path | None:
    """Scatter: BLEU(chosen, rejected) per language against the shift, least-squares line, r and p."""
    langs = [k for k in corr.get("languages", []) if k in bleu and k in shift]
    if not langs:
        return None
    x = np.array([bleu[k] for k in langs], float)
    y = np.array([shift[k] for k in langs], float)
    with _rc():
        fig = _figure(5.0, 3.6)
        ax = fig.subplots()
        ax.scatter(x, y, color=_color(0), zorder=3)
        for xi, yi, lang in zip(x, y, langs):
            ax.annotate(lang, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=8)
        if len(langs) >= 2 and np.ptp(x) > 0:
            slope, icpt = np.polyfit(x, y, 1)
            xs = np.linspace(x.min(), x.max(), 2)
            ax.plot(xs, slope * xs + icpt, color=_color(3), lw=1)
        ax.axhline(0, color="#999999", lw=0.8, ls="--")
        ax.set_xlabel("BLEU of rejected against chosen")
        ax.set_ylabel("shift of KDE-weighted mean (nats)")
        r, p = corr.get("r"), corr.get("p")
        stat = f"r = {r:+.2f}, p = {p:.3f}, n = {corr.get('n')}" if r is not None else f"r undefined (n = {corr.get('n')})"
        ax.set_title(f"{title}\n{stat}")
        return _save(fig, path)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or values.size < window:
        return values
    kernel = np.ones(window) / window
    head = np.array([values[: i + 1].mean() for i in range(window - 1)])
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def plot_training(curves: Mapping[str, Mapping[str, Any]], path: Path, colors: Mapping[str, str] | None = None
                  ) -> Path | None:
    """Training loss and reward accuracy against step per run (thin: raw; thick: moving average)."""
    runs = [r for r, c in curves.items() if c and c.get("steps")]
    if not runs:
        return None
    with _rc():
        fig = _figure(10.0, 3.7)
        ax_loss, ax_acc = fig.subplots(1, 2)
        for i, run in enumerate(runs):
            c = curves[run]
            steps = np.array(c["steps"], float)
            for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
                vals = np.array([np.nan if v is None else v for v in c[key]], float)
                if np.isnan(vals).all():
                    continue
                ok = ~np.isnan(vals)
                window = max(1, int(ok.sum()) // 15)
                ax.plot(steps[ok], vals[ok], color=_color(i, run, colors), lw=0.6, alpha=0.35)
                ax.plot(steps[ok], _smooth(vals[ok], window), color=_color(i, run, colors), lw=1.6, label=run)
        ax_loss.set_title("training loss")
        ax_acc.set_title("training reward accuracy (rewards/accuracies)")
        for ax in (ax_loss, ax_acc):
            ax.set_xlabel("step")
        ax_acc.set_ylim(-0.02, 1.02)
        handles, labels = ax_loss.get_legend_handles_labels()
        if not handles:
            handles, labels = ax_acc.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 6), fontsize=8, frameon=False)
        return _save(fig, path)


def plot_alpha(sweep: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Final training loss and evaluation accuracy against alpha, one line per (method, rrm): the mean over
    seeds, each seed's value as a small dot."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for e in sweep:
        groups.setdefault(f"{e['method']} (rrm {e['rrm']})" if e.get("rrm") else e["method"], []).append(e)
    groups = {k: v for k, v in groups.items() if len({e["alpha"] for e in v}) >= 2}
    if not groups:
        return None
    with _rc():
        fig = _figure(10.0, 3.2)
        ax_loss, ax_acc = fig.subplots(1, 2)
        for i, (label, entries) in enumerate(groups.items()):
            entries = sorted(entries, key=lambda e: e["alpha"])
            pts = [(e["alpha"], e["final_loss"]) for e in entries if e.get("final_loss") is not None]
            if pts:
                ax_loss.plot(*zip(*pts), marker="o", color=_color(i), label=label)
            acc = [(e["alpha"], e["acc_sum"]) for e in entries if e.get("acc_sum")]
            if acc:
                ax_acc.plot([a for a, _ in acc], [d["mean"] for _, d in acc], marker="o", color=_color(i), label=label)
                seeds = [(a, v) for a, d in acc for v in d["per_seed"]]
                ax_acc.scatter(*zip(*seeds), s=9, color=_color(i), alpha=0.5)
        ax_loss.set_title("final training loss (mean over seeds)")
        ax_acc.set_title("evaluation reward accuracy (summed log-prob; dots: seeds)")
        for ax in (ax_loss, ax_acc):
            ax.set_xlabel("alpha")
        ax_loss.legend(fontsize=8, frameon=False)
        return _save(fig, path)


def plot_tokenization(tokenization: Mapping[str, Mapping[str, Any]], runs: Sequence[str], path: Path,
                      colors: Mapping[str, str] | None = None) -> Path | None:
    """Left: tokens per character of chosen and rejected per language; right: mean per-token
    log-prob of the chosen response per language and run."""
    if not runs:
        return None
    first = tokenization[runs[0]]
    langs = [k for k in first if k != ALL]
    if not langs:
        return None
    with _rc():
        fig = _figure(11.0, 3.0)
        ax_tpc, ax_lp = fig.subplots(1, 2)
        x = np.arange(len(langs))
        for j, side in enumerate(("chosen", "rejected")):
            vals = [first[k][f"tokens_per_char_{side}"] for k in langs]
            if all(v is not None for v in vals):
                ax_tpc.bar(x - 0.2 + 0.4 * j, vals, 0.4, color=_color(j), label=side)
        ax_tpc.set_xticks(x, langs)
        ax_tpc.set_title("tokens per character")
        ax_tpc.legend(fontsize=8, frameon=False)
        width = 0.8 / len(runs)
        for i, run in enumerate(runs):
            vals = [tokenization[run].get(k, {}).get("logp_per_token_chosen") for k in langs]
            ax_lp.plot(x - 0.4 + width * (i + 0.5), [np.nan if v is None else v for v in vals], marker="o",
                       ls="none", ms=4, color=_color(i, run, colors), label=run)
        ax_lp.set_xticks(x, langs)
        ax_lp.set_title("mean per-token log-prob of chosen (nats)")
        fig.legend(*ax_lp.get_legend_handles_labels(), loc="outside right upper", fontsize=7, frameon=False)
        return _save(fig, path)


def make_plots(results: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """All plots of an analysis (results.json's content) into `out_dir`; {name: path} of those drawn."""
    out_dir = Path(out_dir)
    compared = [r["name"] for r in results["runs"] if r["compared"]]
    shift = results["shift"]
    kind = results["reward_differences"]["kind"]
    label = {"sum": "logp(chosen) - logp(rejected) (nats)", "mean": "per-token mean margin (nats)",
             "implicit": "implicit-reward margin (nats)"}[kind]
    colors = {r["name"]: COLORS[i % len(COLORS)] for i, r in enumerate(results["runs"])}
    colors.update({g["label"]: COLORS[i % len(COLORS)] for i, g in enumerate(results["groups"])})
    made = {
        "accuracy": plot_accuracy(results["accuracy"], compared, out_dir / "accuracy.png", colors=colors),
        "kde": plot_kde(results["kde"]["curves"], out_dir / "kde.png", label, colors=colors),
        "shift": plot_shift(shift["grid"], out_dir / "shift.png",
                            f"KDE-weighted mean shift: {shift['target']} minus {shift['baseline']}")
        if shift["grid"] else None,
        "bleu_shift": plot_bleu_shift({k: v["bleu"] for k, v in results["bleu"]["languages"].items()},
                                      {k: v["diff"] for k, v in shift["grid"].items()},
                                      results["correlation"]["grid"], out_dir / "bleu_shift.png",
                                      f"BLEU vs shift ({shift['target']} minus {shift['baseline']})")
        if shift["grid"] and results["bleu"]["languages"] else None,
        "training": plot_training(results["training"]["curves"], out_dir / "training.png", colors),
        "alpha": plot_alpha(results["alpha_sweep"], out_dir / "alpha.png"),
        "tokenization": plot_tokenization(results["tokenization"]["runs"], compared, out_dir / "tokenization.png",
                                          colors),
    }
    for name, made_path in made.items():  # a plot of an earlier analysis in the same folder must not linger
        if made_path is None and (out_dir / f"{name}.png").is_file():
            (out_dir / f"{name}.png").unlink()
    return {k: v for k, v in made.items() if v is not None}
