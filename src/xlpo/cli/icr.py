"""`xlpo icr run CONFIG [key=value ...]` and `xlpo icr stats RUN_DIR [--judge-*]`: the ICR loop and its statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from xlpo.cli.bench import Judge
from xlpo.cli.command import DryRun, Overrides, app, config_command, config_to_run, option_group, user_errors
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
    overrides: Overrides = None,
    dry_run: DryRun = False,
) -> None:
    """Run the ICR loop; a run directory that already holds finished stages is resumed, not redone."""
    # Imported when run: the ICR config brings in numpy (icr.reward), not needed by other commands.
    from xlpo.icr.config import load_icr_config

    cfg = config_to_run(load_icr_config, config, overrides, dry_run)
    if cfg is None:
        return
    # Imported only to run: the pipeline brings in torch and transformers (seconds).
    from xlpo.icr.pipeline import run_icr

    result = run_icr(cfg, log=typer.echo)
    _table(result.stats, cfg.reward.select)
    typer.echo(f"run directory: {result.run_dir}")


def _table1(stats: dict[int, dict], kinds: list[str], run_dir: Path) -> None:
    from xlpo.icr.rundir import IterationDir
    from xlpo.icr.stats import judge_counts, table1  # numpy and scipy: not needed by `xlpo --help`

    def cell(value: dict) -> str:
        ci = value.get("accuracy_ci")
        return f"{value['accuracy']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] n={value['judged']}" if ci else f"{value['accuracy']:.2f}"

    for t, per_lang in sorted(stats.items()):
        rows = table1(per_lang, kinds)
        if not rows:
            continue
        counts = judge_counts(IterationDir(run_dir, t).judge)  # none when the verdicts came from a labels file
        languages = sorted({lang for row in rows for lang in row["languages"]})
        table = Table(title=f"Iteration {t}: judged pair accuracy (ties half) with 95% bootstrap intervals (Table 1)")
        for col in ("reward", *languages, "avg", "unparseable", "failed"):
            table.add_column(col, justify="left" if col == "reward" else "right")
        for row in rows:
            missing = [str(counts[row["kind"]][status]) if row["kind"] in counts else "-"
                       for status in ("unparseable", "failed")]
            table.add_row(row["kind"], *[cell(row["languages"][lang]) if lang in row["languages"] else "-"
                                         for lang in languages], cell(row["avg"]), *missing)
        Console().print(table)


@icr_app.command()
@user_errors
@option_group("judge", Judge)
def stats(
    run_dir: Annotated[Path, typer.Argument(help="An ICR run directory (holds config.yaml and iter-<t>/).")],
    judge: Judge = Judge(),
    judge_max_tokens: Annotated[int, typer.Option("--judge-max-tokens", min=1, help="Judge reply tokens.")] = 256,
) -> None:
    """Recompute and print the statistics of every finished iteration; with --judge-model, first ask the
    judge for the Table 1 verdicts of each iteration's pairs (resumable) and report pair accuracy."""
    # Imported only to run: the pipeline brings in torch and transformers (seconds).
    from xlpo.errors import UserError
    from xlpo.icr.config import ICRConfig
    from xlpo.icr.pipeline import recompute_stats
    from xlpo.icr.rundir import IterationDir
    from xlpo.icr.stats import judge_folder

    result = recompute_stats(run_dir, log=typer.echo)  # checks the run; writes each iteration's judge/requests.jsonl
    config = ICRConfig.model_validate(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
    if judge.judge_model or judge.judge_url:
        if config.stats.judge_labels:
            raise UserError(f"{run_dir / 'config.yaml'}: stats.judge_labels names a labels file of your own; a judge "
                            "writes iter-<t>/judge/labels.jsonl instead: remove that setting, or leave out --judge-*")
        backend = judge.build()
        for t in sorted(result):
            counts = judge_folder(IterationDir(run_dir, t).judge, backend, max_tokens=judge_max_tokens,
                                  seed=config.stats.seed, echo=lambda line: typer.echo(line, err=True))
            typer.echo(f"iteration {t}: judged {counts['judged']}, unparseable {counts['unparseable']}, "
                       f"failed {counts['failed']}")
        result = recompute_stats(run_dir, log=typer.echo)
    _table(result, config.reward.select)
    _table1(result, config.reward.kinds(), run_dir)
