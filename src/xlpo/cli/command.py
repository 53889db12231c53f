"""The typer app every command module attaches to, and what the commands share.

One-line errors for user mistakes; the config argument, its `key=value` overrides and `--dry-run`;
option groups (a dataclass of options that a command takes as one parameter); quiet libraries.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import typing
import warnings
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
import yaml
from typer.core import TyperCommand

from xlpo import __version__
from xlpo.config import help_epilog
from xlpo.errors import UserError

app = typer.Typer(
    name="xlpo",
    help="Multilingual preference optimization: CAPO, ICR, DPO, SimPO, KTO, with per-language analysis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"xlpo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Multilingual preference optimization: CAPO, ICR, DPO, SimPO, KTO, with per-language analysis."""


def user_errors(func):
    """User mistakes print one line `xlpo: error: ...` and exit 2 also when a command is invoked
    through typer's CliRunner (which bypasses `main`)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            print(f"xlpo: error: {exc}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


class ConfigCommand(TyperCommand):
    """A command that takes a config: its epilog lists every option, built only when its help is
    shown (building it may import the config's schema, which must not slow `xlpo --help`)."""

    options: Callable[[], str]

    def format_help(self, ctx: typer.Context, formatter) -> None:
        self.epilog = help_epilog(self.options())
        super().format_help(ctx, formatter)


def config_command(options: Callable[[], str]) -> type[ConfigCommand]:
    """The command class (`@app.command(cls=...)`) whose help lists `options()`."""
    return type("ConfigCommand", (ConfigCommand,), {"options": staticmethod(options)})


def config_and_overrides(config: str | None, overrides: list[str] | None) -> tuple[str | None, list[str]]:
    """(config path or shipped name, or None; overrides): a first argument like key=value is an override."""
    items = list(overrides or [])
    if config is not None and "=" in config and not Path(config).exists():
        items.insert(0, config)
        config = None
    return config, items


def quiet_libraries() -> None:
    """Keep the terminal for xlpo's own progress: no per-file loading bars or deprecation chatter."""
    # Imported here, when a command is about to load a model: transformers takes seconds to import.
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()



Overrides = Annotated[Optional[list[str]], typer.Argument(help="key=value overrides of the options listed below.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Validate the config and print it; run nothing.")]


def config_to_run(load: Callable[[str | None, list[str]], typing.Any], config: str | None,
                  overrides: list[str] | None, dry_run: bool):
    """The validated config a command runs with: `config` (a file or a shipped name; a first argument like
    key=value is an override) read by `load` with the overrides. With `dry_run` it is printed as YAML and
    None is returned: the command then does nothing more."""
    config, items = config_and_overrides(config, overrides)
    loaded = load(config, items)
    if dry_run:
        typer.echo(yaml.safe_dump(loaded.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
        return None
    quiet_libraries()
    return loaded


def option_group(parameter: str, group: type):
    """Give a command's parameter `parameter`, a dataclass of typer options, to typer as one option per
    field (in the parameter's place), and to the command as one `group` built from them.

    Field names are the command's keyword arguments, so two groups of one command need distinct names.
    """
    hints = typing.get_type_hints(group, include_extras=True)
    fields = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name], default=f.default)
              for f in dataclasses.fields(group)]

    def decorate(func):
        params = list(inspect.signature(func, eval_str=True).parameters.values())
        at = [p.name for p in params].index(parameter)
        # The fields take the parameter's place; what follows becomes keyword-only, as typer passes all by name.
        after = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[at + 1:]]

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            values = {f.name: kwargs.pop(f.name) for f in fields}
            return func(*args, **kwargs, **{parameter: group(**values)})

        wrapper.__signature__ = inspect.Signature(params[:at] + fields + after)
        return wrapper

    return decorate
