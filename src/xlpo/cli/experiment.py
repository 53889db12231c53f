"""`xlpo experiment capo-mtpe CONFIG`: the CAPO study as one resumable command."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from xlpo.cli.command import DryRun, Overrides, app, config_command, config_to_run
from xlpo.config import options_help
from xlpo.experiments.capo_mtpe_config import ExperimentConfig, load_experiment

experiment_app = typer.Typer(help="Multi-stage studies that reuse finished stages.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("capo-mtpe", cls=config_command(lambda: options_help(ExperimentConfig)), context_settings={"max_content_width": 140})
def capo_mtpe(
    config: Annotated[str | None, typer.Argument(
        help="Experiment YAML: a file, or a shipped config's name such as capo-mtpe-cpu (`xlpo configs`); "
             "omit to use only the defaults below and overrides.")] = None,
    overrides: Overrides = None,
    dry_run: DryRun = False,
) -> None:
    """MTPE pairs -> DPO, SimPO, DPO+NLL, CAPO (+ inverse RRM, alpha sweep) -> per-language scores -> report."""
    cfg = config_to_run(load_experiment, config, overrides, dry_run)
    if cfg is None:
        return
    # Imported only to run: the experiment's stages bring in the trainer, hence torch (seconds).
    from xlpo.experiments.capo_mtpe import run_experiment

    console = Console(soft_wrap=True)  # log lines stay whole in files and CI logs
    report = run_experiment(cfg, log=lambda msg: console.print(f"[bold]xlpo[/bold] {msg}", highlight=False))
    console.print(f"report: {report / 'report.html'}")
    console.print(f"        {report / 'report.md'}, {report / 'results.json'}")
