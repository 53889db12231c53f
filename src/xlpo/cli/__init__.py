"""The `xlpo` command: a thin typer layer over the Python API.

User mistakes (`UserError`, and usage mistakes click finds) print one line and exit 2; a run
stopped for cause exits 1. Heavy imports (torch, transformers) wait until a command runs.
"""

from __future__ import annotations

import sys

import typer

from xlpo.cli.command import app
from xlpo.errors import TrainingError, UserError

__all__ = ["app", "main"]


def _register() -> None:
    # Each command group lives in its own module; importing it attaches its commands to `app`.
    from xlpo.cli import analyze, bench, configs, data, evaluate, experiment, icr, push, serve, train  # noqa: F401


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
