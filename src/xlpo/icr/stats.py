"""Per-iteration, per-language statistics of an ICR run, and pair accuracy against a judge (Table 1).

Lengths, reward distributions, chosen-minus-rejected gaps, the share of responses in the wrong
language (py3langid), and, when judge verdicts exist, the share of pairs where the judge agrees
with the reward, with 95% bootstrap intervals. Judge requests use the paper's prompt (Appendix
E.3, answer order randomised); `judge_pairs` asks any ChatBackend (endpoint or local model).
"""

from __future__ import annotations

import random
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from xlpo.clients.chat import ChatBackend, ChatRequest
from xlpo.clients.stage import run_requests
from xlpo.errors import UserError
from xlpo.eval.analysis.accuracy import percentile_interval
from xlpo.fileio import iter_jsonl, write_jsonl

N_BOOT = 2000  # bootstrap resamples behind every judged-accuracy interval

VERDICTS = ("chosen", "rejected", "tie")

# ICR paper, Appendix E.3 (transcribed; the paper's layout puts each block on its own line).
JUDGE_TEMPLATE = """You are a helpful following assistant whose goal is to select the preferred (least wrong) output for a given instruction in {language}.

Which of the following answers is the best one for given instruction in {language}.

A good answer should follow these rules:

1. It should be in {language}, except when the instruction explicitly requests the answer in a different language.
2. It should answer the request in the instruction.
3. It should be factually and semantically comprehensible.
4. It should be grammatically correct and fluent.

<instruction>
{instruction}
</instruction>

<answer1>
{answer1}
</answer1>

<answer2>
{answer2}
</answer2>

FIRST, provide a one-sentence comparison of the two answers, explaining which you prefer and why.

SECOND, on a new line, state only 'answer1' or 'answer2' to indicate your choice. If both answers are equally good or bad, state 'tie'. Your response should use the format:

Comparison: <one-sentence comparison and explanation>

Preferred: <'answer1' or 'answer2' or 'tie'>"""


def describe(values: Iterable[float]) -> dict:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {"n": 0}
    q = np.quantile(arr, [0.1, 0.5, 0.9])
    return {"n": int(arr.size), "mean": float(arr.mean()), "std": float(arr.std()), "min": float(arr.min()),
            "p10": float(q[0]), "median": float(q[1]), "p90": float(q[2]), "max": float(arr.max())}


# -- language identification -------------------------------------------------------------------
_IDENTIFIER = None


def identify_languages(texts: list[str]) -> list[str | None]:
    """ISO 639-1 code per text (py3langid over its 97 languages); None for text without letters."""
    global _IDENTIFIER
    if _IDENTIFIER is None:
        _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE)
    return [_IDENTIFIER.classify(t)[0] if any(c.isalpha() for c in t) else None for t in texts]


# -- judge ---------------------------------------------------------------------------------------
def judge_prompt(language: str, instruction: str, answer1: str, answer2: str) -> str:
    return JUDGE_TEMPLATE.format(language=language, instruction=instruction, answer1=answer1, answer2=answer2)


def judge_requests(pairs: list[dict], per_language: int, seed: int, names: dict[str, str], kind: str) -> list[dict]:
    """Up to `per_language` pairs per language, each as a judge prompt with a random answer order.

    A request's id is "<reward kind>/<pair id>": the pairs of different rewards share pair ids."""
    by_lang: dict[str, list[dict]] = defaultdict(list)
    for pair in pairs:
        by_lang[pair["lang"]].append(pair)
    requests = []
    for lang in sorted(by_lang):
        rng = random.Random(f"{seed}|{kind}|{lang}")
        chosen_pairs = sorted(rng.sample(by_lang[lang], min(per_language, len(by_lang[lang]))), key=lambda p: p["id"])
        for pair in chosen_pairs:
            chosen_first = rng.random() < 0.5
            a1, a2 = (pair["chosen"], pair["rejected"]) if chosen_first else (pair["rejected"], pair["chosen"])
            requests.append({"id": f"{kind}/{pair['id']}", "pair_id": pair["id"], "kind": kind, "lang": lang, "answer1": "chosen" if chosen_first else "rejected",
                             "prompt": judge_prompt(names.get(lang, lang), pair["prompt"], a1, a2)})
    return requests


