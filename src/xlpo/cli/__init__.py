"""The `xlpo` command: a thin typer layer over the Python API.

User mistakes (`UserError`) print one line and exit 2; a run stopped for cause exits 1.
"""

from __future__ import annotations

import sys

import typer

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
        from xlpo import __version__

        typer.echo(f"xlpo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Multilingual preference optimization: CAPO, ICR, DPO, SimPO, KTO, with per-language analysis."""


def _register() -> None:
    # Each command group lives in its own module; importing it attaches its commands to `app`.
    from xlpo.cli import analyze, bench, data, evaluate, experiment, icr, serve, train  # noqa: F401


def user_errors(func):
    """User mistakes print one line `xlpo: error: ...` and exit 2 also when a command is invoked
    through typer's CliRunner (which bypasses `main`)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            print(f"xlpo: error: {exc}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def config_and_overrides(config, overrides) -> tuple:
    """(config path or None, overrides): a first argument that looks like key=value is an override."""
    items = list(overrides or [])
    if config is not None and "=" in str(config) and not config.exists():
        items.insert(0, str(config))
        config = None
    return config, items


def quiet_libraries() -> None:
    """Keep the terminal for xlpo's own progress: no per-file loading bars or deprecation chatter."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main() -> None:
    _register()
    try:
        app()
    except (UserError, TrainingError) as exc:
        print(f"xlpo: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
