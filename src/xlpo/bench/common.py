"""Results files and per-language tables shared by every benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from xlpo.fileio import write_json
from xlpo.versions import library_versions


def write_results(out_dir: str | Path, benchmark: str, results: dict, config: dict) -> Path:
    """results.json: the numbers, the settings that produced them and the library versions."""
    path = Path(out_dir) / "results.json"
    write_json(path, {"benchmark": benchmark, "config": config, "versions": library_versions(), "results": results})
    return path


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A rich table on stdout; floats with two decimals, None as a dash."""
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*["-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)