def parse_judge_reply(text: str) -> str | None:
    """'answer1', 'answer2' or 'tie' from a reply in the E.3 format ('Preferred: ...'), else None."""
    for line in reversed(text.strip().splitlines()):
        if line.strip().lower().startswith("preferred:"):
            value = line.split(":", 1)[1].strip().strip("'\"<>` .").lower()
            if value in ("answer1", "answer2", "tie"):
                return value
    return None


def verdict_for(request: dict, answer: str) -> str:
    """Map a judge's 'answer1'/'answer2'/'tie' on `request` back to chosen/rejected/tie."""
    if answer == "tie":
        return "tie"
    if answer not in ("answer1", "answer2"):
        raise ValueError(f"judge answer must be answer1, answer2 or tie, got {answer!r}")
    first = request["answer1"]
    return first if answer == "answer1" else ("rejected" if first == "chosen" else "chosen")


def read_judge_labels(path: str | Path) -> dict[str, str]:
    """{request id: chosen|rejected|tie} from JSONL rows {"id": "<kind>/<pair id>", "preferred": ...}."""
    path = Path(path)
    labels: dict[str, str] = {}
    for where, row in iter_jsonl(path):
        if not isinstance(row, dict) or "id" not in row or row.get("preferred") not in VERDICTS:
            raise UserError(f"{where}: expected {{\"id\": ..., \"preferred\": \"chosen\"|\"rejected\"|\"tie\"}}")
        labels[str(row["id"])] = row["preferred"]
    return labels


