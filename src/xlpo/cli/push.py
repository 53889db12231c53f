"""`xlpo push RUN_DIR REPO_ID [--private]`: upload a trained adapter or model with its model card to the Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xlpo.cli.command import app, user_errors


@app.command()
@user_errors
def push(
    run_dir: Annotated[Path, typer.Argument(help="A training run (its adapter/ or model/ is uploaded) or such a folder itself.")],
    repo_id: Annotated[str, typer.Argument(help="Hub repository, e.g. your-name/capo-de-zh; created if missing.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    token_env: Annotated[str, typer.Option("--token-env", help="Environment variable holding a Hub token with write access.")] = "HF_TOKEN",
) -> None:
    """Upload the run's adapter or model folder (weights, tokenizer, README.md model card) with huggingface_hub."""
    # Imported here: huggingface_hub's client is only needed by this command.
    from xlpo.push import push as upload

    pushed = upload(run_dir, repo_id, private=private, token_env=token_env)
    if pushed.card_written:
        typer.echo(f"wrote a model card: {pushed.folder / 'README.md'}")
    typer.echo(f"pushed {pushed.folder} to {pushed.repo_id}: {pushed.url}")
