"""`xlpo eval rewards`: per-pair scores and per-language reward accuracy of a model on preference data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xlpo.cli.command import app

eval_app = typer.Typer(help="Evaluate models on preference data, per language.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("rewards")
def rewards(
    data: Annotated[Path, typer.Argument(help="Preference file (.jsonl/.parquet) or dataset directory.")],
    out: Annotated[Path, typer.Option("--out", help="Scored-run directory to write.")],
    model: Annotated[str, typer.Option("--model", help="Hub id, local path or 'embedded'.")] = "embedded",
    adapter: Annotated[str | None, typer.Option("--adapter", help="LoRA adapter directory (e.g. RUN/adapter).")] = None,
    no_reference: Annotated[bool, typer.Option("--no-reference", help="With an adapter: skip scoring the base model as reference.")] = False,
    name: Annotated[str | None, typer.Option("--name", help="Label in reports (default: the training run's name).")] = None,
    chat_format: Annotated[str, typer.Option("--chat-format", help="tokenizer, zephyr or none (as in training).")] = "tokenizer",
    max_length: Annotated[int, typer.Option("--max-length", help="Pairs longer than this are skipped (counted).")] = 1024,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per forward pass.")] = 8,
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16, float16.")] = "auto",
) -> None:
    """Score chosen and rejected of every pair; print reward accuracy per language with 95% intervals."""
    from rich.console import Console
    from rich.table import Table

    from xlpo.cli.command import quiet_libraries
    from xlpo.eval.rewards import ScoringRequest, score_run
    from xlpo.fileio import read_json

    if chat_format not in ("tokenizer", "zephyr", "none"):
        raise typer.BadParameter("expected tokenizer, zephyr or none", param_hint="--chat-format")
    quiet_libraries()
    console = Console()
    run = score_run(ScoringRequest(data=str(data), out_dir=str(out), model=model, adapter=adapter,
                                   reference=not no_reference, name=name, chat_format=chat_format,
                                   max_length=max_length, max_prompt_length=max_length - 1, batch_size=batch_size,
                                   dtype=dtype), log=console.print)
    accuracy = read_json(run / "accuracy.json")
    definitions = [d for d in ("sum", "mean", "implicit") if any(d in row for row in accuracy.values())]
    table = Table(title=f"Reward accuracy: {read_json(run / 'scoring.json')['name']}")
    table.add_column("lang")
    table.add_column("pairs", justify="right")
    for d in definitions:
        table.add_column(f"{d} [95% CI]", justify="right")
    for lang, row in accuracy.items():
        cells = [f"{row[d]['acc']:.3f} [{row[d]['lo']:.2f}, {row[d]['hi']:.2f}]" if d in row else "-" for d in definitions]
        table.add_row(lang, str(row[definitions[0]]["n"]), *cells)
    console.print(table)
    console.print(f"scores: {run / 'scores.jsonl'}")
