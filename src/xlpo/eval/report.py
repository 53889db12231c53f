"""`report.md` and one self-contained `report.html` from the analysis results.

The report is first built as a list of sections made of neutral blocks (paragraphs, tables,
images, preformatted text); two renderers turn it into Markdown and HTML. Every string that comes
from the data (run names, language codes, paths, config values) is escaped by the renderers,
never by the callers: in HTML through `html.escape`, in Markdown through `html.escape` plus `|`
and backslash escaping in tables. The HTML inlines the PNG plots as base64 data URIs and loads
nothing from anywhere.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ALL = "all"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Image:
    name: str  # key in the plots mapping
    caption: str


@dataclass
class Pre:
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# formatting helpers (plain strings; escaping happens in the renderers)
# ---------------------------------------------------------------------------------------------

def _pct(e: Mapping | None) -> str:
    if not e:
        return "–"
    if e.get("lo") is None:
        return f"{e['acc'] * 100:.1f}"
    return f"{e['acc'] * 100:.1f} [{e['lo'] * 100:.1f}, {e['hi'] * 100:.1f}]"


def _diff_pts(e: Mapping | None) -> str:
    if not e:
        return "–"
    if e.get("lo") is None:
        return f"{e['diff'] * 100:+.1f}"
    return f"{e['diff'] * 100:+.1f} [{e['lo'] * 100:+.1f}, {e['hi'] * 100:+.1f}]"


def _num(v: Any, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def _shift(e: Mapping | None) -> str:
    if not e:
        return "–"
    s = f"{e['shift']:+.2f}"
    return s if e.get("lo") is None else f"{s} [{e['lo']:+.2f}, {e['hi']:+.2f}]"


def _corr(c: Mapping | None) -> str:
    if not c or c.get("r") is None:
        return f"undefined (n = {(c or {}).get('n', 0)} languages)" + (f": {c['note']}" if c and c.get("note") else "")
    s = f"r = {c['r']:+.3f}, p = {c['p']:.3f}, n = {c['n']} languages"
    if c.get("ci_lo") is not None:
        s += f", 95% CI [{c['ci_lo']:+.2f}, {c['ci_hi']:+.2f}]"
    if c.get("note"):
        s += f" ({c['note']})"
    return s


def _macro(table: Mapping[str, Mapping], definition: str) -> str:
    vals = [v[definition]["acc"] for k, v in table.items() if k != ALL and definition in v]
    return f"{sum(vals) / len(vals) * 100:.1f}" if vals else "–"


def _langs(tables: Mapping[str, Mapping], runs: Sequence[str]) -> list[str]:
    langs = sorted({k for r in runs for k in tables.get(r, {}) if k != ALL})
    return [*langs, ALL] if any(ALL in tables.get(r, {}) for r in runs) else langs


# ---------------------------------------------------------------------------------------------
# the report's content
# ---------------------------------------------------------------------------------------------

def build_sections(results: Mapping[str, Any], plots: Mapping[str, Any]) -> list[Section]:
    cfg = results["config"]
    runs = [r["name"] for r in results["runs"]]
    compared = [r["name"] for r in results["runs"] if r["compared"]]
    base, targ = results["shift"]["baseline"], results["shift"]["target"]
    sections = []

    # setup
    s = Section("setup", "Setup")
    s.blocks.append(Para(
        f"Baseline: {cfg['baseline']} (run {base or 'not found'}); target: {cfg['target']} (run {targ or 'not found'}). "
        f"Intervals are 95% percentile bootstrap intervals over pairs ({cfg['n_boot']} resamples, seed "
        f"{results['seeds']['bootstrap']}); differences between runs are paired on the pairs both scored."))
    seeds = results["seeds"]
    s.blocks.append(Table(
        ["run", "method", "loss params", "model", "adapter", "pairs", "languages", "ref", "train seed",
         "training run"],
        [[r["name"], r["method"], ", ".join(f"{k}={v}" for k, v in r["loss_params"].items()) if r["loss_params"]
          else "–", str(r["model"] or "–"), str(r["adapter"] or "–"), str(r["pairs"]), " ".join(r["languages"]),
          "yes" if r["has_reference"] else "no", str(seeds.get(f"train:{r['name']}", "–")),
          str(r["train_dir"] or "–")] for r in results["runs"]], "Scored runs"))
    notes = [f"{r['name']}: {n}" for r in results["runs"] for n in r["notes"]]
    if notes:
        s.blocks.append(Para("Notes: " + "; ".join(notes)))
    if len(compared) < len(runs):
        s.blocks.append(Para("Runs shown in the method comparisons: " + ", ".join(compared) + ". The others are "
                             "alpha-sweep siblings of the target and appear in the alpha sweep."))
    shown = ("note", "baseline", "target", "baseline_run", "target_run", "data_file", "bleu_source", "n_boot",
             "ci_level", "reward_kind", "reward_kinds_available")
    s.blocks.append(Table(["setting", "value"],
                          [["bootstrap seed", str(seeds.get("bootstrap"))],
                           *[[k, json.dumps(cfg[k]) if not isinstance(cfg[k], str) else cfg[k]]
                             for k in shown if k in cfg and cfg[k] is not None]],
                          "Analysis configuration (all of it, run directories included, in results.json)"))
    versions = list(results["versions"].items())
    per_row = 4
    s.blocks.append(Table(["package", "version"] * per_row,
                          [[c for k, v in versions[i:i + per_row] for c in (k, str(v))]
                           + ["", ""] * (per_row - len(versions[i:i + per_row]))
                           for i in range(0, len(versions), per_row)], "Versions"))
    sections.append(s)

    # against the paper
    s = Section("paper", "Against the paper")
    s.blocks.append(Para(
        "Each claim of the CAPO paper (arXiv 2511.07691) checked against these runs. Verdicts are computed from "
        "the intervals: 'agrees' when the 95% interval lies on the paper's side, 'contradicts' when it lies on the "
        "other side, 'inconclusive' when it includes no effect, 'cannot check' when a run or input is missing. "
        "Nothing here was tuned toward the paper's figures."))
    s.blocks.append(Table(["claim", "paper", "ours", "verdict", "detail"],
                          [[v["claim"], v["paper"], v["ours"], v["verdict"], v["detail"]]
                           for v in results["against_paper"]], "Claims"))
    sections.append(s)

    # accuracy
    s = Section("accuracy", "Reward accuracy per language")
    s.blocks.append(Para(
        "Share of pairs (%) whose chosen response (post-edit) scores higher than the rejected one (raw MT) under "
        "the run's own model, with 95% bootstrap intervals. 'sum' compares summed log-probs (the CAPO paper's "
        "Appendix B), 'mean' per-token mean log-probs (SimPO's score), 'implicit' DPO's implicit reward "
        "(needs reference log-probs). Ties count as wrong. The 'all' row pools every pair (stratified bootstrap)."))
    acc = results["accuracy"]
    for definition in ("sum", "mean", "implicit"):
        have = [r for r in runs if any(definition in v for v in acc.get(r, {}).values())]
        if not have:
            continue
        langs = _langs(acc, have)
        rows = [[lang, str(max((acc[r].get(lang, {}).get(definition, {}).get("n", 0) for r in have), default=0)),
                 *[_pct(acc[r].get(lang, {}).get(definition)) for r in have]] for lang in langs]
        rows.append(["macro avg", "–", *[_macro(acc[r], definition) for r in have]])
        s.blocks.append(Table(["lang", "pairs", *have], rows, f"Accuracy (%), definition '{definition}'"))
    s.blocks.append(Image("accuracy", "Reward accuracy per language and run (95% CI whiskers; dashed: chance)."))
    diffs = results["accuracy_difference"]
    if diffs.get("vs_baseline"):
        d, dm = diffs["vs_baseline"], diffs.get("vs_baseline_mean") or {}
        langs = list(d["languages"])
        rows = [[lang, str(d["languages"][lang]["n"]), _diff_pts(d["languages"][lang]),
                 _diff_pts((dm.get("languages") or {}).get(lang))] for lang in langs]
        rows.append(["all (pooled)", str(d["all"]["n"]) if d["all"] else "–", _diff_pts(d["all"]),
                     _diff_pts(dm.get("all"))])
        rows.append(["macro avg", "–", _diff_pts(d["macro"]), _diff_pts(dm.get("macro"))])
        s.blocks.append(Table(["lang", "pairs", "sum (points)", "mean (points)"], rows,
                              f"Accuracy difference {targ} minus {base} (percentage points, paired bootstrap)"))
    sections.append(s)

    # reward differences
    s = Section("kde", "Reward-difference distributions")
    kind = results["reward_differences"]["kind"]
    s.blocks.append(Para(
        {"sum": "Reward difference per pair = logp(chosen) - logp(rejected), summed over response tokens, in nats, "
                "under the run's own model (reference-free, the score behind the paper's reward accuracy).",
         "mean": "Reward difference per pair = per-token mean log-prob of chosen minus that of rejected (nats).",
         "implicit": "Reward difference per pair = DPO's implicit-reward margin (logp_c - ref_c) - (logp_r - ref_r) "
                     "(nats, not multiplied by beta)."}[kind]
        + " Curves: Gaussian KDE (scipy.stats.gaussian_kde, Scott's bandwidth h). KDE-weighted mean = the mean "
          "of the KDE density over the plotted range [min - 3h, max + 3h], integral x f(x) dx / integral f(x) dx "
          "(for a Gaussian KDE this is the sample mean up to that truncation); the density-weighted mean of the "
          "sample points, sum x_i f(x_i) / sum f(x_i), leans toward the mode (a sensitivity check)."))
    s.blocks.append(Image("kde", "KDE of the reward difference per language and run."))
    rd = results["reward_differences"]["runs"]
    have = [r for r in compared if r in rd]
    langs = _langs(rd, have)
    s.blocks.append(Table(["lang", *[f"{r}: KDE mean / density mean / share > 0" for r in have]],
                          [[lang, *[(f"{rd[r][lang]['kde_weighted_mean']:+.2f} / "
                                     f"{rd[r][lang]['density_weighted_mean']:+.2f} / "
                                     f"{rd[r][lang]['share_positive'] * 100:.0f}%") if lang in rd[r] else "–"
                                    for r in have]] for lang in langs],
                          "KDE-weighted means of the reward difference (nats)"))
    sections.append(s)

    # shift and BLEU
    s = Section("shift", "Shift and BLEU correlation")
    shift, dens = results["shift"]["grid"], results["shift"]["density"]
    bleu = results["bleu"]["languages"]
    if not shift:
        s.blocks.append(Para(f"No shift: needs scored runs for both the baseline ({cfg['baseline']}) and the target "
                             f"({cfg['target']})."))
    else:
        s.blocks.append(Para(
            f"Shift = KDE-weighted mean of {targ}'s reward differences minus {base}'s, per language, with a 95% "
            f"bootstrap interval (pairs resampled jointly when both runs scored the same pairs). BLEU: corpus BLEU "
            f"(sacrebleu) of the rejected text against the chosen one, from {results['bleu']['file'] or 'no file'} "
            f"({results['bleu']['source']})."))
        langs = [k for k in shift if k != ALL] + [ALL]
        s.blocks.append(Table(
            ["lang", "BLEU", "chrF", f"{base} KDE mean", f"{targ} KDE mean", "shift [95% CI]",
             "shift (density-weighted) [95% CI]", "shift of plain means"],
            [[lang, _num(bleu.get(lang, {}).get("bleu"), ".1f"), _num(bleu.get(lang, {}).get("chrf"), ".1f"),
              f"{shift[lang]['baseline']:+.2f}", f"{shift[lang]['target']:+.2f}", _shift(shift[lang]),
              _shift(dens.get(lang)), f"{shift[lang]['mean_shift']:+.2f}"] for lang in langs],
            f"Shift of the reward-difference distribution, {targ} minus {base} (nats)"))
        s.blocks.append(Image("shift", "Shift per language with 95% CI."))
        corr = results["correlation"]
        s.blocks.append(Table(["shift measure", "Pearson correlation with BLEU across languages"],
                              [["KDE-weighted mean (primary)", _corr(corr["grid"])],
                               ["density-weighted mean", _corr(corr["density"])],
                               ["plain mean", _corr(corr["mean"])]],
                              "BLEU(chosen, rejected) against the shift (scipy.stats.pearsonr)"))
        s.blocks.append(Image("bleu_shift", "BLEU against the shift per language, with the least-squares line."))
    others = results["shift"]["vs_baseline"]
    if others:
        langs = sorted({k for v in others.values() for k in v if k != ALL}) + [ALL]
        s.blocks.append(Table(["lang", *others], [[lang, *[_num(others[r].get(lang), "+.2f") for r in others]]
                                                  for lang in langs],
                              f"KDE-weighted mean shift of every compared run against {base} (nats, no interval)"))
    sections.append(s)

    # training
    s = Section("training", "Training curves")
    summ = results["training"]["summary"]
    if not summ:
        s.blocks.append(Para("No training logs: no scored run names a training directory with metrics.jsonl."))
    else:
        s.blocks.append(Image("training", "Training loss and training reward accuracy per step (thin: raw; thick: "
                                          "moving average). Losses of different methods are different functions."))
        s.blocks.append(Table(["run", "steps", "first loss", "final loss", "mean loss", "roughness",
                               "final train accuracy"],
                              [[r, str(v["steps"]), _num(v["first_loss"]), _num(v["final_loss"]), _num(v["mean_loss"]),
                                _num(v["roughness"], ".4f"), _num(v["final_accuracy"], ".3f")]
                               for r, v in summ.items()],
                              "Training summary (roughness: std of step-to-step loss changes)"))
    sections.append(s)

    # alpha sweep
    s = Section("alpha", "Alpha sweep")
    sweep = results["alpha_sweep"]
    if len({e["alpha"] for e in sweep}) < 2:
        s.blocks.append(Para("No alpha sweep: fewer than two runs with different alpha values "
                             f"({', '.join(format(e['alpha'], 'g') for e in sweep) or 'none'})."))
    if sweep:
        s.blocks.append(Table(["run", "method", "rrm", "alpha", "final train loss", "mean train loss",
                               "eval accuracy sum (%)", "eval accuracy mean (%)"],
                              [[e["name"], e["method"], str(e["rrm"]), format(e["alpha"], "g"), _num(e["final_loss"]),
                                _num(e["mean_loss"]), _pct(e["acc_sum"]), _pct(e["acc_mean"])] for e in sweep],
                              "Alpha sweep (evaluation accuracy = reward accuracy on the scored pairs)"))
        s.blocks.append(Image("alpha", "Final training loss and evaluation accuracy against alpha."))
    sections.append(s)

    # tokenization
    s = Section("tokenization", "Tokenization diagnostics")
    tok = results["tokenization"]
    s.blocks.append(Para(
        "The paper argues that DPO's reward difference depends on a language's tokenization rate and that RRM "
        "corrects for it. Tokens per character (ratio of sums) and the mean per-token log-prob (sum of log-probs "
        "over sum of tokens) per language; the tests correlate tokens per character with the baseline's accuracy "
        "and with the target's accuracy gain across languages."))
    first = compared[0] if compared else runs[0]
    t0 = tok["runs"][first]
    langs = list(t0)
    s.blocks.append(Table(
        ["lang", "pairs", "tokens/char chosen", "tokens/char rejected",
         *[f"{r}: logp/token chosen / rejected" for r in compared]],
        [[lang, str(t0[lang]["n"]), _num(t0[lang]["tokens_per_char_chosen"]), _num(t0[lang]["tokens_per_char_rejected"]),
          *[f"{_num(tok['runs'][r].get(lang, {}).get('logp_per_token_chosen'))} / "
            f"{_num(tok['runs'][r].get(lang, {}).get('logp_per_token_rejected'))}" for r in compared]]
         for lang in langs], f"Tokenization per language (tokens per character from run {first})"))
    tests = tok["tests"]
    if tests:
        s.blocks.append(Table(["test", "Pearson correlation"],
                              [[{"baseline_acc": f"tokens/char vs {base} accuracy",
                                 "gain": f"tokens/char vs accuracy gain {targ} minus {base}"}.get(k, k), _corr(v)]
                               for k, v in tests.items()], "Tokenization tests"))
    s.blocks.append(Image("tokenization", "Tokens per character and mean per-token log-prob per language."))
    sections.append(s)

    return sections


# ---------------------------------------------------------------------------------------------
# renderers
# ---------------------------------------------------------------------------------------------

def _md(text: str) -> str:
    return html.escape(str(text), quote=False)


def _md_cell(text: str) -> str:
    return _md(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(results: Mapping[str, Any], sections: Sequence[Section], plot_paths: Mapping[str, str]) -> str:
    out = ["# xlpo analysis report", ""]
    if results.get("config", {}).get("note"):
        out += [f"**{_md(results['config']['note'])}**", ""]
    out.append(_md(f"Runs: {', '.join(r['name'] for r in results['runs'])}. Machine-readable results: results.json."))
    out.append("")
    for sec in sections:
        out += [f"## {_md(sec.title)}", ""]
        for b in sec.blocks:
            if isinstance(b, Para):
                out += [_md(b.text), ""]
            elif isinstance(b, Table):
                if b.caption:
                    out += [f"**{_md(b.caption)}**", ""]
                out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                out.append("|" + "|".join("---" for _ in b.headers) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                out.append("")
            elif isinstance(b, Image):
                if b.name in plot_paths:
                    out += [f"![{_md(b.caption)}]({plot_paths[b.name]})", "", f"*{_md(b.caption)}*", ""]
            elif isinstance(b, Pre):
                out += ["```", b.text.replace("```", "'''"), "```", ""]
    return "\n".join(out)


_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0 auto;max-width:1150px;padding:16px 24px;
color:#222;line-height:1.45;font-size:14px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:30px}
table{border-collapse:collapse;margin:6px 0 16px;font-size:12.5px;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f4f6}tr:nth-child(even) td{background:#fafafa}
caption{text-align:left;font-weight:600;padding:4px 0;caption-side:top}
figure{margin:8px 0 18px}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:12px;color:#555}
nav a{margin-right:12px}.muted{color:#666;font-size:12px}
.note{background:#fff4d6;border:1px solid #e8c96a;padding:6px 10px;font-weight:600}
.v-agrees{background:#e3f4e1!important}.v-contradicts{background:#fbe1e1!important}
.v-inconclusive,.v-partly-agrees{background:#fdf3d8!important}.v-cannot-check{background:#eeeeee!important}
"""

