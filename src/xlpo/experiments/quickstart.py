"""The quick-start job: MTPE pairs -> CAPO with LoRA -> per-language reward accuracy, base vs trained.

Each stage writes files and is skipped when its output already exists for the same inputs, so a
killed run continues where it stopped (training itself resumes from its last checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from xlpo.data.mtpe import make_mtpe
from xlpo.data.records import load_preferences
from xlpo.data.tokenize import PairTokenizer, fingerprint
from xlpo.eval.scoring import accuracy_by_language, score_pairs
from xlpo.fileio import read_json, write_json
from xlpo.models import load_adapter, load_model, load_tokenizer
from xlpo.train.config import load_config
from xlpo.train.trainer import train
from xlpo.versions import library_versions

DEFAULT_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "capo-cpu-smollm2.yaml"


@dataclass
class QuickstartResult:
    out_dir: Path
    results_path: Path
    table: dict  # lang -> {pairs, base_acc_sum, trained_acc_sum, base_acc_mean, trained_acc_mean}


def run_quickstart(out_dir: str | Path = "runs/quickstart", config: str | Path | None = None,
                   overrides: list[str] = (), per_split: int = 100, log=print) -> QuickstartResult:
    out = Path(out_dir)
    data_dir = out / "data"
    if (data_dir / "manifest.json").is_file() and read_json(data_dir / "manifest.json")["config"]["per_split"] \
            == {"train": per_split, "validation": per_split, "evaluation": per_split}:
        log(f"[1/3] data: reusing {data_dir}")
    else:
        log("[1/3] data: building MTPE preference pairs (post-edit preferred over raw MT)")
        build, _ = make_mtpe(data_dir, per_split=per_split)
        for split, counts in build.manifest["counts"].items():
            log(f"      {split}: {sum(counts.values())} pairs ({', '.join(f'{d} {n}' for d, n in counts.items())})")
        if build.manifest["shortfalls"]:
            log(f"      {len(build.manifest['shortfalls'])} direction/split cells have fewer usable pairs than "
                f"{per_split}: all usable pairs are used, none padded (details: {data_dir / 'manifest.json'})")

    cfg_path = Path(config) if config else DEFAULT_CONFIG
    cfg = load_config(cfg_path, [f"data.train={data_dir / 'train.jsonl'}", f"training.output_dir={out / 'train'}",
                                 *overrides])
    summary_path = out / "train" / "train_summary.json"
    saved_config = out / "train" / "config.yaml"
    same_config = saved_config.is_file() and yaml.safe_load(saved_config.read_text()) == cfg.model_dump(mode="json")
    if same_config and summary_path.is_file() and (out / "train" / "adapter").is_dir():
        log(f"[2/3] train: reusing {out / 'train'}")
    else:
        log(f"[2/3] train: {cfg.loss.name} on {cfg.model.name_or_path} with LoRA r={cfg.lora.r} "
            f"(config {cfg_path})")
        train(cfg, resume=(out / "train" / "checkpoints").is_dir())

    log("[3/3] evaluate: reward accuracy on the evaluation split, base model vs trained adapter")
    table = _evaluate(cfg, data_dir / "evaluation.jsonl", out / "train" / "adapter", out / "scores")
    results = {"config": cfg.model_dump(mode="json"), "versions": library_versions(),
               "accuracy_by_language": table, "train_summary": read_json(summary_path)}
    write_json(out / "results.json", results)
    return QuickstartResult(out, out / "results.json", table)


def _evaluate(cfg, eval_file: Path, adapter_dir: Path, scores_dir: Path) -> dict:
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    encoder = PairTokenizer(tokenizer, cfg.data.chat_format, cfg.data.max_length, cfg.data.max_prompt_length,
                            cfg.data.truncation)
    pairs, _ = encoder.encode_all(load_preferences(eval_file))
    key = fingerprint(pairs)[:16]
    model = load_model(cfg.model.name_or_path, cfg.model.dtype, cfg.model.trust_remote_code)
    scored = {}
    for name in ("base", "trained"):
        cached = scores_dir / f"{name}-{key}.json"
        if cached.is_file():
            scored[name] = read_json(cached)
            continue
        if name == "trained":
            model = load_adapter(model, str(adapter_dir))
        scored[name] = score_pairs(model, pairs, tokenizer.pad_token_id, batch_size=8)
        write_json(cached, scored[name])
    base, trained = accuracy_by_language(scored["base"]), accuracy_by_language(scored["trained"])
    return {lang: {"pairs": base[lang]["pairs"],
                   "base_acc_sum": base[lang]["acc_sum"], "trained_acc_sum": trained[lang]["acc_sum"],
                   "base_acc_mean": base[lang]["acc_mean"], "trained_acc_mean": trained[lang]["acc_mean"]}
            for lang in base}
