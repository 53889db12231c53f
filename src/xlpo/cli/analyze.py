"""`xlpo analyze`: compare scored runs per language and write report.html, report.md, results.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from xlpo.cli import app, user_errors


@app.command()
@user_errors
def analyze(
    run_dirs: Annotated[list[Path], typer.Argument(help="Scored run directories (scores.jsonl + scoring.json).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: report.html, report.md, results.json, plots/.")],
    baseline: Annotated[str, typer.Option("--baseline", help="Baseline run name, or a method held by one run.")] = "dpo",
    target: Annotated[str, typer.Option("--target", help="Target run name, or a method held by one run.")] = "capo",
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Preference JSONL for BLEU(chosen, rejected); default: the target's training data.")] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", min=0, help="Bootstrap resamples for the 95% intervals.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    reward_kind: Annotated[str, typer.Option(
        "--reward", help="Reward difference for the KDEs and the shift: sum, mean or implicit.")] = "sum",
    note: Annotated[Optional[str], typer.Option("--note", help="A line shown at the top of the report.")] = None,
) -> None:
    """Per-language reward accuracy with CIs, reward-difference KDEs and their shift, BLEU correlation,
    training curves, alpha sweep, tokenization diagnostics, and a check against the CAPO paper."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from xlpo.eval.analysis import analyze as run_analysis

    console = Console()
    results = run_analysis(run_dirs, out, baseline=baseline, target=target, data_file=data, n_boot=n_boot,
                           seed=seed, reward_kind=reward_kind, note=note)
    names = [r["name"] for r in results["runs"]]
    acc = results["accuracy"]
    langs = sorted({k for n in names for k in acc[n] if k != "all"}) + ["all"]
    table = Table(title="Reward accuracy (%), logp(chosen) > logp(rejected), 95% bootstrap CI")
    table.add_column("lang")
    for n in names:
        table.add_column(Text(n), justify="right")  # Text: names are data, not rich markup
    for lang in langs:
        cells = []
        for n in names:
            e = acc[n].get(lang, {}).get("sum")
            cells.append("–" if e is None else f"{e['acc'] * 100:.1f} [{e['lo'] * 100:.0f}, {e['hi'] * 100:.0f}]"
                         if e["lo"] is not None else f"{e['acc'] * 100:.1f}")
        table.add_row(Text(lang), *cells, end_section=lang == langs[-2] if len(langs) > 1 else False)
    console.print(table, markup=False)
    for v in results["against_paper"]:
        console.print(f"  {v['verdict']:>13}: {v['claim']}: {v['ours']}", markup=False, highlight=False)
    console.print(f"report: {Path(out) / 'report.html'}  (also report.md, results.json)", markup=False)
