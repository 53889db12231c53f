"""`xlpo icr run CONFIG [key=value ...]` and `xlpo icr stats RUN_DIR`: the ICR loop and its statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from xlpo.cli import app, config_and_overrides, config_command, quiet_libraries
from xlpo.config import options_help

icr_app = typer.Typer(help="Implicit Cross-Lingual Rewarding: sample -> reward -> pairs -> train, iterated.",
                      no_args_is_help=True)
app.add_typer(icr_app, name="icr")


def _options() -> str:
    # Imported when the help is shown: the ICR config brings in numpy (icr.reward), not needed by `xlpo --help`.
    from xlpo.icr.config import ICRConfig

    return options_help(ICRConfig)


def _table(stats: dict[int, dict], kind: str) -> None:
    console = Console()
    table = Table(title=f"ICR per iteration and language (pairs from {kind}; gaps = chosen - rejected)")
    for col in ("iter", "lang", "resp", "chars", "wrong", "alpha", "pairs", "gap chars", "gap R", "judge"):
        table.add_column(col, justify="left" if col in ("iter", "lang") else "right")

    def fmt(value, spec=".3f"):
        return "-" if value is None else format(value, spec)

    for t, per_lang in sorted(stats.items()):
        for lang, row in per_lang.items():
            if lang.startswith("_"):
                continue
            r = row["rewards"].get(kind, {})
            gap = r.get("chosen_minus_rejected", {})
            judge = r.get("judge", {})
            table.add_row(str(t), lang, str(row["responses"]), fmt(row["response_chars"].get("mean"), ".0f"),
                          fmt(row.get("wrong_language_share"), ".2f"), fmt(r.get("alpha"), "g"), str(r.get("pairs", 0)),
                          fmt(gap.get("chars"), "+.1f"), fmt(gap.get("reward"), "+.3f"), fmt(judge.get("accuracy"), ".2f"))
    console.print(table)
    console.print("resp = responses, chars = mean response length, wrong = share in another language (py3langid), "
                  "judge = pair accuracy against judge verdicts (ties half)")


@icr_app.command(cls=config_command(_options), context_settings={"max_content_width": 140})
def run(
    config: Annotated[str | None, typer.Argument(
        help="YAML config: a file, or a shipped config's name such as icr-cpu-smollm2 (`xlpo configs`).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. iterations=1 sampling.n=4")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the config and print it; run nothing.")] = False,
) -> None:
    """Run the ICR loop; a run directory that already holds finished stages is resumed, not redone."""
    # Imported when run: the ICR config brings in numpy (icr.reward), not needed by other commands.
    from xlpo.icr.config import load_icr_config

    config, items = config_and_overrides(config, overrides)
    cfg = load_icr_config(config, items)
    if dry_run:
        typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
        return
    # Imported only to run: the pipeline brings in torch and transformers (seconds).
    from xlpo.icr.pipeline import run_icr

    quiet_libraries()
    result = run_icr(cfg, log=typer.echo)
    _table(result.stats, cfg.reward.select)
    typer.echo(f"run directory: {result.run_dir}")


@icr_app.command()
def stats(
    run_dir: Annotated[Path, typer.Argument(help="An ICR run directory (holds config.yaml and iter-<t>/).")],
) -> None:
    """Recompute and print the statistics of every finished iteration (e.g. after judge labels were added)."""
    # Imported only to run: the pipeline brings in torch and transformers (seconds).
    from xlpo.icr.pipeline import recompute_stats

    result = recompute_stats(run_dir, log=typer.echo)
    kind = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["reward"]["select"]
    _table(result, kind)
