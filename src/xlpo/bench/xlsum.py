"""XL-Sum one-sentence summarization: load and sample articles, generate summaries, score ROUGE-L.

The CAPO paper's setting (Appendix C): 50 test articles per language, the instruction "Generate a
one sentence summary of the text below in [LANGUAGE].", ROUGE-L against the reference summary.
Win rates between two runs of this module are computed by `xlpo.bench.winrate.run_xlsum_winrate`.
"""

from __future__ import annotations

import hashlib
import random
import re
import statistics
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xlpo.bench.common import write_results
from xlpo.clients.chat import ChatBackend, ChatReply, ChatRequest
from xlpo.clients.stage import run_requests
from xlpo.errors import UserError
from xlpo.fileio import iter_jsonl, read_json, write_jsonl
from xlpo.versions import package_version

HUB_ID = "csebuetnlp/xlsum"

# Our language code -> (XL-Sum config / file name, English name used in the prompts). All 45 XL-Sum
# configs (44 languages; Serbian comes in two scripts).
XLSUM_LANGUAGES: dict[str, tuple[str, str]] = {
    "am": ("amharic", "Amharic"), "ar": ("arabic", "Arabic"), "az": ("azerbaijani", "Azerbaijani"),
    "bn": ("bengali", "Bengali"), "my": ("burmese", "Burmese"), "zh": ("chinese_simplified", "Chinese"),
    "zh-tw": ("chinese_traditional", "Traditional Chinese"), "en": ("english", "English"),
    "fr": ("french", "French"), "gu": ("gujarati", "Gujarati"), "ha": ("hausa", "Hausa"),
    "hi": ("hindi", "Hindi"), "ig": ("igbo", "Igbo"), "id": ("indonesian", "Indonesian"),
    "ja": ("japanese", "Japanese"), "rn": ("kirundi", "Kirundi"), "ko": ("korean", "Korean"),
    "ky": ("kyrgyz", "Kyrgyz"), "mr": ("marathi", "Marathi"), "ne": ("nepali", "Nepali"),
    "om": ("oromo", "Oromo"), "ps": ("pashto", "Pashto"), "fa": ("persian", "Persian"),
    "pcm": ("pidgin", "Nigerian Pidgin"), "pt": ("portuguese", "Portuguese"), "pa": ("punjabi", "Punjabi"),
    "ru": ("russian", "Russian"), "gd": ("scottish_gaelic", "Scottish Gaelic"),
    "sr": ("serbian_cyrillic", "Serbian (Cyrillic script)"), "sr-latn": ("serbian_latin", "Serbian (Latin script)"),
    "si": ("sinhala", "Sinhala"), "so": ("somali", "Somali"), "es": ("spanish", "Spanish"),
    "sw": ("swahili", "Swahili"), "ta": ("tamil", "Tamil"), "te": ("telugu", "Telugu"), "th": ("thai", "Thai"),
    "ti": ("tigrinya", "Tigrinya"), "tr": ("turkish", "Turkish"), "uk": ("ukrainian", "Ukrainian"),
    "ur": ("urdu", "Urdu"), "uz": ("uzbek", "Uzbek"), "vi": ("vietnamese", "Vietnamese"), "cy": ("welsh", "Welsh"),
    "yo": ("yoruba", "Yoruba"),
}
LANGUAGE_NAMES: dict[str, str] = {code: name for code, (_, name) in XLSUM_LANGUAGES.items()}
_ALIASES = {"zh-cn": "zh", "zh-hans": "zh", "zh-hant": "zh-tw", "sr-cyrl": "sr"}
PAPER_LANGUAGES = ("en", "zh", "vi", "ar", "uk", "tr", "fr", "ja", "es")

# Scripts written without spaces between words: ROUGE-L counts characters there (see RougeTokenizer).
CHARACTER_LEVEL = frozenset({"zh", "zh-tw", "ja", "th", "my"})

INSTRUCTION = "Generate a one sentence summary of the text below in {language}."  # CAPO paper, Fig. 11


@dataclass(frozen=True)
class XlsumItem:
    id: str  # XL-Sum's own id
    language: str  # our code, e.g. "zh"
    text: str
    summary: str  # the reference
    title: str
    url: str
    where: str  # file:line (or Hub row) it came from

    @property
    def key(self) -> str:
        return f"{self.language}/{self.id}"


