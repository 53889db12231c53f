"""`xlpo train CONFIG [key=value ...]`: validate the config, train, print where results went."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml

from xlpo.cli import app, config_and_overrides, config_command, quiet_libraries
from xlpo.train.config import load_config, options_help


@app.command(cls=config_command(options_help), context_settings={"max_content_width": 140})
def train(
    config: Annotated[str | None, typer.Argument(
        help="YAML config: a file, or a shipped config's name (`xlpo configs`); omit to use only defaults and overrides.")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. loss.name=dpo loss.beta=0.1")] = None,
    resume: Annotated[bool, typer.Option("--resume", help=(
        "Continue from the newest intact checkpoint in training.output_dir (checked against its manifest).")
    )] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the config and print it; train nothing.")] = False,
) -> None:
    """Train a model on preference pairs with any registered loss (LoRA or full fine-tuning)."""
    config, items = config_and_overrides(config, overrides)
    cfg = load_config(config, items)
    if dry_run:
        typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return
    # Imported only to train: the trainer brings in torch and transformers (seconds).
    from xlpo.train.trainer import train as run_training

    quiet_libraries()
    result = run_training(cfg, resume=resume)
    if result.summary.get("saved"):
        final = result.final_metrics
        typer.echo(f"trained {result.steps} steps: loss {final.get('loss', float('nan')):.4f}, "
                   f"reward accuracy {final.get('rewards/accuracies', float('nan')):.3f}")
        typer.echo(f"saved {result.summary['saved']} (metrics: {result.output_dir / 'metrics.jsonl'})")
