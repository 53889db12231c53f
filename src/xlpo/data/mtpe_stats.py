"""Per-language statistics of a preference JSONL file (chosen vs rejected), saved as JSON.

For each language: pair counts; mean characters and tokens of chosen and rejected and tokens per
character (the tokenization-rate disparity between languages that CAPO's argument rests on);
corpus BLEU and chrF of the rejected text against the chosen one (sacrebleu; BLEU's tokenizer is
"zh" for Chinese, "char" for Japanese (so MeCab is not needed), "13a" otherwise; CAPO's Fig. 7 is
this BLEU on the training data); and the HTER distribution.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sacrebleu

from xlpo.errors import UserError
from xlpo.fileio import iter_jsonl, write_json

HTER_BINS = 10


def bleu_tokenizer(lang: str) -> str:
    """sacrebleu's tokenizer for a language code: "zh" for Chinese, "char" for Japanese, else "13a"."""
    base = lang.split("-")[0].lower()
    if base == "zh":
        return "zh"
    if base == "ja":
        return "char"
    return "13a"


def _text(value: Any, field: str, where: str) -> str:
    if isinstance(value, str):
        return value
    last = value[-1] if isinstance(value, list) and value else None
    if isinstance(last, Mapping) and isinstance(last.get("content"), str):
        return last["content"]  # a conversational completion: its (last) assistant message
    raise UserError(f"{where}: field '{field}': expected a string or a list of messages, got {type(value).__name__}")


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """(lang, chosen, rejected, hter) of every row of a preference JSONL file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a JSONL file")
    pairs = []
    for where, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for field in ("chosen", "rejected"):
            if field not in row:
                raise UserError(f"{where}: missing field '{field}'")
        hter = row.get("hter")
        if hter is not None and not isinstance(hter, (int, float)):
            raise UserError(f"{where}: field 'hter': expected a number or null, got {type(hter).__name__}")
        lang = row.get("lang") or "und"
        if not isinstance(lang, str):
            raise UserError(f"{where}: field 'lang': expected a language code string")
        pairs.append({"lang": lang, "chosen": _text(row["chosen"], "chosen", where),
                      "rejected": _text(row["rejected"], "rejected", where),
                      "hter": float(hter) if hter is not None else None})
    if not pairs:
        raise UserError(f"{path}: no rows")
    return pairs


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def hter_distribution(values: Iterable[float | None]) -> dict[str, Any]:
    """Count, mean, std, min, quartiles, max and a 10-bin histogram over [0, 1] (last bin closed)."""
    values = list(values)
    present = sorted(v for v in values if v is not None)
    missing = len(values) - len(present)
    if not present:
        return {"n": 0, "missing": missing}
    n = len(present)
    mean = sum(present) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in present) / n)
    hist = [0] * HTER_BINS
    above = 0
    for v in present:
        if v > 1.0:
            above += 1
            continue
        hist[min(int(max(v, 0.0) * HTER_BINS), HTER_BINS - 1)] += 1
    return {
        "n": n, "missing": missing, "mean": round(mean, 6), "std": round(std, 6), "min": present[0],
        "p25": round(_quantile(present, 0.25), 6), "median": round(_quantile(present, 0.5), 6),
        "p75": round(_quantile(present, 0.75), 6), "max": present[-1],
        "zero": sum(1 for v in present if v == 0.0),
        "histogram": {"edges": [i / HTER_BINS for i in range(HTER_BINS + 1)], "counts": hist, "above_1": above},
    }


def _lang_stats(lang: str, pairs: list[dict[str, Any]], tokenizer) -> dict[str, Any]:
    chosen = [p["chosen"] for p in pairs]
    rejected = [p["rejected"] for p in pairs]
    n = len(pairs)
    c_chars = [len(t) for t in chosen]
    r_chars = [len(t) for t in rejected]
    out: dict[str, Any] = {
        "n": n,
        "identical": sum(1 for c, r in zip(chosen, rejected) if c == r),
        "chosen_chars_mean": round(sum(c_chars) / n, 4),
        "rejected_chars_mean": round(sum(r_chars) / n, 4),
    }
    if tokenizer is not None:
        c_tok = [len(ids) for ids in tokenizer(chosen, add_special_tokens=False)["input_ids"]]
        r_tok = [len(ids) for ids in tokenizer(rejected, add_special_tokens=False)["input_ids"]]
        chars, toks = sum(c_chars) + sum(r_chars), sum(c_tok) + sum(r_tok)
        out.update({
            "chosen_tokens_mean": round(sum(c_tok) / n, 4),
            "rejected_tokens_mean": round(sum(r_tok) / n, 4),
            "chosen_tokens_per_char": round(sum(c_tok) / max(sum(c_chars), 1), 6),
            "rejected_tokens_per_char": round(sum(r_tok) / max(sum(r_chars), 1), 6),
            "tokens_per_char": round(toks / max(chars, 1), 6),
        })
    tok = bleu_tokenizer(lang)
    # The MT (rejected) scored against the post-edit (chosen) as the reference.
    bleu_metric, chrf_metric = sacrebleu.BLEU(tokenize=tok), sacrebleu.CHRF()
    bleu = bleu_metric.corpus_score(rejected, [chosen])
    chrf = chrf_metric.corpus_score(rejected, [chosen])
    out.update({"bleu": round(bleu.score, 4), "bleu_tokenize": tok, "bleu_signature": str(bleu_metric.get_signature()),
                "chrf": round(chrf.score, 4), "chrf_signature": str(chrf_metric.get_signature()),
                "hter": hter_distribution([p["hter"] for p in pairs])})
    return out


def compute_stats(path: str | Path, tokenizer: Any = "embedded") -> dict[str, Any]:
    """Statistics of a preference JSONL file per language (`tokenizer`: a name, a tokenizer or None)."""
    pairs = read_pairs(path)
    name = tokenizer if isinstance(tokenizer, str) else getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    if isinstance(tokenizer, str):
        from xlpo.models import load_tokenizer  # torch and transformers: only when a tokenizer is named

        tokenizer = load_tokenizer(tokenizer)
    by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in pairs:
        by_lang[p["lang"]].append(p)
    languages = {lang: _lang_stats(lang, by_lang[lang], tokenizer) for lang in sorted(by_lang)}
    return {"file": Path(path).name, "rows": len(pairs), "tokenizer": name if tokenizer is not None else None,
            "bleu": "sacrebleu corpus BLEU/chrF of rejected (hypothesis) against chosen (reference)",
            "languages": languages}


def default_stats_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}.stats.json")


def write_stats(path: str | Path, tokenizer: Any = "embedded", out: str | Path | None = None
                ) -> tuple[dict[str, Any], Path]:
    """Compute the statistics of `path` and save them as JSON (default `<stem>.stats.json` beside it)."""
    stats = compute_stats(path, tokenizer)
    target = Path(out) if out is not None else default_stats_path(path)
    write_json(target, stats)
    return stats, target
