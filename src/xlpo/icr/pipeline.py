"""The ICR loop as stages that read and write files under run_dir/iter-<t>/.

iter-0 (optional): train the English-aligned initial policy (a LoRA adapter) from init.pairs.
iter-t: samples.jsonl -> [translations.jsonl] -> scores.jsonl -> alpha.json -> pairs/<kind>.jsonl
-> train/ (adapter, metrics) -> stats.json. A stage is skipped when its output exists; outputs
are written atomically, and the long stages (sampling, translation, scoring) save a part per chunk
of prompts, so a killed run loses at most one chunk per stage. Models load only when a stage
needs them: re-running a finished run loads nothing and does nothing.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from xlpo.errors import UserError
from xlpo.fileio import read_json, write_json, write_jsonl, write_text
from xlpo.icr import reward as rw
from xlpo.icr.config import ICRConfig, iteration_train_config
from xlpo.icr.prompts import LANGUAGE_NAMES, Prompt, crosslingual_instruction, load_parallel_prompts
from xlpo.versions import library_versions

Log = Callable[[str], None]

# Keys that may change between runs of one run directory: they do not change any result.
_FREE_KEYS = {("run_dir",), ("iterations",), ("stats",), ("sampling", "batch_size"), ("sampling", "backend"),
              ("reward", "batch_size"), ("reward", "logit_chunk_size")}


@dataclass(frozen=True)
class PolicySpec:
    """A model as weights + optional LoRA adapter."""

    base: str
    adapter: str | None = None

    def __str__(self) -> str:
        return self.base + (f" + adapter {self.adapter}" if self.adapter else "")


@dataclass
class RunResult:
    run_dir: Path
    stats: dict[int, dict] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)  # stages that did work (empty: nothing to do)


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class IterationDir:
    def __init__(self, run_dir: Path, t: int):
        self.root = run_dir / f"iter-{t}"
        self.t = t
        self.samples = self.root / "samples.jsonl"
        self.translations = self.root / "translations.jsonl"
        self.scores = self.root / "scores.jsonl"
        self.alpha = self.root / "alpha.json"
        self.pairs_dir = self.root / "pairs"
        self.train = self.root / "train"
        self.train_reference = self.root / "train-reference"
        self.stats = self.root / "stats.json"
        self.judge = self.root / "judge"
        self.manifest = self.root / "manifest.json"
        self.timings = self.root / "timings.json"

    def pairs(self, kind: str) -> Path:
        return self.pairs_dir / f"{kind}.jsonl"

    def parts(self, stage: str) -> Path:
        return self.root / "parts" / stage


def trained_policy(train_dir: Path, base: str) -> PolicySpec | None:
    """The policy a finished training run produced (adapter on `base`, or full weights), else None."""
    if not (train_dir / "train_summary.json").is_file():
        return None
    if (train_dir / "adapter").is_dir():
        return PolicySpec(base, str(train_dir / "adapter"))
    if (train_dir / "model").is_dir():
        return PolicySpec(str(train_dir / "model"))
    return None


# -- models, loaded on first use -----------------------------------------------------------------
class Models:
    """The policy (and, when it is not the policy's base, the reference) for one iteration."""

    def __init__(self, config: ICRConfig, policy: PolicySpec, reference: PolicySpec):
        self.config = config
        self.spec = policy
        self.reference_spec = reference
        self._policy = None
        self._reference = None
        self._tokenizer = None
        self._encoder = None
        self._generator = None

    def _load(self, spec: PolicySpec):
        import torch

        from xlpo.models import load_adapter, load_model

        p = self.config.policy
        model = load_model(spec.base, p.dtype, p.trust_remote_code, p.attn_implementation)
        if spec.adapter:
            model = load_adapter(model, spec.adapter)
        if torch.cuda.is_available():
            model.to("cuda")
        model.eval()
        model.requires_grad_(False)
        return model

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from xlpo.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.spec.base, self.config.policy.trust_remote_code)
        return self._tokenizer

    @property
    def encoder(self):
        if self._encoder is None:
            from xlpo.icr.scoring import ResponseEncoder

            self._encoder = ResponseEncoder(self.tokenizer, self.config.chat_format())
        return self._encoder

    @property
    def policy(self):
        if self._policy is None:
            self._policy = self._load(self.spec)
        return self._policy

    def reference_uses_policy(self) -> bool:
        return self.spec.adapter is not None and self.spec.base == self.reference_spec.base \
            and self.reference_spec.adapter is None

    def reference(self):
        """Context manager yielding the reference model (the policy with its adapter disabled when possible)."""
        from xlpo.models import reference_mode

        if self.reference_uses_policy():
            return reference_mode(self.policy)
        if self._reference is None:
            self._reference = self._load(self.reference_spec)
        return reference_mode(self.policy, self._reference)

    def generator(self):
        if self._generator is None:
            s = self.config.sampling
            from xlpo.generation import choose_backend

            if choose_backend(s.backend) == "vllm":
                from xlpo.generation import make_generator

                self._generator = make_generator(self.spec.base, self.spec.adapter, self.config.policy.dtype, "vllm",
                                                 self.config.policy.trust_remote_code)
            else:
                from xlpo.generation import HFGenerator

                self._generator = HFGenerator(self.policy, self.tokenizer)
        return self._generator

    def release_generator(self) -> None:
        """Free a vLLM engine before scoring loads the HF models (the HF generator is the policy itself)."""
        if self._generator is not None and getattr(self._generator, "backend", "hf") == "vllm":
            self._generator = None
            self.close()

    def close(self) -> None:
        self._policy = self._reference = self._generator = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


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
        self.reference_spec = PolicySpec(config.reference_path())

    # -- bookkeeping ------------------------------------------------------------------------------
    def _check_run_dir(self) -> None:
        saved = self.run_dir / "config.yaml"
        current = self.config.model_dump(mode="json")
        if saved.is_file():
            previous = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
            diff = _first_difference(previous, current)
            if diff is not None:
                raise UserError(f"{self.run_dir}: holds a run made with a different {diff}; use another run_dir "
                                "(or the same settings) so that finished stages are not mixed with new ones")
        text = yaml.safe_dump(current, sort_keys=False, allow_unicode=True)
        if not saved.is_file() or saved.read_text(encoding="utf-8") != text:
            write_text(saved, text)
        if not (self.run_dir / "versions.json").is_file():
            write_json(self.run_dir / "versions.json", library_versions())

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
    def initial_policy(self) -> PolicySpec:
        p = self.config.policy
        if self.config.init.pairs:
            spec = trained_policy(IterationDir(self.run_dir, 0).train, p.name_or_path)
            if spec is None:
                raise RuntimeError("iteration 0 has not produced a policy")
            return spec
        return PolicySpec(p.name_or_path, p.adapter)

    def policy_for(self, t: int, previous: PolicySpec) -> PolicySpec:
        if t == 1:
            return self.initial_policy()
        spec = trained_policy(IterationDir(self.run_dir, t - 1).train, previous.base)
        if spec is None:
            raise RuntimeError(f"iteration {t - 1} has not produced a policy")
        return spec

    # -- entry point ------------------------------------------------------------------------------
    def run(self) -> RunResult:
        self._check_run_dir()
        prompts = load_parallel_prompts(self.config.prompts.dir, self.config.prompts.languages,
                                        self.config.prompts.limit, self.config.prompts.language_names)
        if self.config.init.pairs:
            self._init_stage()
        policy = PolicySpec(self.config.policy.name_or_path)
        for t in range(1, self.config.iterations + 1):
            policy = self.policy_for(t, policy)
            self._iteration(t, policy, prompts)
        if not self.result.ran:
            self.log(f"{self.run_dir}: all {self.config.iterations} iteration(s) finished: nothing to do")
        return self.result

    def _iteration(self, t: int, policy: PolicySpec, prompts: dict[str, list[Prompt]]) -> None:
        it = IterationDir(self.run_dir, t)
        if it.stats.is_file():
            self.result.stats[t] = read_json(it.stats)
            return
        self.log(f"iteration {t}: policy {policy}; reward reference {self.reference_spec}")
        it.root.mkdir(parents=True, exist_ok=True)
        training_ref = self.reference_spec if self.config.reference.training == "initial" else policy
        manifest = {"iteration": t, "policy": str(policy), "policy_base": policy.base, "policy_adapter": policy.adapter,
                    "reward_reference": str(self.reference_spec), "training_reference": str(training_ref),
                    "reward_kinds": self.kinds, "trained_on": self.config.reward.select,
                    "languages": self.config.prompts.languages}
        write_json(it.manifest, manifest)
        models = Models(self.config, policy, self.reference_spec)
        try:
            if not it.samples.is_file():
                self._timed(it, "sample", self._sample_stage, it, models, prompts)
            if "translate" in self.kinds and not it.translations.is_file():
                self._timed(it, "translate", self._translate_stage, it, models)
            models.release_generator()
            if not it.scores.is_file():
                self._timed(it, "score", self._score_stage, it, models, prompts)
        finally:
            models.close()
        if not it.alpha.is_file():
            self._timed(it, "alpha", self._alpha_stage, it)
        if not all(it.pairs(k).is_file() for k in self.kinds):
            self._timed(it, "pairs", self._pairs_stage, it, prompts)
        if trained_policy(it.train, policy.base) is None:
            self._timed(it, "train", self._train_stage, it, policy, training_ref)
        self._timed(it, "stats", self._stats_stage, it)
        self.result.stats[t] = read_json(it.stats)

    # -- iteration 0 --------------------------------------------------------------------------------
    def _init_stage(self) -> None:
        cfg = self.config
        it = IterationDir(self.run_dir, 0)
        if trained_policy(it.train, cfg.policy.name_or_path) is not None:
            return
        self.log(f"iteration 0: training the English-aligned initial policy on {cfg.policy.name_or_path} "
                 f"from {cfg.init.pairs}")
        data = Path(cfg.init.pairs)
        if cfg.init.pairs == "mtpe":
            data = it.root / "data" / "train.jsonl"
            if not data.is_file():
                from xlpo.data.mtpe import make_mtpe

                make_mtpe(it.root / "data", per_split=cfg.init.mtpe_per_split)
        train_cfg = iteration_train_config(cfg, base=cfg.policy.name_or_path, adapter=None, data=data,
                                           output_dir=it.train, extra=cfg.init.train, prefix="init.train: ")
        self._timed(it, "train", self._run_trainer, train_cfg, None)

    # -- stages ---------------------------------------------------------------------------------
    def _chunks(self, prompts: list[Prompt]) -> list[list[Prompt]]:
        size = self.config.sampling.chunk_size
        return [prompts[i:i + size] for i in range(0, len(prompts), size)]

    def _parts(self, it: IterationDir, stage: str, target: Path, work: Callable[[str, int, list], list[dict]],
               units: dict[str, list[list]]) -> None:
        """Run `work(lang, chunk index, items)` for every unit whose part file is missing, then join them."""
        parts_dir = it.parts(stage)
        total = sum(len(chunks) for chunks in units.values())
        done = 0
        for lang, chunks in units.items():
            for k, items in enumerate(chunks):
                part = parts_dir / f"{lang}-{k:05d}.jsonl"
                done += 1
                if part.is_file():
                    continue
                tic = time.perf_counter()
                write_jsonl(part, work(lang, k, items))
                self.log(f"  {stage} {lang}: part {done}/{total} ({len(items)} prompts, {time.perf_counter() - tic:.1f} s)")
        rows = [row for lang, chunks in units.items() for k in range(len(chunks))
                for row in _read_jsonl(parts_dir / f"{lang}-{k:05d}.jsonl")]
        write_jsonl(target, rows)
        shutil.rmtree(parts_dir, ignore_errors=True)
        if parts_dir.parent.is_dir() and not any(parts_dir.parent.iterdir()):
            parts_dir.parent.rmdir()

    def _settings(self):
        from xlpo.generation import GenerationSettings

        s = self.config.sampling
        return GenerationSettings(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, n=s.n,
                                  seed=s.seed, batch_size=s.batch_size, chat=False)

    def _sample_stage(self, it: IterationDir, models: Models, prompts: dict[str, list[Prompt]]) -> None:
        from dataclasses import replace

        from xlpo.icr.sample import chunk_seed, sample_responses

        settings = self._settings()

        def work(lang, k, chunk):
            seed = chunk_seed(settings.seed, it.t, lang, k)
            return sample_responses(models.generator(), models.encoder, chunk, replace(settings, seed=seed))

        self._parts(it, "sample", it.samples, work, {lang: self._chunks(p) for lang, p in prompts.items()})

    def _translate_stage(self, it: IterationDir, models: Models) -> None:
        from dataclasses import replace

        from xlpo.icr.sample import translate_responses

        samples = _read_jsonl(it.samples)
        limit = self.config.reward.translate_max_new_tokens or self.config.sampling.max_new_tokens
        settings = replace(self._settings(), max_new_tokens=limit)
        units = {}
        for lang in self.config.prompts.languages:
            rows = [r for r in samples if r["lang"] == lang]
            size = self.config.sampling.chunk_size
            units[lang] = [rows[i:i + size] for i in range(0, len(rows), size)]
        self._parts(it, "translate", it.translations,
                    lambda lang, k, rows: translate_responses(models.generator(), models.encoder, rows, settings), units)

    def _score_stage(self, it: IterationDir, models: Models, prompts: dict[str, list[Prompt]]) -> None:
        from xlpo.icr.scoring import shared_prompt_logprobs

        samples = {r["id"]: r for r in _read_jsonl(it.samples)}
        translations = {r["id"]: r for r in _read_jsonl(it.translations)} if it.translations.is_file() else {}
        rcfg = self.config.reward
        pad_id = models.tokenizer.pad_token_id
        encoder = models.encoder

        def inputs(prompt: Prompt, kind: str) -> tuple[str, list[str]]:
            row = samples[prompt.id]
            if kind == "crosslingual":
                return crosslingual_instruction(prompt.english, prompt.lang, self.names), row["responses"]
            if kind == "multilingual":
                return prompt.instruction, row["responses"]
            return prompt.english, translations[prompt.id]["translations"]

        def work(lang, k, chunk):
            out = []
            for prompt in chunk:
                encoded = {}
                for kind in self.kinds:
                    instruction, texts = inputs(prompt, kind)
                    text = encoder.prompt_text(instruction)
                    encoded[kind] = (encoder.prompt_ids(text), [encoder.response_ids(instruction, y, text) for y in texts])
                scores = {}
                for kind, (prompt_ids, responses) in encoded.items():
                    got = shared_prompt_logprobs(models.policy, prompt_ids, responses, pad_id, rcfg.batch_size,
                                                 rcfg.logit_chunk_size)
                    scores[kind] = {"policy": got.sums, "tokens": got.tokens}
                with models.reference() as ref:
                    for kind, (prompt_ids, responses) in encoded.items():
                        got = shared_prompt_logprobs(ref, prompt_ids, responses, pad_id, rcfg.batch_size,
                                                     rcfg.logit_chunk_size)
                        scores[kind]["reference"] = got.sums
                out.append({"id": prompt.id, "lang": prompt.lang, "instruction_id": prompt.instruction_id,
                            "chars": [len(y) for y in samples[prompt.id]["responses"]], "scores": scores})
            return out

        self._parts(it, "score", it.scores, work, {lang: self._chunks(p) for lang, p in prompts.items()})

    def _alpha_stage(self, it: IterationDir) -> None:
        rcfg = self.config.reward
        scores = _read_jsonl(it.scores)
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
        samples = {r["id"]: r for r in _read_jsonl(it.samples)}
        scores = {r["id"]: r for r in _read_jsonl(it.scores)}
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

    def _train_stage(self, it: IterationDir, policy: PolicySpec, training_ref: PolicySpec) -> None:
        data = it.pairs(self.config.reward.select)
        if not _read_jsonl(data):
            raise UserError(f"{data}: no pairs to train on (every prompt's responses were identical); "
                            "raise sampling.temperature or sampling.n")
        inject = training_ref != PolicySpec(policy.base)
        train_cfg = iteration_train_config(self.config, base=policy.base, adapter=policy.adapter, data=data,
                                           output_dir=it.train, reference_cache=it.train_reference if inject else None)
        from xlpo.losses import get_loss

        spec = get_loss(train_cfg.loss.name)
        if not spec.needs_reference:
            inject = False
        if inject:
            self._precompute_training_reference(train_cfg, training_ref)
        self._run_trainer(train_cfg, it.train_reference if inject else None)

    def _run_trainer(self, train_cfg, injected: Path | None) -> None:
        from xlpo.train.trainer import train

        out = Path(train_cfg.training.output_dir)
        self.log(f"  train: {train_cfg.loss.name} on {train_cfg.data.train} -> {out}")
        result = train(train_cfg, resume=(out / "checkpoints").is_dir())
        if injected is not None and not str(result.summary.get("reference", "")).startswith(f"cache {injected}"):
            raise RuntimeError(f"the trainer did not use the precomputed training reference in {injected} "
                               f"(it reports: {result.summary.get('reference')}); its cache key recipe changed")

    def _precompute_training_reference(self, train_cfg, training_ref: PolicySpec) -> None:
        """Reference log-probs of the training pairs under `training_ref`, stored where the trainer looks
        for its precomputed reference: the trainer itself only knows 'the policy's base weights'."""
        import torch

        from xlpo.data.tokenize import fingerprint
        from xlpo.models import load_adapter, load_model, load_tokenizer
        from xlpo.train import reference as ref_cache
        from xlpo.train.trainer import prepare_pairs

        m = train_cfg.model
        cache_dir = Path(train_cfg.reference.cache_dir)
        tokenizer = load_tokenizer(m.name_or_path, m.trust_remote_code)
        pairs, _, _ = prepare_pairs(train_cfg, tokenizer)
        base = load_model(m.name_or_path, m.dtype, m.trust_remote_code, m.attn_implementation)
        key = ref_cache.cache_key(ref_cache.model_fingerprint(base, m.name_or_path), fingerprint(pairs), base.dtype)
        if ref_cache.load_cached(cache_dir, key, len(pairs)) is not None:
            return
        self.log(f"  train reference: log-probs of {len(pairs)} pairs under {training_ref}")
        model = base if training_ref.base == m.name_or_path else load_model(
            training_ref.base, m.dtype, m.trust_remote_code, m.attn_implementation)
        if training_ref.adapter:
            model = load_adapter(model, training_ref.adapter)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        values = ref_cache.compute_reference_logps(model, pairs, tokenizer.pad_token_id,
                                                   max(2, 2 * train_cfg.training.batch_size), device,
                                                   train_cfg.training.logit_chunk_size,
                                                   share_prompt=train_cfg.training.share_prompt)
        ref_cache.save_cached(cache_dir, key, values, {"model": str(training_ref), "data": fingerprint(pairs)})
        del model, base
        gc.collect()

    def _stats_stage(self, it: IterationDir) -> None:
        write_json(it.stats, compute_stats(self.config, it, self.judge))


