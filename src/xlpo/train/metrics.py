"""Aggregate per-pair metrics over a step, overall and per language, write them out, show progress.

Losses return per-pair values; this module turns them into the logged means
(`rewards/accuracies`, `rewards/accuracies/de`, ...) and writes JSONL and, when installed, TensorBoard.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from xlpo.fileio import write_text


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


class MetricsWriter:
    """Appends one JSON object per logged step; mirrors scalars to TensorBoard when available."""

    def __init__(self, output_dir: Path, enable_tensorboard: bool = True):
        self.path = Path(output_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tb = None
        if enable_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"))
            except ImportError:  # TensorBoard is optional
                self.tb = None

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
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class ProgressBar:
    """A rich progress bar on the main process; a no-op elsewhere."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.enabled = enabled
        if enabled:
            self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                TextColumn("{task.fields[info]}"), transient=False)
            self.task = self.bar.add_task("train", total=total, completed=start, info="")

    def __enter__(self):
        if self.enabled:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)

    def advance(self, record: dict) -> None:
        if self.enabled:
            info = f"loss {record.get('loss', float('nan')):.4f} acc {record.get('rewards/accuracies', float('nan')):.2f}"
            self.bar.update(self.task, advance=1, info=info)
