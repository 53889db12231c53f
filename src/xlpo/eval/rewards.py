"""`xlpo eval rewards`: score a model (+ adapter, + reference) on a preference file, per pair.

Writes a *scored run*: `scores.jsonl` (one row per pair: summed log-probs, token and character
counts of chosen and rejected, reference log-probs when a reference is used), `scoring.json`
(what was scored) and `accuracy.json` (per-language accuracy by each definition, with 95%
bootstrap intervals). A run whose inputs are unchanged is not scored again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xlpo.data.records import PreferenceRecord, load_preferences
from xlpo.data.tokenize import PairTokenizer, fingerprint
from xlpo.errors import UserError
from xlpo.eval.analysis.accuracy import accuracy_table
from xlpo.fileio import read_json, read_jsonl, write_json, write_jsonl
from xlpo.model_card import record_evaluation
from xlpo.models import adapter_hash, load_policy, load_tokenizer, reference_mode
from xlpo.pair_logps import score_pairs
from xlpo.progress import Progress
from xlpo.train.run import TrainRun
from xlpo.versions import library_versions


@dataclass
class ScoringRequest:
    data: str
    out_dir: str
    model: str = "embedded"
    adapter: str | None = None
    reference: bool = True  # with an adapter: also score the base (adapter disabled) as the reference
    name: str | None = None  # label in reports; default: the adapter's run name or "base"
    method: str | None = None  # the loss the adapter was trained with (from its run, if found)
    dtype: str = "auto"
    chat_format: str = "tokenizer"
    max_length: int = 1024
    max_prompt_length: int = 512
    batch_size: int = 8
    columns: dict | None = None
    trust_remote_code: bool = False
    reference_scores: str | None = None  # a scored run of the base model on the same data: reused as reference
    group: str | None = None  # the method label this run's seeds share (analysis: seeds are replicates)
    seed: int | None = None  # the training seed; default: the training run's config


def _text_chars(value) -> int:
    return len(value) if isinstance(value, str) else sum(len(m["content"]) for m in value)


def _reusable_reference(req: ScoringRequest, data_fingerprint: str) -> list[dict] | None:
    """The base model's own scores on the same tokenized data are exactly the reference scores."""
    if not req.reference_scores:
        return None
    run = Path(req.reference_scores)
    meta = read_json(run / "scoring.json")
    if meta.get("adapter") or meta.get("model") != req.model or meta.get("data_fingerprint") != data_fingerprint:
        return None
    return read_jsonl(run / "scores.jsonl")


def score_run(req: ScoringRequest, log=None) -> Path:
    """Score `req.data` and write the scored run to `req.out_dir`; returns that directory."""
    out = Path(req.out_dir)
    tokenizer = load_tokenizer(req.model, req.trust_remote_code)
    records = load_preferences(req.data, req.columns)
    encoder = PairTokenizer(tokenizer, req.chat_format, req.max_length, req.max_prompt_length)
    pairs, report = encoder.encode_all(records)
    if not pairs:
        raise UserError(f"{req.data}: no pair fits max_length {req.max_length}")
    by_id: dict[str, PreferenceRecord] = {r.id: r for r in records}
    trained = TrainRun.of_saved(req.adapter) if req.adapter else None
    train_dir = trained.dir if trained is not None else None
    loss_params, method = None, req.method
    if trained is not None:
        loss = trained.saved_config()["loss"]
        method = method or loss["name"]
        loss_params = {k: v for k, v in loss.items() if k != "name"}
    use_reference = bool(req.adapter) and req.reference
    meta = {
        "name": req.name or (train_dir.name if train_dir else ("base" if not req.adapter else Path(req.adapter).name)),
        "group": req.group, "seed": req.seed,
        "method": method or ("base" if not req.adapter else None),
        "loss_params": loss_params,
        "model": req.model, "adapter": req.adapter, "adapter_sha": adapter_hash(req.adapter) if req.adapter else None,
        "reference": "base model (adapter disabled)" if use_reference else None,
        "beta": (loss_params or {}).get("beta"),
        "data": str(req.data), "data_fingerprint": fingerprint(pairs),
        "train_dir": str(train_dir) if train_dir else None,
        "tokenization": {**report.summary(), "settings": encoder.settings()},
    }
    previous = out / "scoring.json"
    if previous.is_file() and (out / "scores.jsonl").is_file():
        old = read_json(previous)
        if all(old.get(k) == meta[k] for k in ("model", "adapter_sha", "reference", "data_fingerprint")):
            if log:
                log(f"scores up to date: {out}")
            return out

    model = load_policy(req.model, req.adapter, req.dtype, trust_remote_code=req.trust_remote_code)
    ref_rows = _reusable_reference(req, meta["data_fingerprint"]) if use_reference else None
    passes = 2 if use_reference and ref_rows is None else 1  # the policy, and the reference unless reused
    with Progress(f"score {meta['name']}", passes * len(pairs), "pairs") as progress:
        rows = score_pairs(model, pairs, tokenizer.pad_token_id, req.batch_size, progress=progress.advance).rows(pairs)
        if passes == 2:
            with reference_mode(model) as base:
                ref_rows = score_pairs(base, pairs, tokenizer.pad_token_id, req.batch_size,
                                       progress=progress.advance).rows(pairs)
    for i, row in enumerate(rows):
        record = by_id[row["id"]]
        row["chars_chosen"], row["chars_rejected"] = _text_chars(record.chosen), _text_chars(record.rejected)
        row["ref_logp_chosen"] = ref_rows[i]["logp_chosen"] if use_reference else None
        row["ref_logp_rejected"] = ref_rows[i]["logp_rejected"] if use_reference else None
    write_jsonl(out / "scores.jsonl", rows)
    accuracy = accuracy_table(rows)
    write_json(out / "accuracy.json", accuracy)
    write_json(out / "versions.json", library_versions())
    write_json(previous, meta)  # last: its presence marks a finished scoring
    scored = req.adapter or req.model  # an adapter, or a fully fine-tuned model folder, that xlpo saved
    if Path(scored).is_dir() and record_evaluation(scored, meta, accuracy) and log:
        log(f"model card updated: {Path(scored) / 'README.md'}")
    return out
