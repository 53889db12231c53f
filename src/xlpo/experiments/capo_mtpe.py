"""`xlpo experiment capo-mtpe`: the CAPO paper's study as one resumable job.

data (MTPE pairs) -> train each method with identical LoRA settings (DPO, SimPO, DPO+NLL, CAPO,
optionally CAPO with the inverse RRM and an alpha sweep) -> score the base model and every
adapter on the evaluation split -> per-language analysis -> report.html / report.md / results.json.
Every stage writes files and is skipped when its outputs exist for the same inputs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xlpo.errors import UserError
from xlpo.eval.rewards import ScoringRequest, score_run
from xlpo.fileio import read_json, write_json
from xlpo.train.config import _format_error, apply_overrides, config_from_dict, read_yaml
from xlpo.train.trainer import train


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataPlan(_Section):
    per_split: int = Field(10, gt=0, description="MTPE pairs per direction and split.")
    directions: list[str] | None = Field(None, description="Directions to use (default: all eight).")
    seed: int = Field(42, description="Seed of the split assignment.")
    divemt: str | None = Field(None, description="DivEMT folder or 'hub' (default: staged data).")
    mlqe_pe: str | None = Field(None, description="MLQE-PE folder or 'hub' (default: staged data).")
    keep_identical: bool = Field(False, description="Keep pairs whose MT equals the post-edit.")


class Method(_Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Run name (a directory name).")
    loss: dict[str, Any] = Field(..., description="Loss section: name and hyper-parameters.")


class EvalPlan(_Section):
    split: str = Field("evaluation", description="Which MTPE split to score (validation or evaluation).")
    batch_size: int = Field(8, gt=0, description="Pairs per scoring forward pass.")


class AnalysisPlan(_Section):
    baseline: str = Field("dpo", description="Method the target is compared against.")
    target: str = Field("capo", description="Method whose shift over the baseline is analysed.")


def _default_methods() -> list[Method]:
    return [Method(name="dpo", loss={"name": "dpo", "beta": 0.1}),
            Method(name="simpo", loss={"name": "simpo"}),
            Method(name="dpo_nll", loss={"name": "dpo_nll", "beta": 0.1}),
            Method(name="capo", loss={"name": "capo", "beta": 0.1, "alpha": 2.0, "rrm": "paper"})]


def _default_train() -> dict[str, Any]:
    # The embedded model on a 2-core CPU: see configs/capo-mtpe-cpu.yaml for the same values spelled out.
    return {"model": {"name_or_path": "embedded", "dtype": "float32"},
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
            "data": {"chat_format": "tokenizer", "max_length": 384, "max_prompt_length": 256},
            "training": {"epochs": 1, "batch_size": 4, "grad_accum": 2, "learning_rate": 5e-4,
                         "warmup_ratio": 0.1, "seed": 42, "save_steps": 5, "progress": False}}


class ExperimentConfig(_Section):
    out_dir: str = Field("runs/capo-mtpe", description="Run directory; finished stages found here are reused.")
    data: DataPlan = Field(default_factory=DataPlan)
    train: dict[str, Any] = Field(default_factory=_default_train, description="Training config shared by all methods (model, lora, data formatting, training).")
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
    raw = read_yaml(path, "sections (out_dir, data, train, methods, ...)") if path else {}
    raw = apply_overrides(raw, list(overrides))
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_format_error(exc)) from None
    for method in config.all_methods():  # fail now, not after an hour of training
        method_train_config(config, method, Path(config.out_dir))
    return config


def method_train_config(config: ExperimentConfig, method: Method, out: Path):
    raw = copy.deepcopy(config.train)
    raw["loss"] = dict(method.loss)
    raw.setdefault("data", {})["train"] = str(out / "data" / "train.jsonl")
    raw.setdefault("training", {})["output_dir"] = str(out / "train" / method.name)
    return config_from_dict(raw, prefix=f"train (method {method.name}): ")


def _data_stage(config: ExperimentConfig, out: Path, log) -> Path:
    from xlpo.data.mtpe.build import make_mtpe

    data_dir = out / "data"
    plan = config.data
    wanted = {"per_split": {s: plan.per_split for s in ("train", "validation", "evaluation")}, "seed": plan.seed,
              "keep_identical": plan.keep_identical}
    manifest = data_dir / "manifest.json"
    if manifest.is_file():
        have = read_json(manifest)["config"]
        same_directions = plan.directions is None or have.get("directions") == plan.directions
        if all(have.get(k) == v for k, v in wanted.items()) and same_directions:
            log(f"data: reusing {data_dir}")
            return data_dir
    log("data: building MTPE preference pairs (chosen = post-edit, rejected = raw MT)")
    build, _ = make_mtpe(data_dir, plan.directions, per_split=plan.per_split, seed=plan.seed,
                         divemt=plan.divemt, mlqe_pe=plan.mlqe_pe, keep_identical=plan.keep_identical)
    for split, counts in build.manifest["counts"].items():
        log(f"  {split}: {sum(counts.values())} pairs ({', '.join(f'{d} {n}' for d, n in counts.items())})")
    return data_dir


def _train_stage(config: ExperimentConfig, method: Method, out: Path, log) -> Path:
    cfg = method_train_config(config, method, out)
    run = Path(cfg.training.output_dir)
    saved = run / "config.yaml"
    finished = (run / "train_summary.json").is_file() and ((run / "adapter").is_dir() or (run / "model").is_dir())
    if finished and saved.is_file() and yaml.safe_load(saved.read_text()) == cfg.model_dump(mode="json"):
        log(f"train {method.name}: reusing {run}")
        return run
    log(f"train {method.name}: loss {cfg.loss.name} {cfg.loss.params()}")
    train(cfg, resume=(run / "checkpoints").is_dir())
    return run


def run_experiment(config: ExperimentConfig, log=print) -> Path:
    """Run (or continue) the whole study; returns the report directory."""
    out = Path(config.out_dir)
    data_dir = _data_stage(config, out, log)
    methods = config.all_methods()
    train_runs = {m.name: _train_stage(config, m, out, log) for m in methods}

    base_cfg = method_train_config(config, methods[0], out)
    eval_file = data_dir / f"{config.eval.split}.jsonl"
    common = dict(data=str(eval_file), model=base_cfg.model.name_or_path, dtype=base_cfg.model.dtype,
                  chat_format=base_cfg.data.chat_format, max_length=base_cfg.data.max_length,
                  max_prompt_length=base_cfg.data.max_prompt_length, batch_size=config.eval.batch_size,
                  trust_remote_code=base_cfg.model.trust_remote_code)
    log(f"score: base model and {len(methods)} adapters on the {config.eval.split} split")
    scored = [score_run(ScoringRequest(out_dir=str(out / "scores" / "base"), name="base", method="base", **common), log)]
    for m in methods:
        adapter = train_runs[m.name] / "adapter"
        if not adapter.is_dir():
            raise UserError(f"method {m.name}: experiments compare LoRA adapters; set train.lora.enabled=true")
        scored.append(score_run(ScoringRequest(out_dir=str(out / "scores" / m.name), adapter=str(adapter),
                                               name=m.name, reference_scores=str(scored[0]), **common), log))

    from xlpo.eval.analysis import analyze

    log("analyze: per-language accuracy, reward-difference KDEs, BLEU correlation, curves, report")
    report_dir = out / "report"
    analyze([str(p) for p in scored], str(report_dir), baseline=config.analysis.baseline,
            target=config.analysis.target, data_file=str(data_dir / "train.jsonl"))
    # results.json also records the whole experiment config (seeds included) and the data manifest.
    results = read_json(report_dir / "results.json")
    results["experiment"] = {"config": config.model_dump(mode="json"),
                             "data_manifest": read_json(data_dir / "manifest.json")}
    write_json(report_dir / "results.json", results)
    return report_dir
