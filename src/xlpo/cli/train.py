"""`xlpo train CONFIG [key=value ...]`: validate the config, train, print where results went."""

from __future__ import annotations

from typing import Annotated

import typer

from xlpo.cli.command import DryRun, Overrides, app, config_command, config_to_run
from xlpo.train.config import load_config, options_help
from xlpo.train.run import TrainRun


@app.command(cls=config_command(options_help), context_settings={"max_content_width": 140})
def train(
    config: Annotated[str | None, typer.Argument(
        help="YAML config: a file, or a shipped config's name (`xlpo configs`); omit to use only defaults and overrides.")] = None,
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in training.output_dir.")] = False,
    dry_run: DryRun = False,
) -> None:
    """Train a model on preference pairs with any registered loss (LoRA or full fine-tuning)."""
    cfg = config_to_run(load_config, config, overrides, dry_run)
    if cfg is None:
        return
    # Imported only to train: the trainer brings in torch and transformers (seconds).
    from xlpo.train.trainer import train as run_training

    result = run_training(cfg, resume=resume)
    if result.summary.get("saved"):
        final = result.final_metrics
        typer.echo(f"trained {result.steps} steps: loss {final.get('loss', float('nan')):.4f}, "
                   f"reward accuracy {final.get('rewards/accuracies', float('nan')):.3f}")
        typer.echo(f"saved {result.summary['saved']} (metrics: {TrainRun(result.output_dir).metrics_file})")
