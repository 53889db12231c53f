"""`xlpo experiment capo-mtpe`: the CAPO paper's study as one resumable job.

data (MTPE pairs) -> [learning rate per method, chosen on the validation split] -> train each method
once per seed with identical LoRA settings (DPO, SimPO, DPO+NLL, CAPO, optionally CAPO with the
inverse RRM and an alpha sweep) -> score the base model and every adapter on the evaluation split
-> per-language analysis, seeds as replicates -> report.html / report.md / results.json.
Every stage writes files and is skipped when its outputs exist for the same inputs. A training and
its scoring form one job; independent jobs run in worker processes (`runner`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xlpo.data.mtpe.build import make_mtpe
from xlpo.errors import UserError
from xlpo.eval.analysis.accuracy import ALL
from xlpo.eval.analysis.driver import analyze
from xlpo.eval.rewards import ScoringRequest, score_run
from xlpo.experiments.capo_mtpe_config import ExperimentConfig, Method, RunPlan, first_runs, run_train_config
from xlpo.experiments.capo_mtpe_report import write_experiment_report
from xlpo.experiments.lr_search import DEFINITIONS, choose_lr, macro, next_rate, validation_entry
from xlpo.experiments.runner import Workers, run_jobs
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


@dataclass(frozen=True)
class Job:
    """One scored run, the unit a worker takes: the base model (`run` None) or a method's run, trained if it is
    not yet, then scored on the validation split (`search`: the lr search) or on the evaluation split."""

    search: bool
    run: RunPlan | None = None
    base_scores: str | None = None  # the base model's scored run on the same split: every adapter's reference

    @property
    def name(self) -> str:
        return "base" if self.run is None else self.run.dir_name if self.search else self.run.name


def score_job(config: ExperimentConfig, data_dir: Path, out: Path, job: Job, log=None) -> Path:
    """Train (or reuse) and score one job's run; its files are the result, so any worker can take any job."""
    log = log or _print
    split, folder = ("validation", "validation") if job.search else (config.eval.split, "scores")
    scorer = Scorer(scoring_settings(config, data_dir / f"{split}.jsonl"), out / folder, log,
                    Path(job.base_scores) if job.base_scores else None)
    if job.run is None:
        return scorer.base()
    return scorer.adapter(job.run, _train_stage(config, job.run, out, log), job.name)


def _print(message: str) -> None:
    print(f"xlpo {message}", flush=True)  # a worker's lines, interleaved with the others' in the log


def _search_stage(config: ExperimentConfig, methods: list[Method], seed: int, base: Path, run, log) -> dict:
    """Train every method without lr_of at every lr of the grid with `seed`, score each on the validation split,
    choose each method's rate; a method whose choice is the top of its grid gets the next rate up, at most
    `lr_search.extend` times. All of a round's runs are independent jobs."""
    plan = config.lr_search
    searched = [m for m in methods if m.lr_of is None]
    grids = {m.name: list(plan.grid) for m in searched}
    entries: dict[str, list] = {m.name: [] for m in searched}
    pending = dict(grids)
    while any(pending.values()):
        jobs = [Job(True, RunPlan(m, seed, lr, lr_in_name=True), str(base)) for m in searched for lr in pending[m.name]]
        for job, scored in zip(jobs, run(jobs)):
            entries[job.run.method.name].append(validation_entry(job.run.lr, job.name,
                                                                 read_json(scored / "accuracy.json")))
        pending = {}
        for m in searched:
            top, chosen = max(grids[m.name]), choose_lr(entries[m.name], plan.definition, plan.average, plan.tolerance)
            grown = len(grids[m.name]) - len(plan.grid)
            pending[m.name] = [next_rate(grids[m.name])] if chosen == top and grown < plan.extend else []
            grids[m.name] += pending[m.name]
            if pending[m.name]:
                log(f"lr {m.name}: the top of the grid ({top:g}) was chosen; trying {pending[m.name][0]:g}")
    search = {}
    for m in searched:
        found = sorted(entries[m.name], key=lambda e: e["lr"])
        chosen = choose_lr(found, plan.definition, plan.average, plan.tolerance)
        log(f"lr {m.name}: {chosen:g} ({plan.average} validation accuracy, "
            + ", ".join(f"lr {e['lr']:g}: {100 * e[plan.average][plan.definition]:.1f}%" for e in found) + ")")
        search[m.name] = {"seed": seed, "definition": plan.definition, "average": plan.average,
                          "tolerance": plan.tolerance, "extended": grids[m.name][len(plan.grid):],
                          "entries": found, "chosen": chosen}
    return search


def run_experiment(config: ExperimentConfig, log=print) -> Path:
    """Run (or continue) the whole study; returns the report directory."""
    out = Path(config.out_dir)
    data_dir = _data_stage(config, out, log)
    methods, seeds, grid = config.all_methods(), config.seed_list(), config.lr_search.grid
    workers = Workers.resolve(config.runner.workers, config.runner.threads, torch.cuda.is_available())
    if workers.processes == 1:  # jobs run in this process
        torch.set_num_threads(workers.threads)
    log(f"runner: {workers.describe()}")

    def run(jobs: list[Job]) -> list[Path]:
        return run_jobs(score_job, jobs, workers, (config, data_dir, out), log)

    # The base model scored once per split first: every adapter's scoring reuses it as its reference.
    bases = run([*([Job(True)] if grid else []), Job(False)])
    search: dict[str, dict] = {}
    base_validation = None
    if grid:
        searched = [m for m in methods if m.lr_of is None]
        log(f"lr search: {len(searched)} methods x {len(grid)} learning rates (seed {seeds[0]}), validation split"
            + "".join(f"; {m.name} uses {m.lr_of}'s rate" for m in methods if m.lr_of))
        accuracy = read_json(bases[0] / "accuracy.json")
        base_validation = {d: macro(accuracy, d) for d in DEFINITIONS} | {
            f"pooled_{d}": accuracy[ALL][d]["acc"] for d in DEFINITIONS}
        search = _search_stage(config, methods, seeds[0], bases[0], run, log)
    lrs = {m.name: search[m.lr_of or m.name]["chosen"] if grid else config.default_lr() for m in methods}

    log(f"runs: {len(methods)} methods x {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
        f"{config.eval.split} split" + "".join(f"; {m.name}: {m.seeds} seeds" for m in methods if m.seeds))
    # Seed by seed: an interrupted study already has whole seeds of every method.
    jobs = [Job(False, RunPlan(m, seed, lrs[m.name], lr_in_name=bool(grid)), str(bases[-1]))
            for seed in seeds for m in methods if seed in config.seeds_of(m)]
    scored = [bases[-1], *run(jobs)]

    log("analyze: per-language accuracy over seeds, reward-difference KDEs, BLEU correlation, curves, report")
    report_dir = out / "report"
    results = analyze([str(p) for p in scored], str(report_dir), baseline=config.analysis.baseline,
                      target=config.analysis.target, data_file=str(data_dir / "train.jsonl"))
    # results.json also records the whole experiment config (seeds included), the data manifest and the lr search.
    results["experiment"] = {"config": config.model_dump(mode="json"),
                             "data_manifest": read_json(data_dir / "manifest.json"),
                             "seeds": seeds, "learning_rates": lrs, "lr_search": search or None,
                             "lr_shared": {m.name: m.lr_of for m in methods if grid and m.lr_of},
                             "base_validation": base_validation, "workers": workers.describe()}
    write_json(report_dir / "results.json", results)
    write_experiment_report(results, report_dir)
    return report_dir
