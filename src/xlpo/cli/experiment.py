"""`xlpo experiment capo-mtpe CONFIG`: the CAPO study as one resumable command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xlpo.cli import app

experiment_app = typer.Typer(help="Multi-stage studies that reuse finished stages.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("capo-mtpe")
def capo_mtpe(
    config: Annotated[Path | None, typer.Argument(help="Experiment YAML (default: built-in values = configs/capo-mtpe-cpu.yaml).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. data.per_split=20 train.training.learning_rate=1e-4")] = None,
) -> None:
    """MTPE pairs -> DPO, SimPO, DPO+NLL, CAPO (+ inverse RRM, alpha sweep) -> per-language scores -> report."""
    from rich.console import Console

    from xlpo.cli import config_and_overrides, quiet_libraries
    from xlpo.experiments.capo_mtpe import load_experiment, run_experiment

    config, items = config_and_overrides(config, overrides)
    cfg = load_experiment(config, items)
    quiet_libraries()
    console = Console(soft_wrap=True)  # log lines stay whole in files and CI logs
    report = run_experiment(cfg, log=lambda msg: console.print(f"[bold]xlpo[/bold] {msg}", highlight=False))
    console.print(f"report: {report / 'report.html'}")
    console.print(f"        {report / 'report.md'}, {report / 'results.json'}")
