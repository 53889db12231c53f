"""The ICR loop as stages that read and write files under run_dir/iter-<t>/.

iter-0 (optional): train the English-aligned initial policy (a LoRA adapter) from init.pairs.
iter-t: samples.jsonl -> [translations.jsonl] -> scores.jsonl -> alpha.json -> pairs/<kind>.jsonl
-> train/ (adapter, metrics) -> stats.json. A stage is skipped when its output exists; outputs
are written atomically, and the long stages (sampling, translation, scoring) save a part per chunk
of prompts, so a killed run loses at most one chunk per stage. Models load only when a stage
needs them: re-running a finished run loads nothing and does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from xlpo.data.mtpe.build import make_mtpe
from xlpo.data.records import load_preferences
from xlpo.errors import UserError
from xlpo.fileio import check_output_dir, read_json, read_jsonl, write_json, write_jsonl
from xlpo.icr import response_logps, sample
from xlpo.icr import reward as rw
from xlpo.icr.config import ICRConfig, iteration_train_config
from xlpo.icr.launch import check_launch, launch_training
from xlpo.icr.policies import Models
from xlpo.icr.workers import check_workers, run_workers
from xlpo.icr.prompts import LANGUAGE_NAMES, Prompt, crosslingual_instruction, load_parallel_prompts
from xlpo.icr.rundir import IterationDir, check_run_dir, write_in_parts
from xlpo.icr.stats import identify_languages, iteration_stats, judge_requests, read_judge_labels, run_judge
from xlpo.model_spec import ModelSpec
from xlpo.train.run import TrainRun
from xlpo.train.trainer import train

Log = Callable[[str], None]


@dataclass
class RunResult:
    run_dir: Path
    stats: dict[int, dict] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)  # stages that did work (empty: nothing to do)


# -- the run ---------------------------------------------------------------------------------------
class ICRRun:
    def __init__(self, config: ICRConfig, log: Log = print, judge: Callable[[dict], str] | None = None):
        self.config = config
        self.log = log
        self.judge = judge
        self.run_dir = Path(config.run_dir)
        self.result = RunResult(self.run_dir)
        self.kinds = config.reward.kinds()
        self.names = {**LANGUAGE_NAMES, **config.prompts.language_names}
        self.initial_reference = ModelSpec(config.reference_path())

    # -- bookkeeping ------------------------------------------------------------------------------
    def read_inputs(self) -> dict[str, list[Prompt]]:
        """The prompts, read and checked, and a check of every other input the run will need."""
        cfg = self.config
        check_output_dir(self.run_dir, "run_dir")
        prompts = load_parallel_prompts(cfg.prompts.dir, cfg.prompts.languages, cfg.prompts.limit,
                                        cfg.prompts.language_names)
        if cfg.init.pairs and cfg.init.pairs != "mtpe":
            load_preferences(cfg.init.pairs, cfg.train.get("data", {}).get("columns"))
        return prompts

    def _timed(self, it: IterationDir, stage: str, fn, *args):
        tic = time.perf_counter()
        out = fn(*args)
        seconds = round(time.perf_counter() - tic, 2)
        timings = read_json(it.timings) if it.timings.is_file() else {}
        timings[stage] = round(timings.get(stage, 0.0) + seconds, 2)
        write_json(it.timings, timings)
        self.result.ran.append(f"iter-{it.t}/{stage}")
        self.log(f"  {stage}: done in {seconds:.1f} s")
        return out

    # -- policies ---------------------------------------------------------------------------------
    def initial_policy(self) -> ModelSpec:
        p = self.config.policy
        if self.config.init.pairs:
            spec = TrainRun(IterationDir(self.run_dir, 0).train).policy(p.name_or_path)
            if spec is None:
                raise RuntimeError("iteration 0 has not produced a policy")
            return spec
        return ModelSpec(p.name_or_path, p.adapter)

    def policy_for(self, t: int, previous: ModelSpec) -> ModelSpec:
        """pi^{t-1}, the policy iteration t samples with, scores with and trains further."""
        if t == 1:
            return self.initial_policy()
        spec = TrainRun(IterationDir(self.run_dir, t - 1).train).policy(previous.base)
        if spec is None:
            raise RuntimeError(f"iteration {t - 1} has not produced a policy")
        return spec

    # -- entry point ------------------------------------------------------------------------------
    def run(self) -> RunResult:
        check_launch(self.config)
        check_workers(self.config)
        prompts = self.read_inputs()  # every input checked before the run directory gets a file
        check_run_dir(self.config, self.run_dir)
        if self.config.init.pairs:
            self._init_stage()
        policies = [self.initial_reference]  # policies[t]: the policy iteration t+1 starts from ...
        for t in range(1, self.config.iterations + 1):
            policies.append(self.policy_for(t, policies[-1]))
            # ... and policies[0] = pi_I, the reference pi^0 was aligned against: pi^{t-2} for t = 1.
            self._iteration(t, policies[t], policies[t - 1], prompts)
        if not self.result.ran:
            self.log(f"{self.run_dir}: all {self.config.iterations} iteration(s) finished: nothing to do")
        return self.result

    def _iteration(self, t: int, policy: ModelSpec, before: ModelSpec, prompts: dict[str, list[Prompt]]) -> None:
        """Iteration t with policy pi^{t-1}; `before` is pi^{t-2} (pi_I for t = 1)."""
        it = IterationDir(self.run_dir, t)
        if it.stats.is_file():
            self.result.stats[t] = read_json(it.stats)
            return
        ref = self.config.reference
        reward_ref = self.initial_reference if ref.reward == "initial" else before
        training_ref = self.initial_reference if ref.training == "initial" else policy
        self.log(f"iteration {t}: policy {policy}; reward reference {reward_ref}; training reference {training_ref}")
        it.root.mkdir(parents=True, exist_ok=True)
        manifest = {"iteration": t, "policy": str(policy), "policy_base": policy.base, "policy_adapter": policy.adapter,
                    "reward_reference": str(reward_ref), "training_reference": str(training_ref),
                    "reward_kinds": self.kinds, "trained_on": self.config.reward.select,
                    "languages": self.config.prompts.languages}
        write_json(it.manifest, manifest)
        models = Models(self.config, policy, reward_ref)
        try:
            if not it.samples.is_file():
                self._timed(it, "sample", self._sample_stage, it, models, prompts)
            if "translate" in self.kinds and not it.translations.is_file():
                self._timed(it, "translate", self._translate_stage, it, models, prompts)
            models.release_generator()
            if not it.scores.is_file():
                self._timed(it, "score", self._score_stage, it, models, prompts)
        finally:
            models.close()
        if not it.alpha.is_file():
            self._timed(it, "alpha", self._alpha_stage, it)
        if not all(it.pairs(k).is_file() for k in self.kinds):
            self._timed(it, "pairs", self._pairs_stage, it, prompts)
        if not TrainRun(it.train).finished:
            self._timed(it, "train", self._train_stage, it, policy, training_ref)
        self._timed(it, "stats", self._stats_stage, it)
        self.result.stats[t] = read_json(it.stats)

    # -- iteration 0 --------------------------------------------------------------------------------
    def _init_stage(self) -> None:
        cfg = self.config
        it = IterationDir(self.run_dir, 0)
        if TrainRun(it.train).finished:
            return
        self.log(f"iteration 0: training the English-aligned initial policy on {cfg.policy.name_or_path} "
                 f"from {cfg.init.pairs}")
        data = Path(cfg.init.pairs)
        if cfg.init.pairs == "mtpe":
            data = it.root / "data" / "train.jsonl"
            if not data.is_file():
                make_mtpe(it.root / "data", per_split=cfg.init.mtpe_per_split)
        train_cfg = iteration_train_config(cfg, policy=ModelSpec(cfg.policy.name_or_path), data=data,
                                           output_dir=it.train, iteration_zero=True)
        self._timed(it, "train", self._run_trainer, train_cfg)

    # -- stages ---------------------------------------------------------------------------------
    def _chunks(self, prompts: list[Prompt]) -> list[list[Prompt]]:
        size = self.config.sampling.chunk_size
        return [prompts[i:i + size] for i in range(0, len(prompts), size)]

    def _settings(self):
        return sample.generation_settings(self.config.sampling)

    def _in_parts(self, stage: str, target: Path, it: IterationDir, models: Models, prompts: dict[str, list[Prompt]]) -> None:
        """A stage written in parts: in this process, or over `sampling.processes` worker processes."""
        work, units = self.stage_work(stage, it, models, prompts)
        elsewhere = None
        if self.config.sampling.processes > 1:
            def elsewhere(todo, total):
                run_workers(self.config, it, stage, models.spec, models.reference_spec, todo, total, self.log)
        write_in_parts(it, stage, target, work, units, elsewhere)

    def stage_work(self, stage: str, it: IterationDir, models: Models, prompts: dict[str, list[Prompt]]):
        """(work(lang, chunk index, items) -> rows, {lang: chunks}) of the stage `sample`, `translate` or `score`."""
        return {"sample": self._sample_work, "translate": self._translate_work, "score": self._score_work}[stage](
            it, models, prompts)

    def _sample_stage(self, it: IterationDir, models: Models, prompts: dict[str, list[Prompt]]) -> None:
        self._in_parts("sample", it.samples, it, models, prompts)

    def _translate_stage(self, it: IterationDir, models: Models, prompts: dict[str, list[Prompt]]) -> None:
        self._in_parts("translate", it.translations, it, models, prompts)

    def _score_stage(self, it: IterationDir, models: Models, prompts: dict[str, list[Prompt]]) -> None:
        self._in_parts("score", it.scores, it, models, prompts)

    def _sample_work(self, it: IterationDir, models: Models, prompts: dict[str, list[Prompt]]):
        settings = self._settings()

        def work(lang, k, chunk):
            seed = sample.chunk_seed(settings.seed, it.t, lang, k)
            return sample.sample_responses(models.generator(), models.encoder, chunk, replace(settings, seed=seed))

        return work, {lang: self._chunks(p) for lang, p in prompts.items()}

    def _translate_work(self, it: IterationDir, models: Models, prompts: dict[str, list[Prompt]]):
        samples = read_jsonl(it.samples)
        limit = self.config.reward.translate_max_new_tokens or self.config.sampling.max_new_tokens
        settings = replace(self._settings(), max_new_tokens=limit)
        units = {}
        for lang in self.config.prompts.languages:
            rows = [r for r in samples if r["lang"] == lang]
            size = self.config.sampling.chunk_size
            units[lang] = [rows[i:i + size] for i in range(0, len(rows), size)]
        return lambda lang, k, rows: sample.translate_responses(models.generator(), models.encoder, rows, settings), units

    def _score_work(self, it: IterationDir, models: Models, prompts: dict[str, list[Prompt]]):
        samples = {r["id"]: r for r in read_jsonl(it.samples)}
        translations = {r["id"]: r for r in read_jsonl(it.translations)} if it.translations.is_file() else {}
        rcfg = self.config.reward

        def inputs(prompt: Prompt, kind: str) -> tuple[str, list[str]]:
            row = samples[prompt.id]
            if kind == "crosslingual":
                return crosslingual_instruction(prompt.english, prompt.lang, self.names), row["responses"]
            if kind == "multilingual":
                return prompt.instruction, row["responses"]
            return prompt.english, translations[prompt.id]["translations"]

        def work(lang, k, chunk):
            pad_id, encoder = models.tokenizer.pad_token_id, models.encoder
            out = []
            for prompt in chunk:
                encoded = {}
                for kind in self.kinds:
                    instruction, texts = inputs(prompt, kind)
                    text = encoder.prompt_text(instruction)
                    encoded[kind] = (encoder.prompt_ids(text), [encoder.response_ids(instruction, y, text) for y in texts])
                scores = {}
                for kind, (prompt_ids, responses) in encoded.items():
                    got = response_logps.shared_prompt_logprobs(models.policy, prompt_ids, responses, pad_id, rcfg.batch_size,
                                                 rcfg.logit_chunk_size)
                    scores[kind] = {"policy": got.sums, "tokens": got.tokens}
                with models.reference() as ref:
                    for kind, (prompt_ids, responses) in encoded.items():
                        got = response_logps.shared_prompt_logprobs(ref, prompt_ids, responses, pad_id, rcfg.batch_size,
                                                     rcfg.logit_chunk_size)
                        scores[kind]["reference"] = got.sums
                out.append({"id": prompt.id, "lang": prompt.lang, "instruction_id": prompt.instruction_id,
                            "chars": [len(y) for y in samples[prompt.id]["responses"]], "scores": scores})
            return out

        return work, {lang: self._chunks(p) for lang, p in prompts.items()}

    def _alpha_stage(self, it: IterationDir) -> None:
        rcfg = self.config.reward
        scores = read_jsonl(it.scores)
        grid = rw.alpha_grid(rcfg.alpha_start, rcfg.alpha_stop, rcfg.alpha_step) if rcfg.length_penalty else [0.0]
        out: dict[str, dict] = {}
        for kind in self.kinds:
            out[kind] = {}
            for lang in self.config.prompts.languages:
                rows = [r for r in scores if r["lang"] == lang]
                deltas = [[p - q for p, q in zip(r["scores"][kind]["policy"], r["scores"][kind]["reference"])] for r in rows]
                fit = rw.fit_length_penalty(deltas, [r["chars"] for r in rows], grid)
                out[kind][lang] = {"alpha": fit.alpha, "length_gap": _finite(fit.length_gap),
                                   "length_gap_at_zero": _finite(fit.gap_at_zero), "groups": fit.groups}
                if kind == rcfg.select:
                    self.log(f"  alpha {lang}: {fit.alpha:g} (chosen-rejected length gap {fit.gap_at_zero:+.1f} -> "
                             f"{fit.length_gap:+.1f} chars over {fit.groups} prompts)")
        write_json(it.alpha, {"unit": "nats of log pi - log pi_ref per character (paper's alpha = beta x this)",
                              "grid": {"start": rcfg.alpha_start, "stop": rcfg.alpha_stop, "step": rcfg.alpha_step,
                                       "length_penalty": rcfg.length_penalty}, **out})

    def _pairs_stage(self, it: IterationDir, prompts: dict[str, list[Prompt]]) -> None:
        beta = self.config.reward.beta
        alphas = read_json(it.alpha)
        samples = {r["id"]: r for r in read_jsonl(it.samples)}
        scores = {r["id"]: r for r in read_jsonl(it.scores)}
        for kind in self.kinds:
            rows = []
            for lang, lang_prompts in prompts.items():
                alpha = alphas[kind][lang]["alpha"]
                for prompt in lang_prompts:
                    s = scores[prompt.id]["scores"][kind]
                    chars = scores[prompt.id]["chars"]
                    rewards = rw.implicit_rewards(s["policy"], s["reference"], beta)
                    penalised = rw.penalised_rewards(rewards, chars, alpha, beta)
                    best, worst = rw.select_pair(penalised)
                    responses = samples[prompt.id]["responses"]
                    if responses[best] == responses[worst]:
                        continue  # nothing to learn from (e.g. all N samples identical): counted in stats
                    rows.append({
                        "id": prompt.id, "lang": lang, "instruction_id": prompt.instruction_id,
                        "prompt": prompt.instruction, "chosen": responses[best], "rejected": responses[worst],
                        "reward_kind": kind, "alpha": alpha, "beta": beta,
                        "chosen_index": best, "rejected_index": worst,
                        "chosen_reward": float(rewards[best]), "rejected_reward": float(rewards[worst]),
                        "chosen_penalised": float(penalised[best]), "rejected_penalised": float(penalised[worst]),
                        "chosen_chars": chars[best], "rejected_chars": chars[worst],
                        "chosen_logps": {"policy": s["policy"][best], "reference": s["reference"][best]},
                        "rejected_logps": {"policy": s["policy"][worst], "reference": s["reference"][worst]},
                    })
            write_jsonl(it.pairs(kind), rows)
            if kind == self.config.reward.select:
                self.log(f"  pairs: {len(rows)} ({rw.SYMBOLS[kind]}) -> {it.pairs(kind)}")

    def _train_stage(self, it: IterationDir, policy: ModelSpec, training_ref: ModelSpec) -> None:
        data = it.pairs(self.config.reward.select)
        if not read_jsonl(data):
            raise UserError(f"{data}: no pairs to train on (every prompt's responses were identical); "
                            "raise sampling.temperature or sampling.n")
        train_cfg = iteration_train_config(self.config, policy=policy, data=data, output_dir=it.train,
                                           reference=training_ref)
        self._run_trainer(train_cfg)

    def _run_trainer(self, train_cfg) -> None:
        run = TrainRun(train_cfg.training.output_dir)
        launch = self.config.train_launch
        where = f" ({launch.config} x {launch.num_processes})" if launch.config else ""
        self.log(f"  train: {train_cfg.loss.name} on {train_cfg.data.train} -> {run.dir}{where}")
        if launch.config:
            launch_training(train_cfg, launch, resume=run.resumable)
        else:
            train(train_cfg, resume=run.resumable)

    def _stats_stage(self, it: IterationDir) -> None:
        write_json(it.stats, compute_stats(self.config, it, self.judge))


def compute_stats(config: ICRConfig, it: IterationDir, judge: Callable[[dict], str] | None = None) -> dict:
    """stats.json of one iteration from its files; writes judge requests and, with `judge`, its labels."""
    kinds = config.reward.kinds()
    names = {**LANGUAGE_NAMES, **config.prompts.language_names}
    samples = read_jsonl(it.samples)
    scores = read_jsonl(it.scores)
    pairs = {k: read_jsonl(it.pairs(k)) for k in kinds}
    languages = None
    if config.stats.language_id:
        keys = [f"{r['id']}#{j}" for r in samples for j in range(len(r["responses"]))]
        found = identify_languages([y for r in samples for y in r["responses"]])
        languages = dict(zip(keys, found))
    requests = [r for k in kinds for r in judge_requests(pairs[k], config.stats.judge_pairs, config.stats.seed, names, k)]
    write_jsonl(it.judge / "requests.jsonl", requests)
    labels_path = Path(config.stats.judge_labels.format(iteration=it.t)) if config.stats.judge_labels \
        else it.judge / "labels.jsonl"
    verdicts = None
    if judge is not None:
        verdicts = run_judge(judge, requests)
        write_jsonl(labels_path, [{"id": k, "preferred": v} for k, v in verdicts.items()])
    elif labels_path.is_file():
        verdicts = read_judge_labels(labels_path)
    summary = TrainRun(it.train).summary()
    stats = iteration_stats(samples, scores, read_json(it.alpha), pairs, config.reward.beta, languages, verdicts, summary)
    stats["_run"] = {"iteration": it.t, "trained_on": config.reward.select, "judge_labels": str(labels_path) if verdicts else None,
                     "timings_seconds": read_json(it.timings) if it.timings.is_file() else {}}
    return stats


def _finite(value: float) -> float | None:
    return None if value != value else value  # NaN (no pair at all) is written as null


def run_icr(config: ICRConfig, log: Log = print, judge: Callable[[dict], str] | None = None) -> RunResult:
    """Run (or resume, or extend to more iterations) the ICR loop described by `config`."""
    return ICRRun(config, log, judge).run()


def recompute_stats(run_dir: str | Path, judge: Callable[[dict], str] | None = None, log: Log = print) -> dict[int, dict]:
    """Re-derive stats.json of every finished iteration of a run (e.g. after judge labels arrived)."""
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise UserError(f"{run_dir}: no config.yaml; not an ICR run directory")
    config = ICRConfig.model_validate(yaml.safe_load(saved.read_text(encoding="utf-8")))
    out = {}
    for t in range(1, config.iterations + 1):
        it = IterationDir(run_dir, t)
        if not (it.alpha.is_file() and all(it.pairs(k).is_file() for k in config.reward.kinds())):
            continue
        out[t] = compute_stats(config, it, judge)
        write_json(it.stats, out[t])
        log(f"iteration {t}: {it.stats}")
    return out


__all__ = ["ICRRun", "RunResult", "compute_stats", "recompute_stats", "run_icr"]
