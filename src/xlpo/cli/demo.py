"""`xlpo demo`: the quick-start job on the embedded defaults, with a per-language results table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xlpo.cli import app


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Run directory (stages found there are reused).")] = Path("runs/quickstart"),
    config: Annotated[Path | None, typer.Option("--config", help="Training config; default configs/capo-cpu-smollm2.yaml.")] = None,
    per_split: Annotated[int, typer.Option("--per-split", help="MTPE pairs per direction and split.")] = 100,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides of the training config.")] = None,
) -> None:
    """Build MTPE pairs from the staged data, train CAPO with LoRA on the embedded SmolLM2, and compare
    per-language reward accuracy of the base model and the trained adapter on the evaluation split."""
    from rich.console import Console
    from rich.table import Table

    from xlpo.cli import quiet_libraries
    from xlpo.experiments.quickstart import run_quickstart

    quiet_libraries()
    console = Console()
    result = run_quickstart(out, config, list(overrides or []), per_split, log=console.print)
    table = Table(title="Reward accuracy on the evaluation split (chosen = post-edit beats rejected = raw MT)")
    for col in ("lang", "pairs", "base (sum)", "trained (sum)", "base (per-token)", "trained (per-token)"):
        table.add_column(col, justify="left" if col == "lang" else "right")
    for lang, row in result.table.items():
        table.add_row(lang, str(row["pairs"]), f"{row['base_acc_sum']:.3f}", f"{row['trained_acc_sum']:.3f}",
                      f"{row['base_acc_mean']:.3f}", f"{row['trained_acc_mean']:.3f}")
    console.print(table)
    console.print(f"results: {result.results_path}  (training log: {result.out_dir / 'train' / 'metrics.jsonl'})")
