"""`xlpo analyze`: compare scored runs per language and write report.html, report.md, results.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from xlpo.cli.command import app, user_errors


@app.command()
@user_errors
def analyze(
    run_dirs: Annotated[list[Path], typer.Argument(help="Scored run directories (scores.jsonl + scoring.json).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: report.html, report.md, results.json, plots/.")],
    baseline: Annotated[str, typer.Option(
        "--baseline", help="Baseline group (scoring.json 'group', else a run's name), or a method held by one group."
    )] = "dpo",
    target: Annotated[str, typer.Option(
        "--target", help="Target group (scoring.json 'group', else a run's name), or a method held by one group."
    )] = "capo",
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Preference JSONL for BLEU(chosen, rejected); default: the target's training data.")] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", min=0, help="Bootstrap resamples for the 95% intervals.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    reward_kind: Annotated[str, typer.Option(
        "--reward", help="Reward difference for the KDEs and the shift: sum, mean or implicit.")] = "sum",
    note: Annotated[Optional[str], typer.Option("--note", help="A line shown at the top of the report.")] = None,
) -> None:
    """Per-language reward accuracy with CIs, reward-difference KDEs and their shift, BLEU correlation,
    training curves, alpha sweep, tokenization diagnostics, and a check against the CAPO paper.
    Runs sharing a scoring.json 'group' are seeds of one method: method differences get intervals
    over seeds and pairs, and the report opens with the headline gains."""
    from rich.console import Console  # lazy: keeps `xlpo --help` fast
    from rich.table import Table
    from rich.text import Text

    from xlpo.eval.analysis.driver import analyze as run_analysis  # lazy: numpy, scipy and matplotlib
    from xlpo.eval.report_sections import DEFINITION_NAMES, headline_table

    console = Console()
    results = run_analysis(run_dirs, out, baseline=baseline, target=target, data_file=data, n_boot=n_boot,
                           seed=seed, reward_kind=reward_kind, note=note)
    for definition in results["headline"]["definitions"]:
        headers, rows = headline_table(results, definition)
        table = Table(title=f"Reward accuracy gains (points, 95% CI over seeds and pairs), "
                            f"{DEFINITION_NAMES[definition]} accuracy")
        for header in headers:
            table.add_column(Text(header))  # Text: names are data, not rich markup
        for row in rows:
            table.add_row(*map(Text, row))
        console.print(table, markup=False)
    for v in results["against_paper"]:
        console.print(f"  {v['verdict']:>15}: {v['claim']}: {v['ours']}", markup=False, highlight=False)
    console.print(f"report: {Path(out) / 'report.html'}  (also report.md, results.json)", markup=False)
