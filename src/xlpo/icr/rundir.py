"""An ICR run directory: the files of one iteration, the check that a directory holds this run, and
stages written in parts so that a killed run resumes where it stopped.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from xlpo.errors import UserError
from xlpo.fileio import read_jsonl, write_json, write_jsonl, write_text
from xlpo.icr.config import ICRConfig
from xlpo.progress import Progress
from xlpo.versions import library_versions

# Keys that may change between runs of one run directory: they do not change any result.
_FREE_KEYS = {("run_dir",), ("iterations",), ("stats",), ("sampling", "batch_size"), ("sampling", "backend"),
              ("sampling", "gpu_memory_utilization"), ("sampling", "processes"), ("sampling", "tensor_parallel_size"),
              ("reward", "batch_size"), ("reward", "logit_chunk_size"), ("train_launch", "config"),
              ("train_launch", "main_process_port")}


class IterationDir:
    def __init__(self, run_dir: Path, t: int):
        self.root = run_dir / f"iter-{t}"
        self.t = t
        self.samples = self.root / "samples.jsonl"
        self.translations = self.root / "translations.jsonl"
        self.scores = self.root / "scores.jsonl"
        self.alpha = self.root / "alpha.json"
        self.pairs_dir = self.root / "pairs"
        self.train = self.root / "train"
        self.stats = self.root / "stats.json"
        self.judge = self.root / "judge"
        self.manifest = self.root / "manifest.json"
        self.timings = self.root / "timings.json"

    def pairs(self, kind: str) -> Path:
        return self.pairs_dir / f"{kind}.jsonl"

    def parts(self, stage: str) -> Path:
        return self.root / "parts" / stage


def check_run_dir(config: ICRConfig, run_dir: Path) -> None:
    """Refuse a run directory made with settings that change results; record this run's config."""
    saved = run_dir / "config.yaml"
    current = config.model_dump(mode="json")
    if saved.is_file():
        previous = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        # Runs from before train_launch existed trained in the driver's process: the default.
        previous.setdefault("train_launch", ICRConfig().train_launch.model_dump(mode="json"))
        diff = _first_difference(previous, current)
        if diff is not None:
            raise UserError(f"{run_dir}: holds a run made with a different {diff}; use another run_dir "
                            "(or the same settings) so that finished stages are not mixed with new ones")
    text = yaml.safe_dump(current, sort_keys=False, allow_unicode=True)
    if not saved.is_file() or saved.read_text(encoding="utf-8") != text:
        write_text(saved, text)
    if not (run_dir / "versions.json").is_file():
        write_json(run_dir / "versions.json", library_versions())


def _first_difference(old: dict, new: dict, prefix: tuple = ()) -> str | None:
    for key in sorted(set(old) | set(new)):
        path = (*prefix, key)
        if any(path[:len(free)] == free for free in _FREE_KEYS):
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, path)
            if found:
                return found
        elif a != b:
            return f"{'.'.join(path)} ({a!r} there, {b!r} now)"
    return None


def part_file(it: IterationDir, stage: str, lang: str, k: int) -> Path:
    """The saved part of one unit (a language's k-th chunk) of a stage written in parts."""
    return it.parts(stage) / f"{lang}-{k:05d}.jsonl"


def write_in_parts(it: IterationDir, stage: str, target: Path, work: Callable[[str, int, list], list[dict]],
                   units: dict[str, list[list]], elsewhere: Callable[[list[tuple[str, int]], int], None] | None = None) -> None:
    """Run `work(lang, chunk index, items)` for every unit whose part file is missing, then join the
    parts into `target` in their fixed order: a killed stage redoes at most one part. With `elsewhere`,
    `elsewhere(missing (lang, index) units, total prompts)` writes the missing parts instead (worker processes)."""
    parts_dir = it.parts(stage)
    part = {(lang, k): part_file(it, stage, lang, k) for lang, chunks in units.items() for k in range(len(chunks))}
    total = sum(len(items) for chunks in units.values() for items in chunks)
    todo = [(lang, k, items) for lang, chunks in units.items() for k, items in enumerate(chunks)
            if not part[lang, k].is_file()]
    if todo and elsewhere is not None:
        elsewhere([(lang, k) for lang, k, _ in todo], len(part))
        todo = []
    with Progress(f"iteration {it.t} {stage}", total, "prompts", start=total - sum(len(i) for _, _, i in todo),
                  enabled=bool(todo)) as progress:
        for lang, k, items in todo:
            write_jsonl(part[lang, k], work(lang, k, items))
            progress.advance(len(items), info=lang)
    write_jsonl(target, [row for path in part.values() for row in read_jsonl(path)])
    shutil.rmtree(parts_dir, ignore_errors=True)
    if parts_dir.parent.is_dir() and not any(parts_dir.parent.iterdir()):
        parts_dir.parent.rmdir()