def accuracy_replicates(chosen: int, rejected: int, ties: int, label: str, n_boot: int = N_BOOT) -> dict[str, np.ndarray]:
    """Bootstrap replicates of `accuracy` (ties half) and `accuracy_no_ties` from a judged sample's counts.

    Resampling n judged pairs with replacement is a multinomial draw of the three counts; the
    generator is seeded by `label`, so an interval never depends on which other groups were judged.
    """
    n = chosen + rejected + ties
    if n == 0:
        return {"accuracy": np.array([]), "accuracy_no_ties": np.array([])}
    rng = np.random.default_rng([0, zlib.crc32(label.encode("utf-8"))])
    draws = rng.multinomial(n, [chosen / n, rejected / n, ties / n], size=n_boot).astype(float)
    decided = draws[:, 0] + draws[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        no_ties = np.where(decided > 0, draws[:, 0] / decided, np.nan)
    return {"accuracy": (draws[:, 0] + 0.5 * draws[:, 2]) / n, "accuracy_no_ties": no_ties}


def judged_accuracy(pairs: list[dict], verdicts: dict[str, str], kind: str) -> dict[str, dict]:
    """Per language: how often the judge prefers the chosen response of `kind`'s pairs.

    `verdicts` are keyed by request id ("<kind>/<pair id>"). `accuracy` counts a tie as half (as
    win rates do); `accuracy_no_ties` leaves ties out. Each has a 95% percentile-bootstrap interval
    over the judged pairs (`*_ci`).
    """
    counts: dict[str, Counter] = defaultdict(Counter)
    for pair in pairs:
        verdict = verdicts.get(f"{kind}/{pair['id']}")
        if verdict is not None:
            counts[pair["lang"]][verdict] += 1
    out = {}
    for lang, c in sorted(counts.items()):
        n = c["chosen"] + c["rejected"] + c["tie"]
        decided = c["chosen"] + c["rejected"]
        boot = accuracy_replicates(c["chosen"], c["rejected"], c["tie"], f"{kind}/{lang}")
        out[lang] = {"judged": n, "chosen": c["chosen"], "rejected": c["rejected"], "ties": c["tie"],
                     "accuracy": (c["chosen"] + 0.5 * c["tie"]) / n,
                     "accuracy_ci": percentile_interval(boot["accuracy"]),
                     "accuracy_no_ties": c["chosen"] / decided if decided else None,
                     "accuracy_no_ties_ci": percentile_interval(boot["accuracy_no_ties"]) if decided else None}
    return out


def table1(stats: dict, kinds: Sequence[str]) -> list[dict]:
    """The paper's Table 1 for one iteration's stats.json: per reward kind, judged accuracy per
    language and their mean ("avg", with an interval from the per-language replicates averaged)."""
    rows = []
    for kind in kinds:
        cells = {lang: entry["rewards"][kind]["judge"] for lang, entry in stats.items()
                 if not lang.startswith("_") and "judge" in entry.get("rewards", {}).get(kind, {})}
        if not cells:
            continue
        boots = [accuracy_replicates(c["chosen"], c["rejected"], c["ties"], f"{kind}/{lang}")["accuracy"]
                 for lang, c in cells.items()]
        rows.append({"kind": kind, "languages": cells,
                     "avg": {"accuracy": float(np.mean([c["accuracy"] for c in cells.values()])),
                             "accuracy_ci": percentile_interval(np.mean(boots, axis=0)),
                             "judged": sum(c["judged"] for c in cells.values())}})
    return rows


def judge_pairs(requests: list[dict], judge: ChatBackend, path: str | Path, *, max_tokens: int = 256, seed: int = 0,
                echo: Callable[[str], None] | None = print) -> tuple[dict[str, str], list[dict]]:
    """Ask `judge` every Table 1 request (greedy; resumable in `path`): (verdicts by request id, one row each).

    A reply without a valid "Preferred:" line, or a failed request, gets no verdict: it is counted
    in the rows' `status`, never guessed.
    """
    asks = [(r["id"], ChatRequest([{"role": "user", "content": r["prompt"]}], temperature=0.0, max_tokens=max_tokens,
                                  seed=seed)) for r in requests]
    replies = run_requests(path, judge, asks, label="judge", echo=echo)
    verdicts, rows = {}, []
    for r in requests:
        reply = replies[r["id"]]
        answer = parse_judge_reply(reply.text) if reply.ok else None
        if answer is not None:
            verdicts[r["id"]] = verdict_for(r, answer)
        rows.append({"id": r["id"], "kind": r["kind"], "lang": r["lang"], "answer1": r["answer1"],
                     "status": "failed" if not reply.ok else "unparseable" if answer is None else "judged",
                     "answer": answer, "preferred": verdicts.get(r["id"]), "reply": reply.text, "error": reply.error})
    return verdicts, rows


def run_judge(judge: Callable[[dict], str], requests: list[dict]) -> dict[str, str]:
    """Call `judge(request) -> 'answer1'|'answer2'|'tie'` on every request; verdicts by pair id."""
    return {r["id"]: verdict_for(r, judge(r)) for r in requests}


def judge_folder(judge_dir: str | Path, judge: ChatBackend, *, max_tokens: int = 256, seed: int = 0,
                 echo: Callable[[str], None] | None = print) -> Counter:
    """Judge an iteration's `judge/requests.jsonl`: writes replies.jsonl (resumable), judgments.jsonl
    (one row per request) and labels.jsonl (the verdicts `iteration_stats` reads); status counts."""
    judge_dir = Path(judge_dir)
    requests = [row for _, row in iter_jsonl(judge_dir / "requests.jsonl")]
    verdicts, rows = judge_pairs(requests, judge, judge_dir / "replies.jsonl", max_tokens=max_tokens, seed=seed,
                                 echo=echo)
    write_jsonl(judge_dir / "judgments.jsonl", rows)
    write_jsonl(judge_dir / "labels.jsonl", [{"id": k, "preferred": v} for k, v in verdicts.items()])
    return Counter(row["status"] for row in rows)


def judge_counts(judge_dir: str | Path) -> dict[str, Counter]:
    """{reward kind: Counter of judged/unparseable/failed} from an iteration's judgments.jsonl ({} if none)."""
    path = Path(judge_dir) / "judgments.jsonl"
    counts: dict[str, Counter] = defaultdict(Counter)
    if path.is_file():
        for _, row in iter_jsonl(path):
            counts[row["kind"]][row["status"]] += 1
    return dict(counts)


# -- the statistics of one iteration ----------------------------------------------------------
def iteration_stats(samples: list[dict], scores: list[dict], alphas: dict, pairs: dict[str, list[dict]],
                    beta: float, languages: dict[str, str | None] | None = None,
                    verdicts: dict[str, str] | None = None, train_summary: dict | None = None) -> dict:
    """{lang: statistics} for one iteration. `languages` maps "<pair id>#<index>" to the identified
    language of that response (None: not identified); `pairs` maps reward kind to its pairs."""
    score_by_id = {row["id"]: row for row in scores}
    out: dict[str, dict] = {}
    for lang in sorted({row["lang"] for row in samples}):
        rows = [r for r in samples if r["lang"] == lang]
        chars = [len(t) for r in rows for t in r["responses"]]
        entry: dict = {"prompts": len(rows), "responses": len(chars), "response_chars": describe(chars),
                       "empty_responses": sum(1 for c in chars if c == 0)}
        kinds = list(pairs)
        first = score_by_id.get(rows[0]["id"]) if rows else None
        if first is not None and kinds:
            entry["response_tokens"] = describe(t for r in rows for t in score_by_id[r["id"]]["scores"][kinds[0]]["tokens"])
        if languages is not None:
            found = [languages.get(f"{r['id']}#{j}") for r in rows for j in range(len(r["responses"]))]
            known = [f for f in found if f is not None]
            entry["wrong_language_share"] = sum(1 for f in known if f != lang) / len(known) if known else None
            entry["identified_languages"] = dict(Counter(known).most_common(5))
        entry["rewards"] = {}
        for kind in kinds:
            values = [beta * (p - q) for r in rows for p, q in zip(score_by_id[r["id"]]["scores"][kind]["policy"],
                                                                   score_by_id[r["id"]]["scores"][kind]["reference"])]
            kind_pairs = [p for p in pairs[kind] if p["lang"] == lang]
            info = {"reward": describe(values), "alpha": alphas.get(kind, {}).get(lang, {}).get("alpha"),
                    "pairs": len(kind_pairs), "identical_skipped": len(rows) - len(kind_pairs)}
            if kind_pairs:
                info["chosen_minus_rejected"] = {
                    "chars": float(np.mean([p["chosen_chars"] - p["rejected_chars"] for p in kind_pairs])),
                    "reward": float(np.mean([p["chosen_reward"] - p["rejected_reward"] for p in kind_pairs])),
                    "penalised_reward": float(np.mean([p["chosen_penalised"] - p["rejected_penalised"] for p in kind_pairs])),
                }
                info["chosen_chars"] = describe(p["chosen_chars"] for p in kind_pairs)
                info["rejected_chars"] = describe(p["rejected_chars"] for p in kind_pairs)
                if languages is not None:
                    for side in ("chosen", "rejected"):
                        found = [languages.get(f"{p['id']}#{p[side + '_index']}") for p in kind_pairs]
                        known = [f for f in found if f is not None]
                        info[f"{side}_wrong_language_share"] = sum(1 for f in known if f != lang) / len(known) if known else None
                if verdicts:
                    judged = judged_accuracy(kind_pairs, verdicts, kind).get(lang)
                    if judged:
                        info["judge"] = judged
            entry["rewards"][kind] = info
        out[lang] = entry
    if train_summary is not None:
        final = train_summary.get("final_metrics", {})
        out["_train"] = {"steps": train_summary.get("steps"), "pairs": train_summary.get("pairs"),
                         "loss": final.get("loss"), "reward_accuracy": final.get("rewards/accuracies"),
                         "reference": train_summary.get("reference"), "seconds": train_summary.get("seconds")}
    return out
