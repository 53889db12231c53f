"""`xlpo configs [show|path NAME]`: the configs shipped inside xlpo, listed, printed or located."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from xlpo.cli.command import app, user_errors
from xlpo.config import first_comment, shipped_config, shipped_configs

configs_app = typer.Typer(help="Configs shipped with xlpo; every command that takes a config also takes their names.",
                          invoke_without_command=True)
app.add_typer(configs_app, name="configs")

Name = Annotated[str, typer.Argument(help="A shipped config's name as `xlpo configs` lists it, e.g. capo-paper-gpu.")]


@configs_app.callback()
def configs(ctx: typer.Context) -> None:
    """List the shipped configs: name and what each is for (its first comment line)."""
    if ctx.invoked_subcommand is not None:
        return
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("what")
    for name, path in shipped_configs().items():
        table.add_row(name, first_comment(path))
    Console(soft_wrap=True).print(table, markup=False, highlight=False)


@configs_app.command()
@user_errors
def show(name: Name) -> None:
    """Print a shipped config (copy it, edit it, pass the copy's path)."""
    typer.echo(shipped_config(name).read_text(encoding="utf-8"), nl=False)


@configs_app.command()
@user_errors
def path(name: Name) -> None:
    """Print a shipped config's path, e.g. for `accelerate launch --config_file $(xlpo configs path NAME)`."""
    typer.echo(str(shipped_config(name)))