def language_code(language: str) -> str:
    """Our code for a code ("zh", "zh-CN", "sr_latn") or an XL-Sum name ("chinese_simplified")."""
    key = language.strip().lower()
    by_name = {name: code for code, (name, _) in XLSUM_LANGUAGES.items()}
    if key in by_name:
        return by_name[key]
    key = _ALIASES.get(key.replace("_", "-"), key.replace("_", "-"))
    if key not in XLSUM_LANGUAGES:
        raise UserError(f"unknown XL-Sum language '{language}': expected a code ({', '.join(XLSUM_LANGUAGES)}) "
                        f"or an XL-Sum name such as chinese_simplified")
    return key


def is_hub_id(source: str | Path) -> bool:
    """A Hub id looks like owner/name and is not an existing local path (a local folder always wins)."""
    return (not Path(source).exists()) and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", str(source)) is not None


def _local_rows(folder: Path, code: str, split: str) -> Iterable[tuple[str, object]]:
    by_name, by_code = folder / f"{XLSUM_LANGUAGES[code][0]}_{split}.jsonl", folder / f"{code}_{split}.jsonl"
    if by_name.exists() and by_code.exists():
        raise UserError(f"{folder}: both {by_name.name} and {by_code.name} exist for '{code}'; keep one")
    if not by_name.exists() and not by_code.exists():
        raise UserError(f"{folder}: no XL-Sum file for '{code}': expected {by_name.name} or {by_code.name}")
    return iter_jsonl(by_name if by_name.exists() else by_code)


def _hub_rows(hub_id: str, code: str, split: str) -> Iterable[tuple[str, object]]:
    import datasets  # only on this path: a local folder never needs it

    config = XLSUM_LANGUAGES[code][0]
    try:
        rows = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # noqa: BLE001 - network, missing config, unsupported loader: fixable by the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"{hub_id} (config {config}, split {split}): could not load from the Hub: "
                        f"{type(exc).__name__}: {reason}; download the JSONL files and pass their folder instead"
                        ) from None
    return ((f"{hub_id}[{config}/{split}] row {i + 1}", row) for i, row in enumerate(rows))


def _required_text(row: dict, field: str, where: str) -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: field '{field}' missing or empty (expected a non-empty string)")
    return value


def parse_row(where: str, row: object, code: str) -> XlsumItem:
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object with id, text and summary, got {type(row).__name__}")
    raw_id = row.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not str(raw_id).strip():
        raise UserError(f"{where}: field 'id' missing or empty (expected a string)")
    return XlsumItem(id=str(raw_id).strip(), language=code, text=_required_text(row, "text", where),
                     summary=_required_text(row, "summary", where), title=str(row.get("title") or ""),
                     url=str(row.get("url") or ""), where=where)


def sample_items(items: Sequence[XlsumItem], n: int | None, seed: int, code: str) -> list[XlsumItem]:
    """`n` items drawn by a seeded shuffle of the whole file; the first k of n are the sample of size k."""
    order = list(range(len(items)))
    random.Random(f"xlsum-sample:{seed}:{code}").shuffle(order)  # str seeds hash with SHA-512: stable
    return [items[i] for i in order[: len(items) if n is None else n]]


def load_xlsum(source: str | Path, languages: Sequence[str], n_per_language: int | None, seed: int,
               split: str = "test") -> list[XlsumItem]:
    """Seeded samples of `n_per_language` articles (None = all) per language, from a folder or a Hub id."""
    if n_per_language is not None and n_per_language < 1:
        raise UserError(f"n_per_language: expected a positive count or None, got {n_per_language}")
    codes = [language_code(lang) for lang in languages]
    if not codes or len(set(codes)) != len(codes):
        raise UserError(f"languages: expected distinct XL-Sum languages, got {list(languages)}")
    hub = is_hub_id(source)
    if not hub and not Path(source).is_dir():
        raise UserError(f"{source}: is a file; expected a folder of XL-Sum JSONL files or a Hub id"
                        if Path(source).exists() else f"{source}: no such folder, and not a Hub id (owner/name)")
    sampled: list[XlsumItem] = []
    for code in codes:
        rows = _hub_rows(str(source), code, split) if hub else _local_rows(Path(source), code, split)
        items, seen = [], {}
        for where, row in rows:  # every row is checked, so the sample never depends on a bad row
            item = parse_row(where, row, code)
            if item.id in seen:
                raise UserError(f"{where}: duplicate id '{item.id}' (first at {seen[item.id]})")
            seen[item.id] = where
            items.append(item)
        if not items:
            raise UserError(f"{source}: no rows for '{code}' (split {split})")
        sampled.extend(sample_items(items, n_per_language, seed, code))
    return sampled


