"""The `xlpo` command: a thin typer layer over the Python API.

User mistakes (`UserError`, and usage mistakes click finds) print one line and exit 2; a run
stopped for cause exits 1. Heavy imports (torch, transformers) wait until a command runs.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path
from typing import Callable

import typer
from typer.core import TyperCommand

from xlpo import __version__
from xlpo.config import help_epilog
from xlpo.errors import TrainingError, UserError

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


def _register() -> None:
    # Each command group lives in its own module; importing it attaches its commands to `app`.
    from xlpo.cli import analyze, bench, configs, data, evaluate, experiment, icr, push, serve, train  # noqa: F401


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


def _error(message: str, code: int) -> int:
    print(f"xlpo: error: {message}", file=sys.stderr)
    return code


def main() -> None:
    _register()
    try:
        code = app(prog_name="xlpo", standalone_mode=False)
    except typer.TyperException as exc:  # click's usage errors (typer vendors click; this is their base)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command group: print its help, as typer does
            exc.show()
            code = exc.exit_code
        else:  # a missing option or a bad value for one: one line, like every other bad input
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            code = _error(exc.format_message().replace("\n", " ") + hint, exc.exit_code)
    except typer.Abort:
        code = _error("aborted", 1)
    except (UserError, TrainingError) as exc:
        code = _error(str(exc), exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
