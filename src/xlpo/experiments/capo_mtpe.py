"""`xlpo experiment capo-mtpe`: the CAPO paper's study as one resumable job.

data (MTPE pairs) -> train each method with identical LoRA settings (DPO, SimPO, DPO+NLL, CAPO,
optionally CAPO with the inverse RRM and an alpha sweep) -> score the base model and every
adapter on the evaluation split -> per-language analysis -> report.html / report.md / results.json.
Every stage writes files and is skipped when its outputs exist for the same inputs.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from xlpo.data.mtpe.build import make_mtpe
from xlpo.errors import UserError
from xlpo.eval.analysis.driver import analyze
from xlpo.eval.rewards import ScoringRequest, score_run
from xlpo.experiments.capo_mtpe_config import ExperimentConfig, Method, method_train_config
from xlpo.fileio import read_json, write_json
from xlpo.train.trainer import train


def _data_stage(config: ExperimentConfig, out: Path, log) -> Path:
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
