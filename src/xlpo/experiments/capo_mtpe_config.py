"""The capo-mtpe experiment's configuration (`xlpo experiment capo-mtpe`): its schema and each method's training config.

Kept apart from the stages (capo_mtpe.py) so that reading a config, and its errors, need no torch.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from xlpo.config import Nested, Section, load_raw, validate
from xlpo.errors import UserError
from xlpo.train.config import TrainConfig, config_from_dict


class DataPlan(Section):
    per_split: int = Field(10, gt=0, description="MTPE pairs per direction and split.")
    directions: list[str] | None = Field(None, description="Directions to use (default: all eight).")
    seed: int = Field(42, description="Seed of the split assignment.")
    divemt: str | None = Field(None, description="DivEMT folder or 'hub' (default: staged data).")
    mlqe_pe: str | None = Field(None, description="MLQE-PE folder or 'hub' (default: staged data).")
    keep_identical: bool = Field(False, description="Keep pairs whose MT equals the post-edit.")


class Method(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Run name (a directory name).")
    loss: dict[str, Any] = Field(..., description="Loss section: name and hyper-parameters.")


class EvalPlan(Section):
    split: str = Field("evaluation", description="Which MTPE split to score (validation or evaluation).")
    batch_size: int = Field(8, gt=0, description="Pairs per scoring forward pass.")


class AnalysisPlan(Section):
    baseline: str = Field("dpo", description="Method the target is compared against.")
    target: str = Field("capo", description="Method whose shift over the baseline is analysed.")


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


class ExperimentConfig(Section):
    out_dir: str = Field("runs/capo-mtpe", description="Run directory; finished stages found here are reused.")
    data: DataPlan = Field(default_factory=DataPlan)
    train: Annotated[dict[str, Any], Nested(TrainConfig)] = Field(default_factory=_default_train, description="Training config shared by all methods (model, lora, data formatting, training).")
    methods: list[Method] = Field(default_factory=_default_methods)
    capo_inverse: bool = Field(True, description="Also train CAPO with the inverse RRM orientation (b/a).")
    alpha_sweep: list[float] = Field(default_factory=list, description="Extra CAPO runs with these alphas.")
    eval: EvalPlan = Field(default_factory=EvalPlan)
    analysis: AnalysisPlan = Field(default_factory=AnalysisPlan)

    def all_methods(self) -> list[Method]:
        methods = list(self.methods)
        capo = next((m for m in methods if m.loss.get("name") == "capo"), None)
        if self.capo_inverse and capo is not None:
            methods.append(Method(name=f"{capo.name}_inverse", loss={**capo.loss, "rrm": "inverse"}))
        if capo is not None:
            for alpha in self.alpha_sweep:
                if float(alpha) != float(capo.loss.get("alpha", 2.0)):
                    methods.append(Method(name=f"{capo.name}_alpha{alpha:g}", loss={**capo.loss, "alpha": float(alpha)}))
        names = [m.name for m in methods]
        if len(set(names)) != len(names):
            raise UserError(f"config: methods: duplicate names {names}")
        return methods


def load_experiment(path: str | Path | None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read YAML (a path or a shipped config's name; none: defaults), apply overrides, validate."""
    config = validate(ExperimentConfig, load_raw(ExperimentConfig, path, overrides,
                                                 "sections (out_dir, data, train, methods, ...)"))
    for method in config.all_methods():  # fail now, not after an hour of training
        method_train_config(config, method, Path(config.out_dir))
    return config


def method_train_config(config: ExperimentConfig, method: Method, out: Path):
    raw = copy.deepcopy(config.train)
    raw["loss"] = dict(method.loss)
    raw.setdefault("data", {})["train"] = str(out / "data" / "train.jsonl")
    raw.setdefault("training", {})["output_dir"] = str(out / "train" / method.name)
    return config_from_dict(raw, prefix=f"train (method {method.name}): ")