def truncate_text(text: str, max_chars: int | None) -> tuple[str, bool]:
    """At most `max_chars` characters, ending at a space when one is near the cut; (text, truncated)."""
    if max_chars is None or len(text) <= max_chars:
        return text, False
    cut = text[:max_chars]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space >= 0.9 * max_chars:  # a whole last word, unless the script has no spaces to cut at
        cut = cut[:space]
    return cut.rstrip(), True


def summary_prompt(code: str, text: str) -> str:
    """The generation prompt: the paper's instruction, a blank line, the article (as in Figure 11)."""
    return INSTRUCTION.format(language=LANGUAGE_NAMES[code]) + "\n\n" + text


def article_from_prompt(code: str, prompt: str) -> str | None:
    """The article inside a `summary_prompt`, or None if `prompt` is not one for `code`."""
    head = INSTRUCTION.format(language=LANGUAGE_NAMES[code]) + "\n\n"
    return prompt[len(head):] if prompt.startswith(head) else None


@dataclass(frozen=True)
class Summary:
    """One row of a summaries.jsonl written by run_xlsum: the article as prompted and the reply."""

    key: str
    language: str
    id: str
    article: str  # as the model saw it (possibly truncated)
    summary: str | None  # None when generation failed
    error: str | None
    backend: dict


def read_summaries(path: str | Path) -> list[Summary]:
    """The rows of out_dir/summaries.jsonl (or of the file inside a run folder), in file order."""
    path = Path(path)
    path = path / "summaries.jsonl" if path.is_dir() else path
    summaries = []
    for where, row in iter_jsonl(path):
        key = row.get("key") if isinstance(row, dict) else None
        code, _, item_id = key.partition("/") if isinstance(key, str) else ("", "", "")
        if code not in XLSUM_LANGUAGES or not item_id:
            raise UserError(f"{where}: field 'key' must be '<language>/<id>' as written by run_xlsum, got {key!r}")
        messages = (row.get("request") or {}).get("messages") if isinstance(row.get("request"), dict) else None
        prompt = messages[-1].get("content") if isinstance(messages, list) and messages and \
            isinstance(messages[-1], dict) else None
        article = article_from_prompt(code, prompt) if isinstance(prompt, str) else None
        if article is None:
            raise UserError(f"{where}: field 'request' is not an XL-Sum summary request for '{code}'")
        text = row.get("text")
        if text is not None and not isinstance(text, str):
            raise UserError(f"{where}: field 'text' must be a string or null")
        summaries.append(Summary(key=key, language=code, id=item_id, article=article, summary=text,
                                 error=row.get("error"), backend=row.get("backend") or {}))
    return summaries


