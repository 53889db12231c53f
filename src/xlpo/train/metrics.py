"""Aggregate per-pair metrics over a step, overall and per language, and write them out.

Losses return per-pair values; this module turns them into the logged means (`rewards/accuracies`,
`rewards/accuracies/de`, ...), writes metrics.jsonl (the record) and mirrors it to the experiment
trackers of `training.report_to` (TensorBoard, W&B, MLflow, ...) through accelerate's tracker API.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate.tracking import get_available_trackers
from accelerate.utils import ProjectConfiguration

from xlpo.errors import UserError
from xlpo.fileio import write_text
from xlpo.train.run import TrainRun


class StepMetrics:
    """Collects per-pair metric tensors of one optimizer step (all micro-batches of this process)."""

    def __init__(self, names: list[str], languages: list[str]):
        self.names = names
        self.lang_index = {lang: i for i, lang in enumerate(languages)}
        self.values: list[torch.Tensor] = []
        self.langs: list[torch.Tensor] = []
        self.mask: list[torch.Tensor] = []

    def add(self, per_pair: dict[str, torch.Tensor], langs: list[str | None], weights: torch.Tensor) -> None:
        self.values.append(torch.stack([per_pair[n].detach().float().cpu() for n in self.names]))
        self.langs.append(torch.tensor([self.lang_index.get(lang, -1) if lang else -1 for lang in langs]))
        self.mask.append(weights.detach().cpu() > 0)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.cat(self.values, dim=1), torch.cat(self.langs), torch.cat(self.mask)

    def per_pair(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pairs, metrics) values, language codes and a float mask: pairs along dim 0, so that gathering
        across processes concatenates pairs."""
        values, langs, mask = self.tensors()
        return values.T.contiguous(), langs, mask.float()


def summarize(names: list[str], languages: list[str], values: torch.Tensor, langs: torch.Tensor,
              mask: torch.Tensor) -> dict[str, float]:
    """Means over real pairs, overall and per language (`name/lang`)."""
    out: dict[str, float] = {}
    real = mask.bool()
    for row, name in enumerate(names):
        out[name] = float(values[row][real].mean()) if real.any() else float("nan")
    for code, lang in enumerate(languages):
        sel = real & (langs == code)
        if sel.any():
            for row, name in enumerate(names):
                out[f"{name}/{lang}"] = float(values[row][sel].mean())
            out[f"pairs/{lang}"] = int(sel.sum())
    return out


PIP_NAMES = {"comet_ml": "comet-ml"}  # where a tracker's package name differs from its tracker name


def tracker_names(training) -> list[str]:
    """The trackers `training.report_to` asks for, each checked to be installed. The default's TensorBoard
    is skipped with a notice when it is missing (it is an optional dependency); one asked for is an error."""
    wanted = training.report_to
    available = [str(t) for t in get_available_trackers()]
    if wanted == ["all"]:
        return available
    missing = [name for name in wanted if name not in available]
    if missing == ["tensorboard"] and "report_to" not in training.model_fields_set:
        print("xlpo: TensorBoard is not installed: metrics go to metrics.jsonl only "
              "(pip install tensorboard, or set training.report_to=none)")
        return [name for name in wanted if name != "tensorboard"]
    if missing:
        raise UserError(f"training.report_to: {', '.join(missing)} not installed here "
                        f"(pip install {' '.join(PIP_NAMES.get(m, m) for m in missing)}), or leave it out of report_to")
    return wanted


def tracker_project(output_dir: Path) -> ProjectConfiguration:
    """Where the trackers that write files put them: TensorBoard under output_dir/tensorboard/."""
    return ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(Path(output_dir) / "tensorboard"))


def flat_config(config: dict, prefix: str = "") -> dict[str, str | int | float | bool]:
    """`{"training.learning_rate": 5e-4, ...}`: the scalars every tracker accepts as hyper-parameters."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    return out


class MetricsWriter:
    """Appends one JSON object per logged step to metrics.jsonl and logs its numbers to the trackers.

    Main process only. The trackers are the accelerator's (`Accelerator(log_with=...)`); this starts them
    with the run's config; `accelerator.end_training()` closes them.
    """

    PROJECT = "xlpo"  # the W&B / MLflow / Trackio project; TensorBoard's subfolder

    def __init__(self, output_dir: Path, accelerator, config: dict):
        self.path = TrainRun(output_dir).metrics_file
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.acc = accelerator
        run = Path(output_dir).resolve().name
        accelerator.init_trackers(self.PROJECT, config=flat_config(config), init_kwargs={
            "wandb": {"name": run, "dir": str(output_dir)}, "trackio": {"name": run}, "mlflow": {"run_name": run}})

    def truncate_after(self, step: int) -> None:
        """On resume, forget lines logged after the checkpoint so the log equals an uninterrupted run's."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        self.acc.log(numbers, step=record["step"])


def step_info(record: dict) -> str:
    """What the progress display shows beside the step count."""
    return f"loss {record.get('loss', float('nan')):.4f} acc {record.get('rewards/accuracies', float('nan')):.2f}"