def compute_stats(config: ICRConfig, it: IterationDir, judge: Callable[[dict], str] | None = None) -> dict:
    """stats.json of one iteration from its files; writes judge requests and, with `judge`, its labels."""
    from xlpo.icr.stats import identify_languages, iteration_stats, judge_requests, read_judge_labels, run_judge

    kinds = config.reward.kinds()
    names = {**LANGUAGE_NAMES, **config.prompts.language_names}
    samples = _read_jsonl(it.samples)
    scores = _read_jsonl(it.scores)
    pairs = {k: _read_jsonl(it.pairs(k)) for k in kinds}
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
    summary_path = it.train / "train_summary.json"
    summary = read_json(summary_path) if summary_path.is_file() else None
    stats = iteration_stats(samples, scores, read_json(it.alpha), pairs, config.reward.beta, languages, verdicts, summary)
    stats["_run"] = {"iteration": it.t, "trained_on": config.reward.select, "judge_labels": str(labels_path) if verdicts else None,
                     "timings_seconds": read_json(it.timings) if it.timings.is_file() else {}}
    return stats


def _finite(value: float) -> float | None:
    return None if value != value else value  # NaN (no pair at all) is written as null


def _first_difference(old: dict, new: dict, prefix: tuple = ()) -> str | None:
    for key in sorted(set(old) | set(new)):
        path = (*prefix, key)
        if any(path[:len(free)] == free for free in _FREE_KEYS):
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, path)
            if found:
                return found
        elif a != b:
            return f"{'.'.join(path)} ({a!r} there, {b!r} now)"
    return None


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


__all__ = ["ICRRun", "IterationDir", "Models", "PolicySpec", "RunResult", "compute_stats", "recompute_stats",
           "run_icr", "trained_policy"]