def item_seed(seed: int, key: str) -> int:
    """A per-item sampling seed (31 bits) from the run seed and the item, independent of sample order."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:4], "big") & 0x7FFFFFFF


class RougeTokenizer:
    """Lowercased Unicode words, or one token per character for scripts without spaces.

    rouge-score's default tokenizer keeps only [a-z0-9], so every Chinese or Arabic summary scores 0.
    Words here are runs of letters, digits and combining marks (Unicode categories L, N, M) after NFC
    normalisation: Python's `\\w` excludes combining marks and would cut हिन्दी into pieces. In
    per-character mode each letter or digit is a token carrying its combining marks (Thai vowel
    signs); whitespace and punctuation are dropped in both modes.
    """

    def __init__(self, per_character: bool):
        self.per_character = per_character

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        in_token = False
        for char in unicodedata.normalize("NFC", text).lower():
            kind = unicodedata.category(char)[0]
            if kind in "LN" or (kind == "M" and (in_token or not self.per_character)):
                if in_token and (kind == "M" or not self.per_character):
                    tokens[-1] += char
                else:
                    tokens.append(char)
                in_token = True
            else:
                in_token = False
        return tokens


def rouge_l(reference: str, prediction: str, code: str) -> dict[str, float]:
    """ROUGE-L precision, recall and F1 (0-1) of one prediction against its reference."""
    from rouge_score import rouge_scorer  # ~3 s to import (it loads nltk): only when scoring

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=RougeTokenizer(code in CHARACTER_LEVEL))
    score = scorer.score(reference, prediction)["rougeL"]
    return {"precision": score.precision, "recall": score.recall, "f1": score.fmeasure}


def _summary_rows(items: Sequence[XlsumItem], replies: dict[str, ChatReply],
                  truncated: dict[str, bool]) -> list[dict]:
    rows = []
    for item in items:
        reply = replies[item.key]
        row = {"key": item.key, "id": item.id, "language": item.language, "truncated": truncated[item.key],
               "reference": item.summary, "prediction": reply.text, "error": reply.error, "rougeL": None}
        if reply.ok:  # no post-processing beyond stripping: what the model wrote is what is scored
            row["rougeL"] = rouge_l(item.summary, reply.text.strip(), item.language)
        rows.append(row)
    return rows


def _aggregate(rows: Sequence[dict]) -> dict:
    f1 = [row["rougeL"]["f1"] for row in rows if row["rougeL"] is not None]
    return {"rougeL": 100 * statistics.fmean(f1) if f1 else None, "n": len(f1),
            "failed": sum(row["rougeL"] is None for row in rows), "sampled": len(rows),
            "truncated": sum(row["truncated"] for row in rows)}


def run_xlsum(source: str | Path, languages: Sequence[str], n_per_language: int | None, out_dir: str | Path,
              candidate: ChatBackend, *, seed: int = 0, temperature: float = 0.7, max_tokens: int = 128,
              max_text_chars: int | None = 4000, split: str = "test",
              echo: Callable[[str], None] | None = print) -> dict:
    """Summarise a seeded sample per language with `candidate` and score ROUGE-L; the results.json content.

    Paper defaults: temperature 0.7 (the paper's max 1024 tokens is lowered to 128 for one sentence).
    Writes out_dir/summaries.jsonl (the resumable generation stage), scores.jsonl and results.json.
    """
    out_dir = Path(out_dir)
    items = load_xlsum(source, languages, n_per_language, seed, split)
    requests, truncated = [], {}
    for item in items:
        text, truncated[item.key] = truncate_text(item.text, max_text_chars)
        messages = [{"role": "user", "content": summary_prompt(item.language, text)}]
        requests.append((item.key, ChatRequest(messages=messages, temperature=temperature, max_tokens=max_tokens,
                                               seed=item_seed(seed, item.key))))
    replies = run_requests(out_dir / "summaries.jsonl", candidate, requests, label="xlsum summaries", echo=echo)
    rows = _summary_rows(items, replies, truncated)
    write_jsonl(out_dir / "scores.jsonl", rows)
    codes = list(dict.fromkeys(item.language for item in items))
    results = {"languages": {code: _aggregate([r for r in rows if r["language"] == code]) for code in codes},
               "all": _aggregate(rows)}
    config = {"source": str(source), "source_kind": "hub" if is_hub_id(source) else "folder", "split": split,
              "languages": codes, "n_per_language": n_per_language, "seed": seed, "temperature": temperature,
              "max_tokens": max_tokens, "max_text_chars": max_text_chars, "instruction": INSTRUCTION,
              "rouge": {"metric": "rougeL F1 x100", "package": "rouge-score " + package_version("rouge-score"),
                        "character_level": sorted(CHARACTER_LEVEL & set(codes))},
              "candidate": candidate.describe(),
              "sample": {code: [item.id for item in items if item.language == code] for code in codes}}
    return read_json(write_results(out_dir, "xlsum", results, config))


def table(results: dict) -> tuple[str, list[str], list[list]]:
    """(title, columns, rows) of a results.json written by run_xlsum: one row per language, then all."""
    res, config = results["results"], results["config"]
    rows = [[name, v["rougeL"], v["n"], v["failed"], v["truncated"]]
            for name, v in [*res["languages"].items(), ("all", res["all"])]]
    title = f"XL-Sum ROUGE-L F1 x100 ({config['split']}, seed {config['seed']}, {config['candidate'].get('model', '')})"
    return title, ["language", "ROUGE-L", "n", "failed", "truncated"], rows
