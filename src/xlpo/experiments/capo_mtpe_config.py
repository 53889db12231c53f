"""The capo-mtpe experiment's configuration (`xlpo experiment capo-mtpe`): its schema and each run's training config.

Kept apart from the stages (capo_mtpe.py) so that reading a config, and its errors, need no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from xlpo.config import Section, load_raw, validate
from xlpo.data.mtpe.common import SPLITS, split_sizes
from xlpo.errors import UserError
from xlpo.train.config import TrainConfig, TrainingSection, derive_train_config, partial_train_section


class DataPlan(Section):
    per_split: int | dict[Literal["train", "validation", "evaluation"], int] = Field(
        10, description="MTPE pairs per direction and split: one number, or {train: N, validation: N, evaluation: N}.")
    directions: list[str] | None = Field(None, description="Directions to use (default: all eight).")
    seed: int = Field(42, description="Seed of the split assignment.")
    divemt: str | None = Field(None, description="DivEMT folder or 'hub' (default: staged data).")
    mlqe_pe: str | None = Field(None, description="MLQE-PE folder or 'hub' (default: staged data).")
    keep_identical: bool = Field(False, description="Keep pairs whose MT equals the post-edit.")

    @field_validator("per_split")
    @classmethod
    def _sizes(cls, value: int | dict) -> int | dict:
        if isinstance(value, int) and value <= 0:
            raise ValueError("expected a number of pairs > 0")
        if isinstance(value, dict) and (set(value) != set(SPLITS) or any(n <= 0 for n in value.values())):
            raise ValueError(f"expected a number > 0 for each of {', '.join(SPLITS)}")
        return value

    def sizes(self) -> dict[str, int]:
        """Pairs per direction for each split."""
        return split_sizes(self.per_split)


class Method(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Run name (a directory name).")
    loss: dict[str, Any] = Field(..., description="Loss section: name and hyper-parameters.")
    lr_of: str | None = Field(None, description="With an lr search: use the rate chosen for this other method instead of a search of its own.")
    seeds: int | None = Field(None, gt=0, description="Train this method with only the first N of the experiment's seeds (default: all of them).")


class EvalPlan(Section):
    split: Literal["validation", "evaluation"] = Field("evaluation", description="Which MTPE split to score.")
    batch_size: int = Field(8, gt=0, description="Pairs per scoring forward pass.")


class AnalysisPlan(Section):
    baseline: str = Field("dpo", description="Method the target is compared against.")
    target: str = Field("capo", description="Method whose shift over the baseline is analysed.")


class LrSearch(Section):
    grid: list[float] = Field(default_factory=list, description="Learning rates tried with the first seed for every method without lr_of, each scored on the validation split; the best is used for every seed (empty: no search, train.training.learning_rate).")
    ablations: Literal["share", "search"] = Field("share", description="CAPO's inverse-RRM and alpha runs: share CAPO's chosen rate (an ablation changes one thing at a time) or search their own.")
    definition: Literal["sum", "mean"] = Field("sum", description="The validation accuracy that picks the lr: sum (summed log-probs, the paper's Appendix B) or mean (per-token).")
    average: Literal["pooled", "macro"] = Field("pooled", description="Over which validation pairs: pooled (every pair counts once, so a language weighs by its pairs) or macro (unweighted mean over languages: a nine-pair language counts as much as a hundred-pair one).")
    tolerance: float = Field(0.02, ge=0, lt=1, description="Rates whose validation accuracy is within this of the best (0.02: 2 points) count as tied; a tie goes to the larger rate.")
    extend: int = Field(2, ge=0, description="When the top of the grid is chosen, try one rate past it (at the ratio of the grid's top two), at most this many times.")

    @field_validator("grid")
    @classmethod
    def _grid(cls, grid: list[float]) -> list[float]:
        if any(lr <= 0 for lr in grid) or len(set(grid)) != len(grid):
            raise ValueError(f"expected distinct learning rates > 0, got {grid}")
        return sorted(grid)


class RunnerPlan(Section):
    workers: int | Literal["auto"] = Field("auto", description="Runs (a training and its scoring) at once, each in a process of its own; auto: one per CPU core (at most 4) on a CPU-only machine, 1 with a GPU.")
    threads: int | Literal["auto"] = Field("auto", description="torch threads per worker; auto: the CPU cores divided among the workers.")

    @field_validator("workers", "threads")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("expected a number >= 1 or auto")
        return value


def _default_methods() -> list[Method]:
    return [Method(name="dpo", loss={"name": "dpo", "beta": 0.1}),
            Method(name="simpo", loss={"name": "simpo"}),
            Method(name="dpo_nll", loss={"name": "dpo_nll", "beta": 0.1}),
            Method(name="capo", loss={"name": "capo", "beta": 0.1, "alpha": 2.0, "rrm": "paper"})]


def _default_train() -> dict[str, Any]:
    # The embedded model on a 2-core CPU: the shipped capo-mtpe-cpu config spells the same values out.
    return {"model": {"name_or_path": "embedded", "dtype": "float32"},
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
            "data": {"chat_format": "tokenizer", "max_length": 384, "max_prompt_length": 256},
            "training": {"epochs": 1, "batch_size": 4, "grad_accum": 2, "learning_rate": 5e-4,
                         "warmup_ratio": 0.1, "seed": 42, "save_steps": 5, "progress": False}}


SharedTrain = partial_train_section(_default_train)


class ExperimentConfig(Section):
    out_dir: str = Field("runs/capo-mtpe", description="Run directory; finished stages found here are reused.")
    data: DataPlan = Field(default_factory=DataPlan)
    train: SharedTrain = Field(default_factory=_default_train, description="Training config shared by all methods (model, lora, data formatting, training); given in part, it completes the defaults (docs/training.md: partial training sections).")
    methods: list[Method] = Field(default_factory=_default_methods)
    capo_inverse: bool = Field(True, description="Also train CAPO with the inverse RRM orientation (b/a).")
    alpha_sweep: list[float] = Field(default_factory=list, description="Extra CAPO runs with these alphas.")
    seeds: list[int] = Field(default_factory=list, description="Training seeds: every method is trained once per seed (run <method>-s<seed>, group <method>); empty: train.training.seed alone.")
    lr_search: LrSearch = Field(default_factory=LrSearch)
    eval: EvalPlan = Field(default_factory=EvalPlan)
    analysis: AnalysisPlan = Field(default_factory=AnalysisPlan)
    runner: RunnerPlan = Field(default_factory=RunnerPlan)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"expected distinct seeds, got {seeds}")
        return seeds

    @model_validator(mode="after")
    def _selection_apart_from_evaluation(self) -> ExperimentConfig:
        if self.lr_search.grid and self.eval.split == "validation":
            raise ValueError("lr_search.grid: the learning rate is chosen on the validation split, so eval.split "
                             "must be evaluation")
        return self

    def seed_list(self) -> list[int]:
        """The training seeds, in order; the first one also runs the learning-rate search."""
        return list(self.seeds) or [self.train.get("training", {}).get("seed", TrainingSection.model_fields["seed"].default)]

    def seeds_of(self, method: Method) -> list[int]:
        """The seeds `method` is trained with: the first `method.seeds` of the experiment's, or all."""
        return self.seed_list()[:method.seeds]

    def default_lr(self) -> float:
        return float(self.train.get("training", {}).get("learning_rate",
                                                         TrainingSection.model_fields["learning_rate"].default))

    def all_methods(self) -> list[Method]:
        methods = list(self.methods)
        capo = next((m for m in methods if m.loss.get("name") == "capo"), None)
        if capo is not None:
            lr_of = (capo.lr_of or capo.name) if self.lr_search.ablations == "share" else None
            if self.capo_inverse:
                methods.append(Method(name=f"{capo.name}_inverse", loss={**capo.loss, "rrm": "inverse"}, lr_of=lr_of))
            for alpha in self.alpha_sweep:
                if float(alpha) != float(capo.loss.get("alpha", 2.0)):
                    methods.append(Method(name=f"{capo.name}_alpha{alpha:g}", loss={**capo.loss, "alpha": float(alpha)},
                                          lr_of=lr_of))
        names = [m.name for m in methods]
        if len(set(names)) != len(names):
            raise UserError(f"config: methods: duplicate names {names}")
        searched = {m.name for m in methods if m.lr_of is None}
        for m in methods:
            if m.lr_of is not None and m.lr_of not in searched:
                raise UserError(f"config: methods: {m.name}: lr_of {m.lr_of!r} is not a method that searches its own "
                                f"rate (expected one of {sorted(searched)})")
        return methods


