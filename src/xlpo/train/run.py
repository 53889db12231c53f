"""A training run's folder as a type: the files `xlpo train` writes there, whether it finished, what it made.

The trainer writes config.yaml, versions.json and skipped.jsonl first, metrics.jsonl as it goes and
checkpoints/ every training.save_steps; at the end adapter/ (LoRA) or model/ (full fine-tuning), then
train_summary.json. A run is finished when its summary and its saved policy are both there, and usable
when the saved policy also matches its checksum manifest. The trainer writes a run folder, and every
stage that reuses or reads one reads it, through `TrainRun`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from xlpo.checksums import saved_folder_problem
from xlpo.errors import UserError
from xlpo.fileio import iter_jsonl, read_json_object
from xlpo.model_spec import ModelSpec
from xlpo.train.config import TrainConfig, config_from_dict


def _file(name: str) -> property:
    """A path inside the run folder, as a read-only property."""
    return property(lambda run: run.dir / name, doc=f"the run's {name}")


@dataclass(frozen=True)
class TrainRun:
    """The folder `training.output_dir` of one run (it need not exist yet)."""

    dir: Path

    def __post_init__(self):
        object.__setattr__(self, "dir", Path(self.dir))

    # -- its files, named here once -------------------------------------------------------------
    config_file = _file("config.yaml")
    summary_file = _file("train_summary.json")
    metrics_file = _file("metrics.jsonl")
    versions_file = _file("versions.json")
    skipped_file = _file("skipped.jsonl")
    checkpoints = _file("checkpoints")
    adapter = _file("adapter")
    model = _file("model")

    def saved_as(self, lora: bool) -> Path:
        """Where the trained policy is saved: adapter/ when LoRA trained, else model/ (full weights)."""
        return self.adapter if lora else self.model

    # -- its state ------------------------------------------------------------------------------
    def saved(self) -> Path | None:
        """The saved policy, adapter/ or model/, once there; else None."""
        return next((folder for folder in (self.adapter, self.model) if folder.is_dir()), None)

    @property
    def finished(self) -> bool:
        return self.summary_file.is_file() and self.saved() is not None

    def problem(self) -> str | None:
        """Why the run holds no usable result: "missing" (not finished), or its saved adapter/ or model/
        differs from its manifest (damaged since it was saved); None when it is finished and intact."""
        saved = self.saved()
        if saved is None or not self.summary_file.is_file():
            return "missing"
        problem = saved_folder_problem(saved)
        return f"{saved.name}/: {problem}" if problem else None

    @property
    def resumable(self) -> bool:
        """A checkpoint is there: `train(config, resume=True)` continues from it."""
        return self.checkpoints.is_dir()

    def policy(self, base: str) -> ModelSpec | None:
        """The policy a finished run made: its adapter on `base`, or its full weights; None before it finished
        or when what it saved is damaged (see `problem`)."""
        saved = self.saved() if self.problem() is None else None
        if saved is None:
            return None
        return ModelSpec(base, str(saved)) if saved == self.adapter else ModelSpec(str(saved))

    def finished_with(self, config: TrainConfig) -> bool:
        """Finished intact, and trained with `config`: a stage may reuse it. The saved config is read with
        today's schema, so a setting that a newer xlpo added (at its default) does not make a finished run
        train again; one that no longer validates (a setting since removed), or a damaged file, is another run."""
        if self.problem() is not None:
            return False
        try:
            then = self.train_config()
        except UserError:
            return False
        return then is not None and then.model_dump(mode="json") == config.model_dump(mode="json")

    # -- its contents ---------------------------------------------------------------------------
    def summary(self) -> dict | None:
        """train_summary.json (None before the run finished); a damaged file is a one-line UserError."""
        if not self.summary_file.is_file():
            return None
        return read_json_object(self.summary_file)

    def saved_config(self) -> dict | None:
        """config.yaml as the trainer wrote it (every setting spelled out); None when absent; a damaged file
        is a one-line UserError."""
        if not self.config_file.is_file():
            return None
        try:
            config = yaml.safe_load(self.config_file.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            raise UserError(f"{self.config_file}: not valid YAML") from None
        if not isinstance(config, dict):
            raise UserError(f"{self.config_file}: expected a mapping of sections")
        return config

    def train_config(self) -> TrainConfig | None:
        """The saved config read with today's schema; None when absent."""
        saved = self.saved_config()
        return None if saved is None else config_from_dict(saved, prefix=f"{self.config_file}: ")

    def metrics(self) -> list[dict]:
        """metrics.jsonl, one record per logged step in step order (a step logged twice keeps its last
        record); [] when absent."""
        if not self.metrics_file.is_file():
            return []
        records: dict[int, dict] = {}
        for _, record in iter_jsonl(self.metrics_file):
            if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
                records[int(record["step"])] = record
        return [records[step] for step in sorted(records)]

    @classmethod
    def of_saved(cls, folder: str | Path) -> TrainRun | None:
        """The run that saved `folder` (its adapter/ or model/), if its parent holds a run's config.yaml and
        metrics.jsonl. Written as `folder` was given (relative stays relative), so a report names the run
        as it names the adapter."""
        given = Path(folder)  # pathlib already drops a trailing slash and "." parts
        run = cls(given.parent if given.name not in ("", "..") else given.resolve().parent)
        return run if run.config_file.is_file() and run.metrics_file.is_file() else None
