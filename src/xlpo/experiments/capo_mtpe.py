"""`xlpo experiment capo-mtpe`: the CAPO paper's study as one resumable job.

data (MTPE pairs) -> [learning rate per method, chosen on the validation split] -> train each method
once per seed with identical LoRA settings (DPO, SimPO, DPO+NLL, CAPO, optionally CAPO with the
inverse RRM and an alpha sweep) -> score the base model and every adapter on the evaluation split
-> per-language analysis, seeds as replicates -> report.html / report.md / results.json.
Every stage writes files and is skipped when its outputs exist for the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlpo.data.mtpe.build import make_mtpe
from xlpo.errors import UserError
from xlpo.eval.analysis.driver import analyze
from xlpo.eval.rewards import ScoringRequest, score_run
from xlpo.experiments.capo_mtpe_config import ExperimentConfig, Method, RunPlan, first_runs, run_train_config
from xlpo.experiments.capo_mtpe_report import write_experiment_report
from xlpo.experiments.lr_search import DEFINITIONS, choose_lr, macro, validation_entry
from xlpo.fileio import read_json, write_json
from xlpo.train.run import TrainRun
from xlpo.train.trainer import train


def _data_stage(config: ExperimentConfig, out: Path, log) -> Path:
    data_dir = out / "data"
    plan = config.data
    wanted = {"per_split": plan.sizes(), "seed": plan.seed, "keep_identical": plan.keep_identical}
    manifest = data_dir / "manifest.json"
    if manifest.is_file():
        have = read_json(manifest)["config"]
        same_directions = plan.directions is None or have.get("directions") == plan.directions
        if all(have.get(k) == v for k, v in wanted.items()) and same_directions:
            log(f"data: reusing {data_dir}")
            return data_dir
    log("data: building MTPE preference pairs (chosen = post-edit, rejected = raw MT)")
    build, _ = make_mtpe(data_dir, plan.directions, per_split=plan.sizes(), seed=plan.seed,
                         divemt=plan.divemt, mlqe_pe=plan.mlqe_pe, keep_identical=plan.keep_identical)
    for split, counts in build.manifest["counts"].items():
        log(f"  {split}: {sum(counts.values())} pairs ({', '.join(f'{d} {n}' for d, n in counts.items())})")
    return data_dir


def _train_stage(config: ExperimentConfig, run: RunPlan, out: Path, log) -> TrainRun:
    cfg = run_train_config(config, run, out)
    trained = TrainRun(cfg.training.output_dir)
    if trained.finished_with(cfg):
        log(f"train {run.dir_name}: reusing {trained.dir}")
        return trained
    log(f"train {run.dir_name}: loss {cfg.loss.name} {cfg.loss.params()}, lr {run.lr:g}, seed {run.seed}")
    train(cfg, resume=trained.resumable)
    return trained


@dataclass
class Scorer:
    """Scores the base model and adapters on one preference file; the base model's scores are every adapter's reference."""

    settings: dict[str, Any]  # ScoringRequest fields shared by every run: data, model, formatting, batch size
    out_dir: Path  # scored runs are written to out_dir/<name>
    log: Any
    base_scores: Path | None = None

    def base(self) -> Path:
        if self.base_scores is None:
            self.base_scores = score_run(ScoringRequest(out_dir=str(self.out_dir / "base"), name="base", method="base",
                                                        group="base", **self.settings), self.log)
        return self.base_scores

    def adapter(self, run: RunPlan, trained: TrainRun, name: str) -> Path:
        adapter = trained.adapter
        if not adapter.is_dir():
            raise UserError(f"method {run.method.name}: experiments compare LoRA adapters; set train.lora.enabled=true")
        return score_run(ScoringRequest(out_dir=str(self.out_dir / name), adapter=str(adapter), name=name,
                                        group=run.method.name, seed=run.seed, reference_scores=str(self.base()),
                                        **self.settings), self.log)


def scoring_settings(config: ExperimentConfig, data_file: Path) -> dict[str, Any]:
    """What every scoring of the experiment shares: the data file, and the model and formatting it trains with."""
    cfg = run_train_config(config, first_runs(config)[0], Path(config.out_dir))
    return dict(data=str(data_file), model=cfg.model.name_or_path, dtype=cfg.model.dtype,
                chat_format=cfg.data.chat_format, max_length=cfg.data.max_length,
                max_prompt_length=cfg.data.max_prompt_length, batch_size=config.eval.batch_size,
                trust_remote_code=cfg.model.trust_remote_code)


def _lr_stage(config: ExperimentConfig, method: Method, seed: int, scorer: Scorer, out: Path, log) -> dict:
    """Train `method` at every lr of the grid with `seed`, score each on the validation split, choose one."""
    entries = []
    for lr in config.lr_search.grid:
        run = RunPlan(method, seed, lr, lr_in_name=True)
        scored = scorer.adapter(run, _train_stage(config, run, out, log), run.dir_name)
        entries.append(validation_entry(lr, run.dir_name, read_json(scored / "accuracy.json")))
    chosen = choose_lr(entries, config.lr_search.definition)
    log(f"lr {method.name}: {chosen:g} (macro validation accuracy, "
        + ", ".join(f"lr {e['lr']:g}: {100 * e['macro'][config.lr_search.definition]:.1f}%" for e in entries) + ")")
    return {"seed": seed, "definition": config.lr_search.definition, "average": "macro over languages",
            "entries": entries, "chosen": chosen}


def run_experiment(config: ExperimentConfig, log=print) -> Path:
    """Run (or continue) the whole study; returns the report directory."""
    out = Path(config.out_dir)
    data_dir = _data_stage(config, out, log)
    methods, seeds, grid = config.all_methods(), config.seed_list(), config.lr_search.grid
    search: dict[str, dict] = {}
    base_validation = None
    if grid:
        searched = [m for m in methods if m.lr_of is None]
        log(f"lr search: {len(searched)} methods x {len(grid)} learning rates (seed {seeds[0]}), validation split"
            + "".join(f"; {m.name} uses {m.lr_of}'s rate" for m in methods if m.lr_of))
        validation = Scorer(scoring_settings(config, data_dir / "validation.jsonl"), out / "validation", log)
        accuracy = read_json(validation.base() / "accuracy.json")
        base_validation = {d: macro(accuracy, d) for d in DEFINITIONS}
        search = {m.name: _lr_stage(config, m, seeds[0], validation, out, log) for m in searched}
    lrs = {m.name: search[m.lr_of or m.name]["chosen"] if grid else config.default_lr() for m in methods}

    scorer = Scorer(scoring_settings(config, data_dir / f"{config.eval.split}.jsonl"), out / "scores", log)
    log(f"runs: {len(methods)} methods x {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
        f"{config.eval.split} split")
    scored = [scorer.base()]
    for seed in seeds:  # seed by seed: an interrupted study already has whole seeds of every method
        for m in methods:
            run = RunPlan(m, seed, lrs[m.name], lr_in_name=bool(grid))
            scored.append(scorer.adapter(run, _train_stage(config, run, out, log), run.name))

    log("analyze: per-language accuracy over seeds, reward-difference KDEs, BLEU correlation, curves, report")
    report_dir = out / "report"
    results = analyze([str(p) for p in scored], str(report_dir), baseline=config.analysis.baseline,
                      target=config.analysis.target, data_file=str(data_dir / "train.jsonl"))
    # results.json also records the whole experiment config (seeds included), the data manifest and the lr search.
    results["experiment"] = {"config": config.model_dump(mode="json"),
                             "data_manifest": read_json(data_dir / "manifest.json"),
                             "seeds": seeds, "learning_rates": lrs, "lr_search": search or None,
                             "lr_shared": {m.name: m.lr_of for m in methods if grid and m.lr_of},
                             "base_validation": base_validation}
    write_json(report_dir / "results.json", results)
    write_experiment_report(results, report_dir)
    return report_dir
