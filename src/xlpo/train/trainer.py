"""The training loop: any registered loss, LoRA or full fine-tuning, one process or many.

The loop never looks at the loss name: it asks the loss spec what inputs it needs (reference
log-probs, mismatched pairs), feeds it per-pair log-probs, and averages what comes back.
Runs are seeded, log every step, checkpoint atomically and resume to the same result.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from accelerate.utils import gather_object, set_seed
from transformers import get_scheduler

from xlpo.data.batching import (FILLER, collate_mismatched, collate_pairs, mismatched_partners, plan_epoch,
                                 prompt_sharing_blocker)
from xlpo.data.records import load_preferences
from xlpo.data.tokenize import PairTokenizer, TokenizedPair, fingerprint
from xlpo.errors import TrainingError, UserError
from xlpo.fileio import atomic_dir, check_output_dir, write_json, write_jsonl, write_text
from xlpo.logprobs import completion_logprobs, sequence_logprobs
from xlpo.losses import SequenceLogps, get_loss, preference_metrics
from xlpo.model_card import write_card
from xlpo.models import (apply_lora, disable_dropout, is_peft, load_adapter, load_tokenizer, release_memory,
                         training_load_dtype)
from xlpo.progress import Progress
from xlpo.train import checkpoint as ckpt
from xlpo.train import distributed as dist
from xlpo.train.reference import build_reference, model_fingerprint, precomputed_logps
from xlpo.train.config import TrainConfig
from xlpo.train.metrics import MetricsWriter, StepMetrics, step_info, summarize, tracker_names, tracker_project
from xlpo.train.run import TrainRun
from xlpo.versions import library_versions


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    final_metrics: dict
    summary: dict


def _optimizer(config: TrainConfig, params, device_type: str):
    choice = config.training.optimizer
    if choice in ("auto", "paged_adamw_8bit") and device_type == "cuda":
        try:
            import bitsandbytes as bnb

            return bnb.optim.PagedAdamW8bit(params, lr=config.training.learning_rate,
                                           weight_decay=config.training.weight_decay)
        except ImportError:
            if choice == "paged_adamw_8bit":
                raise UserError("training.optimizer: paged_adamw_8bit needs bitsandbytes (pip install bitsandbytes)") from None
    elif choice == "paged_adamw_8bit":
        raise UserError("training.optimizer: paged_adamw_8bit needs a CUDA device")
    return torch.optim.AdamW(params, lr=config.training.learning_rate, weight_decay=config.training.weight_decay)


def _scheduler(config: TrainConfig, optimizer, total_steps: int):
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[config.training.lr_scheduler]
    warmup = math.ceil(config.training.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def prepare_pairs(config: TrainConfig, tokenizer) -> tuple[list[TokenizedPair], dict, list[dict]]:
    if not config.data.train:
        raise UserError("data.train: no training data given (a .jsonl/.parquet file, dataset directory or Hub id)")
    records = load_preferences(config.data.train, config.data.columns, config.data.split)
    if config.data.limit:
        records = records[:config.data.limit]
    encoder = PairTokenizer(tokenizer, config.data.chat_format, config.data.max_length,
                            config.data.max_prompt_length, config.data.truncation)
    pairs, report = encoder.encode_all(records)
    if not pairs:
        raise UserError(f"data.train: all {report.total} pairs were skipped ({report.summary()['skipped_by_reason']}); "
                        "raise data.max_length / data.max_prompt_length")
    return pairs, {**report.summary(), "settings": encoder.settings()}, report.skipped


class Trainer:
    """Holds the state of one run; `run()` trains from scratch or from the latest checkpoint."""

    def __init__(self, config: TrainConfig, accelerator=None):
        self.config = config
        self.owns_accelerator = accelerator is None
        self.acc = accelerator or dist.make_accelerator(
            config.model.dtype, log_with=tracker_names(config.training) or None,
            project_config=tracker_project(config.training.output_dir))
        dist.check_precision(self.acc, config.model.dtype)
        self.out = Path(config.training.output_dir)
        self.train_run = TrainRun(self.out)
        self.spec = get_loss(config.loss.name)
        self.loss_params = config.loss.params()

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, acc = self.config, self.acc
        check_output_dir(self.out, "training.output_dir")
        if self.spec.needs_reference and cfg.reference.precompute and cfg.reference.cache_dir:
            check_output_dir(cfg.reference.cache_dir, "reference.cache_dir")
        self.tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
        self.pad_id = self.tokenizer.pad_token_id
        self.pairs, self.data_summary, self.skipped = prepare_pairs(cfg, self.tokenizer)
        self.data_fp = fingerprint(self.pairs)
        self.languages = sorted({p.lang for p in self.pairs if p.lang})
        full_finetuning = not (cfg.model.adapter or cfg.lora.enabled)
        dist.configure_fsdp(acc, cfg.training.reduce_dtype)
        model = self._load(cfg.model.name_or_path, training_load_dtype(cfg.model.dtype, full_finetuning))
        if cfg.training.disable_dropout:
            disable_dropout(model)
        self._choose_layout(model)
        base_fp = model_fingerprint(model, cfg.model.name_or_path) if self.spec.needs_reference else ""
        model = self._trainable(model)
        self._build_reference(model, base_fp)
        model = dist.shard_loaded(acc, model)  # FSDP2: sharded now, so that the optimizer gets the shards
        if cfg.training.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if is_peft(model):
                model.enable_input_require_grads()
        model.train()
        optimizer = _optimizer(cfg, [p for p in model.parameters() if p.requires_grad], acc.device.type)
        t = cfg.training
        self.steps_per_epoch = len(self._plan(0))
        self.total_steps = t.max_steps or self.steps_per_epoch * t.epochs
        self.scheduler = _scheduler(cfg, optimizer, self.total_steps)
        dist.configure_deepspeed(acc, t.batch_size, t.grad_accum, t.max_grad_norm)
        masters = dist.starting_fp32_values(acc, model, cfg.model.name_or_path)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        dist.load_fp32_masters(acc, self.model, masters)
        # FSDP2 replaces the parameters with sharded ones: clip the ones it trains.
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.backward_kwargs = dist.backward_kwargs(acc)
        self._unregister = ckpt.register(acc, self.scheduler)
        self._ready_reference()

    def _load(self, name_or_path: str, dtype: str):
        """A model (the policy or a reference) loaded as the backend needs: never whole where it shards weights."""
        m = self.config.model
        return dist.load_weights(self.acc, name_or_path, dtype, m.trust_remote_code, m.attn_implementation)

    def _trainable(self, model):
        """The model with what trains: the starting adapter, a fresh LoRA adapter, or all weights."""
        cfg = self.config
        if cfg.model.adapter:
            return load_adapter(model, cfg.model.adapter, trainable=True)
        if cfg.lora.enabled:
            set_seed(cfg.training.seed)  # right before the draw: loading a model may have used the RNG
            return apply_lora(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules)
        return model

    def _build_reference(self, model, base_fp: str) -> None:
        """Load or attach the reference (before `prepare`, beside the policy it may share weights with)."""
        self.reference, self.reference_logps, self.reference_source = None, None, "none"
        if not self.spec.needs_reference:
            return
        # KTO's mismatched pairs are scored live even when chosen and rejected are precomputed.
        self.live_reference = not self.config.reference.precompute or self.spec.needs_mismatched
        self.reference = build_reference(self.config, model, base_fp, self.live_reference, self._load)
        self.reference_source = "live"

    def _ready_reference(self) -> None:
        """After `prepare`: precompute the reference log-probs when asked, then keep the reference only if a
        step runs it, prepared as the policy is (ZeRO-3 and FSDP2 compute only through their engine)."""
        if self.reference is None:
            return
        policy = self.acc.unwrap_model(self.model)
        if self.config.reference.precompute:
            self.reference_logps, self.reference_source = precomputed_logps(
                self.reference, policy, self.config, self.pairs, self.data_fp, self.pad_id, self.acc,
                self.share_prompt)
        if self.live_reference:
            self.reference.prepare(self.acc, policy)
        else:
            self.reference.release(policy, sharded=dist.shards_weights(self.acc))

    def _choose_layout(self, model) -> None:
        """Share each pair's prompt in one row when asked for and the model's attention allows it."""
        reason = prompt_sharing_blocker(model, self.pairs) if self.config.training.share_prompt else None
        self.share_prompt = self.config.training.share_prompt and reason is None
        self.layout = "shared prompt" if self.share_prompt else "two rows" + (f" ({reason})" if reason else "")
        if reason and self.acc.is_main_process:
            print(f"xlpo: chosen and rejected get a row each: {reason}")

    def _plan(self, epoch: int):
        t = self.config.training
        return plan_epoch([p.length for p in self.pairs], t.batch_size, t.grad_accum, self.acc.num_processes,
                          t.seed, epoch, t.group_by_length)

    # -- one step ---------------------------------------------------------------------------
    def _reference_for(self, batch, size: int):
        if self.reference_logps is not None:
            values = self.reference_logps[batch.indices.cpu()].to(self.acc.device)
            return values[:, 0], values[:, 1]
        with self.reference(self.acc.unwrap_model(self.model)) as ref_model:
            logps = sequence_logprobs(ref_model, batch.rows, self.config.training.logit_chunk_size)
        return logps.sum[:size], logps.sum[size:]

    def _mismatched(self, plan) -> tuple[torch.Tensor, torch.Tensor]:
        """KTO's KL inputs for the whole step: policy and reference log-probs (no grad) of every
        mismatched pair (prompt_i, chosen of i's partner) of the global batch, whichever process and
        accumulation step holds example i, so the batch estimate is the same for any layout."""
        acc, chunk = self.acc, self.config.training.logit_chunk_size
        order = plan.global_order()
        position = {i: j for j, i in enumerate(order)}
        partners = mismatched_partners(order, len(self.pairs))
        values = torch.zeros(len(order), 2, device=acc.device)
        unwrapped = acc.unwrap_model(self.model)
        # One pass per micro-batch, as many on every process (ZeRO-3 and FSDP2 gather weights in each):
        # a micro-batch of fillers alone scores a stand-in whose values are dropped.
        for slots in plan.micro_batches[acc.process_index]:
            idx = [i for i in slots if i != FILLER]
            kept = len(idx)
            ids, attention, completion = (t.to(acc.device) for t in collate_mismatched(
                self.pairs, idx or order[:1], self.pad_id, partners))
            rows = torch.tensor([position[i] for i in idx], dtype=torch.long, device=acc.device)
            with torch.no_grad():
                policy = completion_logprobs(unwrapped, ids, attention, completion, chunk).sum.float()
            with self.reference(unwrapped) as ref_model:
                reference = completion_logprobs(ref_model, ids, attention, completion, chunk).sum.float()
            values[rows, 0], values[rows, 1] = policy[:kept], reference[:kept]
        values = acc.reduce(values, reduction="sum") if acc.num_processes > 1 else values
        return values[:, 0], values[:, 1]

    def _train_step(self, plan) -> tuple[dict, int]:
        acc, cfg = self.acc, self.config
        my_batches = plan.micro_batches[acc.process_index]
        weight = acc.num_processes / plan.real_examples  # DDP averages over processes: this gives the global mean
        metrics = None
        tokens = 0
        kl_policy, kl_ref = self._mismatched(plan) if self.spec.needs_mismatched else (None, None)
        for a, slots in enumerate(my_batches):
            batch = collate_pairs(self.pairs, slots, self.pad_id, weight, share_prompt=self.share_prompt).to(acc.device)
            size = batch.size
            last = a == len(my_batches) - 1
            acc.sync_gradients = last  # DeepSpeed steps its optimizer inside the backward of the last micro-batch
            sync = contextlib.nullcontext() if last else acc.no_sync(self.model)
            with sync:
                policy = sequence_logprobs(self.model, batch.rows, cfg.training.logit_chunk_size)
                ref_chosen = ref_rejected = None
                if self.spec.needs_reference:
                    ref_chosen, ref_rejected = self._reference_for(batch, size)
                logps = SequenceLogps(chosen=policy.sum[:size], rejected=policy.sum[size:],
                                      chosen_tokens=policy.tokens[:size], rejected_tokens=policy.tokens[size:],
                                      ref_chosen=ref_chosen, ref_rejected=ref_rejected, kl_policy=kl_policy, kl_ref=kl_ref)
                out = self.spec.fn(logps, **self.loss_params)
                self._stop_if_not_finite(out.losses, batch)
                acc.backward((out.losses * batch.weights).sum(), **self.backward_kwargs)
            per_pair = preference_metrics(logps, out)
            if metrics is None:
                metrics = StepMetrics(sorted(per_pair), self.languages)
            metrics.add(per_pair, batch.langs, batch.weights)
            tokens += int((batch.sequence_tokens * (batch.weights > 0)).sum())
        return metrics, tokens

    def _stop_if_not_finite(self, losses: torch.Tensor, batch) -> None:
        bad = (~torch.isfinite(losses)) & (batch.weights > 0)
        count = self.acc.reduce(bad.sum().to(self.acc.device), reduction="sum")
        if int(count) == 0:
            return
        ids = gather_object([batch.ids[i] for i in torch.nonzero(bad).flatten().tolist()])
        raise TrainingError(f"non-finite loss at step {self.step + 1} for example id(s): {', '.join(map(str, ids))}; "
                            "stopped before updating the weights")

    # -- the run ----------------------------------------------------------------------------
    def _expected_state(self) -> dict:
        resumable = self.config.model_dump(mode="json")
        resumable["training"] = {k: v for k, v in resumable["training"].items()
                                 if k not in ("save_steps", "keep_checkpoints", "progress", "logging_steps", "report_to")}
        return {"config": resumable, "data_fingerprint": self.data_fp, "num_processes": self.acc.num_processes}

    def run(self, resume: bool = False) -> TrainResult:
        # Checkpoints are written by all processes and renamed by the first: one directory for all nodes.
        dist.check_shared_directory(self.acc, self.out, "training.output_dir")
        self.setup()
        acc, cfg = self.acc, self.config
        set_seed(cfg.training.seed)  # the dropout stream starts here (a resumed run restores its own)
        start = 0
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
        writer = MetricsWriter(self.out, acc, cfg.model_dump(mode="json")) if acc.is_main_process else None
        if resume:
            latest = ckpt.latest_checkpoint(self.out)
            if latest is None:
                if acc.is_main_process:
                    print(f"xlpo: --resume: no checkpoint in {self.out}/checkpoints, starting from step 0")
            else:
                state = ckpt.load_checkpoint(acc, latest, self._expected_state())
                start = state["step"]
        elif self.train_run.metrics_file.exists() and acc.is_main_process:
            self.train_run.metrics_file.unlink()
        if writer is not None:
            writer.truncate_after(start)
        self._write_run_files()
        progress = Progress(f"train {self.out.name}", self.total_steps, "steps", start, enabled=acc.is_main_process,
                            bar=cfg.training.progress)
        last_metrics: dict = {}
        started = time.perf_counter()
        plans_epoch, plans = -1, []
        with progress:
            for self.step in range(start, self.total_steps):
                epoch, within = divmod(self.step, self.steps_per_epoch)
                if epoch != plans_epoch:
                    plans, plans_epoch = self._plan(epoch), epoch
                tic = time.perf_counter()
                step_metrics, tokens = self._train_step(plans[within])
                grad_norm = self._clip()
                lr = self.scheduler.get_last_lr()[0]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                per_pair, langs, mask = (acc.gather(t.to(acc.device)).cpu() if acc.num_processes > 1 else t
                                         for t in step_metrics.per_pair())
                values = per_pair.T
                tokens = int(acc.reduce(torch.tensor(tokens, device=acc.device), reduction="sum"))
                seconds = time.perf_counter() - tic  # one reading for both, so tokens = rate x seconds
                record = {"step": self.step + 1, "epoch": round(epoch + (within + 1) / self.steps_per_epoch, 4),
                          **summarize(step_metrics.names, self.languages, values, langs, mask),
                          "grad_norm": grad_norm, "learning_rate": lr,
                          "tokens_per_second": tokens / max(seconds, 1e-9), "step_seconds": seconds}
                last_metrics = record
                if writer is not None and ((self.step + 1) % cfg.training.logging_steps == 0 or self.step + 1 == self.total_steps):
                    writer.write(record)
                progress.advance(1, step_info(record))
                if cfg.training.save_steps and (self.step + 1) % cfg.training.save_steps == 0 and self.step + 1 < self.total_steps:
                    ckpt.save_checkpoint(acc, self.out, self.step + 1, {"step": self.step + 1, **self._expected_state()},
                                         cfg.training.keep_checkpoints)
        summary = self._finish(last_metrics, time.perf_counter() - started, start)
        if self.owns_accelerator:
            self.acc.end_training()  # closes the trackers; tears a process group down cleanly
        return TrainResult(self.out, self.total_steps, last_metrics, summary)

    def release(self) -> None:
        """Drop every reference to the model, its reference and the optimizer (the accelerator's too),
        and free their memory: whoever runs next (ICR's vLLM sampling) gets it back."""
        self._unregister()
        self.acc.free_memory()
        self.model = self.optimizer = self.scheduler = self.reference = self.reference_logps = self.trainable = None
        release_memory()

    def _clip(self) -> float:
        """Clip to training.max_grad_norm (none: an infinite norm) and return the norm before clipping."""
        max_norm = self.config.training.max_grad_norm or math.inf
        return float(self.acc.clip_grad_norm_(self.trainable, max_norm))

    def _write_run_files(self) -> None:
        if not self.acc.is_main_process:
            return
        files = self.train_run
        write_text(files.config_file, yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False))
        write_json(files.versions_file, library_versions())
        write_jsonl(files.skipped_file, self.skipped)

    def _finish(self, last_metrics: dict, seconds: float, start: int) -> dict:
        acc = self.acc
        acc.wait_for_everyone()
        summary = {
            "loss": self.config.loss.name, "loss_params": self.loss_params, "steps": self.total_steps,
            "resumed_from_step": start, "pairs": len(self.pairs), "languages": self.languages,
            "pairs_by_language": dict(sorted(Counter(p.lang or "unknown" for p in self.pairs).items())),
            "data": self.data_summary, "data_fingerprint": self.data_fp,
            "reference": self.reference_source,
            "reference_model": self.reference.described if self.reference is not None else None,
            "layout": self.layout, "precision": dist.precision_summary(acc, self.trainable),
            "num_processes": acc.num_processes, "seconds": round(seconds, 2), "final_metrics": last_metrics,
        }
        model = acc.unwrap_model(self.model)
        state = dist.gather_state_dict(acc, self.model, trainable_only=is_peft(model))
        if acc.is_main_process:
            folder = self.train_run.saved_as(lora=is_peft(model))
            # Only the trained adapter: a reference adapter loaded beside it is not part of the result.
            only_trained = {"selected_adapters": ["default"]} if is_peft(model) else {}
            with atomic_dir(folder) as tmp:
                model.save_pretrained(tmp, state_dict=state, safe_serialization=True, **only_trained)
                self.tokenizer.save_pretrained(tmp)
                write_card(tmp, self.config.model_dump(mode="json"), summary, library_versions())
            summary["saved"] = str(folder)
            write_json(self.train_run.summary_file, summary)
        acc.wait_for_everyone()
        return summary


def train(config: TrainConfig, resume: bool = False, accelerator=None) -> TrainResult:
    """Train with `config`; with `resume`, continue from the latest checkpoint in its output_dir.

    When it returns, nothing holds the trained model in memory any more (the result is on disk).
    """
    trainer = Trainer(config, accelerator)
    result = trainer.run(resume=resume)
    trainer.release()
    return result
