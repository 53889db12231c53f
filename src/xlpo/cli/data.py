"""`xlpo data ...`: build preference data sets and describe them (thin layer over xlpo.data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from xlpo.cli.command import app, user_errors

data_app = typer.Typer(help="Build preference data sets (MTPE for CAPO) and print their statistics.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("mtpe")
@user_errors
def mtpe(
    out: Path = typer.Option(..., "--out", help="Output folder: train/validation/evaluation.jsonl and manifest.json."),
    directions: Optional[str] = typer.Option(
        None, "--directions", help="Comma-separated directions (default: all eight: "
        "en-ar,en-it,en-nl,en-tr,en-uk,en-vi from DivEMT, en-de,en-zh from MLQE-PE)."),
    divemt: Optional[str] = typer.Option(
        None, "--divemt", help="DivEMT folder (main.tsv or warmup.tsv), or 'hub' for GroNLP/divemt "
        "('hub:owner/name' for another repo). Default: $XLPO_SHARED_DATA/divemt or ../shared/data/divemt."),
    mlqe_pe: Optional[str] = typer.Option(
        None, "--mlqe-pe", help="MLQE-PE folder (upstream post-editing/ and direct-assessments/), or 'hub' "
        "for wmt/wmt20_mlqe_task2. Default: $XLPO_SHARED_DATA/mlqe-pe or ../shared/data/mlqe-pe."),
    per_split: int = typer.Option(100, "--per-split", help="Pairs per direction in each of the three splits."),
    seed: int = typer.Option(42, "--seed", help="Seed of the source-to-split assignment and sampling."),
    min_source_chars: int = typer.Option(50, "--min-source-chars", help="Keep sources longer than this."),
    keep_identical: bool = typer.Option(False, "--keep-identical",
                                        help="Keep pairs whose MT equals the post-edit (dropped by default)."),
    divemt_config: str = typer.Option("auto", "--divemt-config",
                                      help="DivEMT split: main, warmup, or auto (main when present)."),
    mlqe_splits: str = typer.Option("train,dev,test20", "--mlqe-splits",
                                    help="MLQE-PE files pooled before splitting by source."),
) -> None:
    """CAPO's preference pairs from post-editing data: chosen = post-edit, rejected = raw MT."""
    from xlpo.data.mtpe.build import make_mtpe  # pulls datasets/pyarrow: not on the path of `xlpo --help`
    from xlpo.data.mtpe.common import DIRECTIONS, SPLITS

    build, paths = make_mtpe(out, directions, divemt=divemt, mlqe_pe=mlqe_pe, per_split=per_split, seed=seed,
                             min_source_chars=min_source_chars, keep_identical=keep_identical,
                             divemt_config=divemt_config, mlqe_splits=mlqe_splits)
    m = build.manifest
    console = Console()
    table = Table(title=f"MTPE pairs per direction and split (asked {per_split} each, seed {seed})")
    for col in ("direction", "dataset", "usable", "sources", *SPLITS):
        table.add_column(col, justify="left" if col in ("direction", "dataset") else "right")
    for d in m["config"]["directions"]:
        avail = m["available"][d]
        cells = [str(m["counts"][s][d]) if m["counts"][s][d] >= m["config"]["per_split"][s]
                 else f"[yellow]{m['counts'][s][d]}[/yellow]" for s in SPLITS]
        table.add_row(d, DIRECTIONS[d], str(avail["usable_pairs"]), str(avail["usable_sources"]), *cells)
    table.add_row("total", "", "", "", *(str(m["totals"][s]) for s in SPLITS))
    console.print(table)
    drops = Table(title="Rows dropped, by reason")
    labels = {"translated_from_scratch": "no MT (ht)", "source_too_short": f"source <= {min_source_chars} ch",
              "identical_mt_pe": "MT = post-edit", "duplicate_pair": "duplicate"}
    drops.add_column("direction")
    for reason in m["dropped_total"]:
        drops.add_column(labels.get(reason, reason), justify="right")
    for d in m["config"]["directions"]:
        drops.add_row(d, *(str(v) for v in m["dropped"][d].values()))
    drops.add_row("total", *(str(v) for v in m["dropped_total"].values()))
    console.print(drops)
    short = m["shortfalls"]
    if short:
        console.print(f"[yellow]Shortfall[/yellow] in {len({s['direction'] for s in short})} direction(s): "
                      "fewer usable pairs than requested; all of them are used, none padded or duplicated.")
        by_dir: dict[str, list[dict[str, Any]]] = {}
        for s in short:
            by_dir.setdefault(s["direction"], []).append(s)
        for d, items in by_dir.items():
            parts = ", ".join(f"{s['split']} {s['written']}/{s['requested']}" for s in items)
            console.print(f"  {d}: {parts} ({items[0]['usable_pairs']} usable pairs from "
                          f"{items[0]['usable_sources']} sources)")
    for note in m["notes"]:
        console.print(f"note: {note}")
    for name, path in paths.items():
        console.print(f"{name}: {path}")


@data_app.command("stats")
@user_errors
def stats(
    file: Path = typer.Argument(..., help="A preference JSONL file (e.g. train.jsonl from `xlpo data mtpe`)."),
    tokenizer: str = typer.Option("embedded", "--tokenizer", help="Tokenizer for token counts: 'embedded' "
                                  "(SmolLM2), a local model folder or a Hub id."),
    out: Optional[Path] = typer.Option(None, "--out", help="JSON output (default: <input stem>.stats.json beside it)."),
) -> None:
    """Per language: counts, characters and tokens, tokens per character, BLEU/chrF, HTER."""
    from xlpo.data.mtpe_stats import write_stats

    result, path = write_stats(file, tokenizer, out)
    table = Table(title=f"{file.name}: chosen (post-edit) vs rejected (MT)", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("lang", "pairs", "chars c/r", "tokens c/r", "tok/chr", "BLEU", "chrF", "HTER avg", "HTER med"):
        table.add_column(col, justify="left" if col == "lang" else "right")
    for lang, s in result["languages"].items():
        h = s["hter"]
        table.add_row(
            lang, str(s["n"]), f"{s['chosen_chars_mean']:.0f}/{s['rejected_chars_mean']:.0f}",
            f"{s['chosen_tokens_mean']:.0f}/{s['rejected_tokens_mean']:.0f}", f"{s['tokens_per_char']:.3f}",
            f"{s['bleu']:.1f}", f"{s['chrf']:.1f}",
            f"{h['mean']:.3f}" if h["n"] else "-", f"{h['median']:.3f}" if h["n"] else "-",
        )
    console = Console()
    console.print(table)
    special = sorted({f"{s['bleu_tokenize']} for {lang}" for lang, s in result["languages"].items()
                      if s["bleu_tokenize"] != "13a"})
    tokenizers = ", ".join([*special, "13a otherwise" if special else "13a"])
    console.print(f"c/r: mean over chosen / rejected; tokens and tok/char with tokenizer '{result['tokenizer']}'; "
                  f"BLEU and chrF of rejected against chosen (sacrebleu; BLEU tokenizer {tokenizers})")
    console.print(f"stats: {path}")