_VERDICT_CLASS = {"agrees": "v-agrees", "contradicts": "v-contradicts", "inconclusive": "v-inconclusive",
                  "partly agrees": "v-partly-agrees", "cannot check": "v-cannot-check"}


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def render_html(results: Mapping[str, Any], sections: Sequence[Section], images: Mapping[str, bytes]) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>xlpo analysis report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>xlpo analysis report</h1>",
             f'<p class="note">{_h(results["config"]["note"])}</p>' if results.get("config", {}).get("note") else "",
             f'<p class="muted">Runs: {_h(", ".join(r["name"] for r in results["runs"]))}. '
             "Machine-readable results: results.json beside this file.</p>",
             "<nav>" + "".join(f'<a href="#{_h(s.anchor)}">{_h(s.title)}</a>' for s in sections) + "</nav>"]
    for sec in sections:
        parts.append(f'<section id="{_h(sec.anchor)}"><h2>{_h(sec.title)}</h2>')
        for b in sec.blocks:
            if isinstance(b, Para):
                parts.append(f"<p>{_h(b.text)}</p>")
            elif isinstance(b, Table):
                verdict_col = b.headers.index("verdict") if "verdict" in b.headers else None
                rows = []
                for row in b.rows:
                    cells = []
                    for j, c in enumerate(row):
                        cls = _VERDICT_CLASS.get(c) if j == verdict_col else None
                        cells.append(f'<td class="{cls}">{_h(c)}</td>' if cls else f"<td>{_h(c)}</td>")
                    rows.append("<tr>" + "".join(cells) + "</tr>")
                cap = f"<caption>{_h(b.caption)}</caption>" if b.caption else ""
                parts.append(f"<table>{cap}<thead><tr>" + "".join(f"<th>{_h(h)}</th>" for h in b.headers)
                             + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
            elif isinstance(b, Image):
                data = images.get(b.name)
                if data:
                    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
                    parts.append(f'<figure><img src="{uri}" alt="{_h(b.caption)}">'
                                 f"<figcaption>{_h(b.caption)}</figcaption></figure>")
            elif isinstance(b, Pre):
                parts.append(f"<pre>{_h(b.text)}</pre>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_reports(results: Mapping[str, Any], out_dir: str | Path, plot_files: Mapping[str, Path]
                  ) -> tuple[Path, Path]:
    """Write report.md (plots linked as files) and report.html (plots inlined) into `out_dir`."""
    from xlpo.fileio import write_text

    out = Path(out_dir)
    sections = build_sections(results, plot_files)
    rel = {k: Path(v).resolve().relative_to(out.resolve()).as_posix() for k, v in plot_files.items()}
    images = {k: Path(v).read_bytes() for k, v in plot_files.items()}
    write_text(out / "report.md", render_markdown(results, sections, rel))
    write_text(out / "report.html", render_html(results, sections, images))
    return out / "report.md", out / "report.html"