@dataclass(frozen=True)
class RunPlan:
    """One training run: a method at one seed and learning rate."""

    method: Method
    seed: int
    lr: float
    lr_in_name: bool  # with an lr search the directory names the lr, so a new choice never meets an old run

    @property
    def name(self) -> str:
        """The scored run's name: `<method>-s<seed>` (its group is the method's name)."""
        return f"{self.method.name}-s{self.seed}"

    @property
    def dir_name(self) -> str:
        return f"{self.name}-lr{self.lr:g}" if self.lr_in_name else self.name


def first_runs(config: ExperimentConfig) -> list[RunPlan]:
    """Each method's first run (first seed, first lr of the grid): enough to validate every training config."""
    lr = config.lr_search.grid[0] if config.lr_search.grid else config.default_lr()
    return [RunPlan(m, config.seed_list()[0], lr, bool(config.lr_search.grid)) for m in config.all_methods()]


def load_experiment(path: str | Path | None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read YAML (a path or a shipped config's name; none: defaults), apply overrides, validate."""
    config = validate(ExperimentConfig, load_raw(ExperimentConfig, path, overrides,
                                                 "sections (out_dir, data, train, methods, ...)"))
    for run in first_runs(config):  # fail now, not after an hour of training
        run_train_config(config, run, Path(config.out_dir))
    return config


def run_train_config(config: ExperimentConfig, run: RunPlan, out: Path) -> TrainConfig:
    """The training config of one run: the shared `train` section with the run's loss, seed, lr and directory."""
    own = {"loss": run.method.loss, "data": {"train": str(out / "data" / "train.jsonl")},
           "training": {"output_dir": str(out / "train" / run.dir_name), "seed": run.seed, "learning_rate": run.lr}}
    return derive_train_config(config.train, own, prefix=f"train (method {run.method.name}): ")
