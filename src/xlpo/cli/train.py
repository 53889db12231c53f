"""`xlpo train CONFIG.yaml [key=value ...]`: validate the config, train, print where results went."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xlpo.cli import app


def _epilog() -> str:
    from xlpo.train.config import options_help

    lines = options_help().splitlines()
    # typer/click re-wraps epilog paragraphs; \b keeps each option on its own line.
    return "Options (set in CONFIG.yaml or as key=value overrides):\n\n\b\n" + "\n".join(lines)


@app.command(epilog=_epilog(), context_settings={"max_content_width": 140})
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML config; omit to use only defaults and overrides.")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. loss.name=dpo loss.beta=0.1")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in training.output_dir.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the config and print it; train nothing.")] = False,
) -> None:
    """Train a model on preference pairs with any registered loss (LoRA or full fine-tuning)."""
    import yaml

    from xlpo.cli import config_and_overrides
    from xlpo.train.config import load_config

    config, items = config_and_overrides(config, overrides)
    cfg = load_config(config, items)
    if dry_run:
        typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return
    from xlpo.cli import quiet_libraries
    from xlpo.train.trainer import train as run_training

    quiet_libraries()

    result = run_training(cfg, resume=resume)
    if result.summary.get("saved"):
        final = result.final_metrics
        typer.echo(f"trained {result.steps} steps: loss {final.get('loss', float('nan')):.4f}, "
                   f"reward accuracy {final.get('rewards/accuracies', float('nan')):.3f}")
        typer.echo(f"saved {result.summary['saved']} (metrics: {result.output_dir / 'metrics.jsonl'})")
