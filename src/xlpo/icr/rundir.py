"""An ICR run directory: the files of one iteration, the check that a directory holds this run, stages
written in parts so that a killed run resumes where it stopped, and the checksums that tell a damaged
stage file (to be redone) from an intact one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from xlpo.checksums import file_digest, file_problem
from xlpo.errors import UserError
from xlpo.fileio import read_json, read_jsonl, write_json, write_jsonl, write_text
from xlpo.icr.config import ICRConfig
from xlpo.progress import Progress
from xlpo.train.run import TrainRun
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
        self.checksums = self.root / "checksums.json"

    def pairs(self, kind: str) -> Path:
        return self.pairs_dir / f"{kind}.jsonl"

    def parts(self, stage: str) -> Path:
        return self.root / "parts" / stage

    # -- checksums: each stage file's size and digest, recorded once the file is written ---------------
    def _recorded(self) -> dict[str, dict] | None:
        """{path relative to the iteration: digest}; None when checksums.json is damaged."""
        if not self.checksums.is_file():
            return {}
        try:
            recorded = json.loads(self.checksums.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None
        return recorded if isinstance(recorded, dict) else None

    def record(self, *paths: Path) -> None:
        recorded = self._recorded() or {}
        recorded.update({path.relative_to(self.root).as_posix(): file_digest(path) for path in paths})
        write_json(self.checksums, dict(sorted(recorded.items())))

    def forget(self, prefix: str) -> None:
        """Drop the records of the files under `prefix` (relative to the iteration), e.g. removed parts."""
        recorded = self._recorded() or {}
        kept = {name: d for name, d in recorded.items() if not (name == prefix or name.startswith(prefix + "/"))}
        if kept != recorded:
            write_json(self.checksums, kept)

    def problem(self, path: Path) -> str | None:
        """Why the stage file `path` cannot be used: missing, or not what was saved. A file without a record
        (written by an xlpo without checksums, or by a run killed before it recorded it) is taken as it is."""
        if not path.is_file():
            return "missing"
        recorded = self._recorded()
        if recorded is None:
            return f"{self.checksums.name} is damaged, so it cannot be verified"
        name = path.relative_to(self.root).as_posix()
        return file_problem(path, recorded[name], name) if name in recorded else None

    def read_timings(self) -> dict:
        """Seconds per stage so far (bookkeeping: a damaged file starts the count again)."""
        try:
            timings = read_json(self.timings) if self.timings.is_file() else {}
        except (ValueError, UnicodeDecodeError):
            return {}
        return timings if isinstance(timings, dict) else {}


def stage_outputs(it: IterationDir, kinds: list[str]) -> list[tuple[str, list[Path]]]:
    """The stages of an iteration, in order, with their outputs."""
    stages = [("sample", [it.samples])] + ([("translate", [it.translations])] if "translate" in kinds else [])
    return stages + [("score", [it.scores]), ("alpha", [it.alpha]), ("pairs", [it.pairs(k) for k in kinds]),
                     ("train", [it.train]), ("stats", [it.stats])]


def first_to_do(it: IterationDir, kinds: list[str], log: Callable[[str], None], start_over: bool) -> str | None:
    """The first stage of `it` whose output is missing or damaged (None: the iteration is finished). The stages
    after it are made from its output: theirs are removed, to be done again. With `start_over` (the policy the
    iteration starts from was trained again) every file of the iteration goes: it came from the policy before."""
    if start_over and it.root.exists():
        log(f"iter-{it.t}: its policy was trained again: redoing the iteration")
        shutil.rmtree(it.root)
    stages = stage_outputs(it, kinds)
    problems = [(stage, next(filter(None, (TrainRun(p).problem() if stage == "train" else it.problem(p)
                                           for p in outputs)), None)) for stage, outputs in stages]
    first = next((i for i, (_, problem) in enumerate(problems) if problem), None)
    if first is None:
        return None
    stage, problem = problems[first]
    if problem != "missing":
        log(f"iter-{it.t}/{stage}: {problem}: redoing {stage} and the stages after it")
    for path in stages[first][1]:  # its own parts and checkpoints stay: they are checked as they are used
        if path.is_file():
            path.unlink()
    for later, outputs in stages[first + 1:]:
        for path in outputs:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        shutil.rmtree(it.parts(later), ignore_errors=True)
        it.forget(f"parts/{later}")
    return stage


def check_run_dir(config: ICRConfig, run_dir: Path) -> None:
    """Refuse a run directory made with settings that change results; record this run's config."""
    saved = run_dir / "config.yaml"
    current = config.model_dump(mode="json")
    if saved.is_file():
        previous = _saved_config(saved)
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


def _saved_config(saved: Path) -> dict:
    try:
        previous = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        previous = None
    if not isinstance(previous, dict):
        raise UserError(f"{saved}: damaged (not the YAML config of an ICR run), so the settings this run directory "
                        "was made with are unknown; restore it, or use another run_dir")
    return previous


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
            if it.problem(part[lang, k]) is not None]  # missing, or damaged: done (again)
    if todo and elsewhere is not None:
        for lang, k, _ in todo:  # a damaged part goes first: workers write the parts that are not there
            part[lang, k].unlink(missing_ok=True)
        elsewhere([(lang, k) for lang, k, _ in todo], len(part))
        it.record(*[part[lang, k] for lang, k, _ in todo if part[lang, k].is_file()])
        todo = []
    with Progress(f"iteration {it.t} {stage}", total, "prompts", start=total - sum(len(i) for _, _, i in todo),
                  enabled=bool(todo)) as progress:
        for lang, k, items in todo:
            write_jsonl(part[lang, k], work(lang, k, items))
            it.record(part[lang, k])
            progress.advance(len(items), info=lang)
    write_jsonl(target, [row for path in part.values() for row in read_jsonl(path)])
    it.record(target)
    shutil.rmtree(parts_dir, ignore_errors=True)
    it.forget(parts_dir.relative_to(it.root).as_posix())
    if parts_dir.parent.is_dir() and not any(parts_dir.parent.iterdir()):
        parts_dir.parent.rmdir()
