"""`run_xalpacaeval`: answers, baseline, judge annotations, WR and LC per language, results.json.

Every stage is a resumable request file in the output folder (answers.jsonl, baseline_answers.jsonl,
judge_requests.jsonl); annotations.jsonl holds each judgment with the order used and the preference.
"""

from __future__ import annotations

import importlib.metadata
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from xlpo.bench import lc_winrate
from xlpo.bench.common import write_results
from xlpo.bench.mtbench import derive_seed
from xlpo.bench.winrate import candidate_position
from xlpo.bench.xalpacaeval.data import ANSWERS_FILE, BASELINE_FILE, Instruction, load_instructions, read_answers
from xlpo.bench.xalpacaeval.judge import USER_TEMPLATE, judge_request, preference_for_second
from xlpo.bench.xalpacaeval.lc_files import HUB_REPO, difficulty_of_ids, locate_gamed
from xlpo.clients.chat import ChatBackend, ChatRequest
from xlpo.clients.stage import run_requests
from xlpo.errors import UserError
from xlpo.fileio import read_json, write_jsonl

ORDERS = ("random", "both")


def answer_requests(instructions: list[Instruction], temperature: float, top_p: float, max_tokens: int, seed: int,
                    stream: str = "") -> list[tuple[str, ChatRequest]]:
    """One user turn per instruction; per-item seeds sha256('<seed>/<stream><lang>/<id>')[:4] & 0x7fffffff."""
    return [(i.key, ChatRequest([{"role": "user", "content": i.text}], temperature, max_tokens,
                                derive_seed(seed, stream + i.key), top_p)) for i in instructions]


def plan_judgments(instructions: list[Instruction], candidate: dict, baseline: dict, orders: str, seed: int) -> list[dict]:
    """One row per judgment to make: where the candidate's answer goes ("1" = output_1 = "m").

    "random" puts the candidate first or second with a coin seeded by (seed, instruction), as
    AlpacaEval randomises per instruction; "both" judges each instruction in both orders.
    Identical answers are a tie (0.5) without asking, as in AlpacaEval.
    """
    rows = []
    for ins in instructions:
        a, b = candidate[ins.key], baseline[ins.key]
        if a is None or b is None:
            continue
        if a.strip() == b.strip():
            rows.append({"key": ins.key, "position": None})
            continue
        positions = ["1", "2"] if orders == "both" else ["1" if candidate_position(seed, ins.key) == "A" else "2"]
        rows.extend({"key": ins.key, "position": p} for p in positions)
    return rows


def _annotations(instructions, candidate, baseline, plan, replies) -> list[dict]:
    by_key = {i.key: i for i in instructions}
    rows = []
    for item in plan:
        ins, pos = by_key[item["key"]], item["position"]
        a, b = candidate[ins.key], baseline[ins.key]
        row = {"key": ins.key, "lang": ins.lang, "id": ins.id, "dataset": ins.dataset, "candidate_position": pos,
               "candidate_chars": len(a), "baseline_chars": len(b), "preference": 0.5, "source": "identical",
               "reply": None, "error": None, "top_logprobs": None}
        if pos is not None:
            reply = replies[f"{ins.key}/{pos}"]
            row.update(reply=reply.text, error=reply.error, top_logprobs=reply.top_logprobs)
            if not reply.ok:
                row.update(preference=None, source="failed")
            else:
                second, how = preference_for_second(reply)
                if second is None:
                    row.update(preference=None, source="unparseable", note=how)
                else:
                    row.update(preference=second if pos == "2" else 1.0 - second, source=how)
        rows.append(row)
    return rows


def _language_block(lang: str, instructions, candidate, baseline, rows, gamed, method, counts) -> dict:
    """WR and LC of one language; `gamed` = (GamedBaselines, difficulty by AlpacaEval row) or None."""
    mine = [i for i in instructions if i.lang == lang]
    scored = [r for r in rows if r["lang"] == lang and r["preference"] is not None]
    ann = lc_winrate.Annotations(
        preference=np.array([r["preference"] for r in scored], dtype=float),
        delta_chars=np.array([r["candidate_chars"] - r["baseline_chars"] for r in scored], dtype=float),
        group=[str(r["id"]) for r in scored],
        difficulty=None if gamed is None else difficulty_of_ids(gamed[1], [r["id"] for r in scored]))
    summary = lc_winrate.summarize(ann, counts, None if gamed is None else gamed[0], method)
    both = [i for i in mine if candidate[i.key] is not None and baseline[i.key] is not None]
    prefs = [r["preference"] for r in scored]
    sources = Counter(r["source"] for r in rows if r["lang"] == lang)
    return {**summary, "instructions": len(mine), "compared": len(both),
            "excluded": len(mine) - len(both),  # either answer failed to generate
            "wins": sum(p > 0.5 for p in prefs), "ties": sum(p == 0.5 for p in prefs),
            "losses": sum(p < 0.5 for p in prefs), "unparseable": sources["unparseable"], "failed": sources["failed"],
            "sources": dict(sources),
            "candidate_chars": float(np.mean([len(candidate[i.key]) for i in both])) if both else None,
            "baseline_chars": float(np.mean([len(baseline[i.key]) for i in both])) if both else None}


def _baseline_answers(instructions, out_dir, baseline_dir, given, baseline, settings, echo) -> tuple[dict, dict]:
    if baseline is not None:
        requests = answer_requests(instructions, *settings, stream="baseline/")
        replies = run_requests(out_dir / BASELINE_FILE, baseline, requests, label="baseline answers", echo=echo)
        return {k: r.text for k, r in replies.items()}, {"baseline": baseline.describe()}
    return given, {"baseline_answers": str(baseline_dir)}


def run_xalpacaeval(data_dir: str | Path, out_dir: str | Path, candidate: ChatBackend, *,
                    baseline_dir: str | Path | None = None, baseline: ChatBackend | None = None,
                    judge: ChatBackend | None = None, languages: list[str], limit: int | None = None,
                    temperature: float = 0.6, top_p: float = 0.9, max_tokens: int = 2048, seed: int = 0,
                    orders: str = "random", judge_max_tokens: int = 1, judge_logprobs: bool = True,
                    lc_files: str | Path | None = None, n_boot: int = 1000,
                    echo: Callable[[str], None] | None = print) -> dict:
    """X-AlpacaEval for `candidate` against a baseline (answers in `baseline_dir`, or the `baseline`
    model), judged by `judge`; without a judge only the answers are produced. Returns results.json.

    LC is AlpacaEval 2.0's when AlpacaEval's df_gamed.csv can be had (`lc_files`: the file or its
    folder, or the Hub id tatsu-lab/alpaca_eval; None: xlpo's cache, no request; `lc_files.locate_gamed`),
    else LC-minimal, labelled so."""
    if (baseline_dir is not None and baseline is not None) or (baseline_dir is None and baseline is None and judge):
        raise UserError("give the baseline either as a folder of answers (--baseline) or as a model "
                        "(--baseline-model / --baseline-endpoint), not both or neither")
    if orders not in ORDERS:
        raise UserError(f"orders: expected one of {', '.join(ORDERS)}, got {orders!r}")
    out_dir = Path(out_dir)
    instructions = load_instructions(data_dir, languages, limit)
    settings = (temperature, top_p, max_tokens, seed)
    # Every input is read and checked before the first answer is generated.
    given = read_answers(baseline_dir, instructions) if baseline_dir is not None else None
    gamed, lc_source = locate_gamed(lc_files, echo) if judge is not None else (None, {})
    replies = run_requests(out_dir / ANSWERS_FILE, candidate, answer_requests(instructions, *settings),
                           label="candidate answers", echo=echo)
    cand = {k: r.text for k, r in replies.items()}
    config = {"data": str(data_dir), "languages": languages, "limit": limit, "seed": seed,
              "generation": {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                             "item_seeds": "sha256('<seed>/<lang>/<id>')[:4] & 0x7fffffff; baseline: "
                                           "sha256('<seed>/baseline/<lang>/<id>')"},
              "candidate": candidate.describe()}
    if judge is None and baseline is None:
        results = {"languages": {lang: _lengths_only(lang, instructions, cand) for lang in languages}}
        return read_json(write_results(out_dir, "xalpacaeval", results, {**config, "judged": False}))
    base, where = _baseline_answers(instructions, out_dir, baseline_dir, given, baseline, settings, echo)
    config.update(where)
    if judge is None:
        results = {"languages": {lang: _lengths_only(lang, instructions, cand, base) for lang in languages}}
        return read_json(write_results(out_dir, "xalpacaeval", results, {**config, "judged": False}))
    plan = plan_judgments(instructions, cand, base, orders, seed)
    by_key = {i.key: i for i in instructions}
    requests = []
    for item in plan:
        if item["position"] is not None:
            ins = by_key[item["key"]]
            first, second = (cand[ins.key], base[ins.key]) if item["position"] == "1" else (base[ins.key], cand[ins.key])
            requests.append((f"{ins.key}/{item['position']}", judge_request(
                ins.text, first, second, max_tokens=judge_max_tokens, logprobs=judge_logprobs, seed=seed)))
    judged = run_requests(out_dir / "judge_requests.jsonl", judge, requests, label="judge", echo=echo)
    rows = _annotations(instructions, cand, base, plan, judged)
    write_jsonl(out_dir / "annotations.jsonl", rows)
    counts = lc_winrate.bootstrap_counts([str(i.id) for i in instructions], n_boot, seed, "xalpacaeval") \
        if n_boot else None
    method = lc_winrate.V1 if gamed is not None else lc_winrate.MINIMAL
    blocks = {lang: _language_block(lang, instructions, cand, base, rows, gamed, method, counts) for lang in languages}
    if gamed is None and echo:
        echo(f"LC: AlpacaEval's df_gamed.csv is not available ({lc_source.get('why')}); reporting "
             f"{lc_winrate.LABELS[method]}. Give --lc-files {HUB_REPO} to download it once from the Hub, "
             "or --lc-files PATH (docs/benchmarks.md).")
    average = {**lc_winrate.average(list(blocks.values())), "lc_method": method}
    for block in blocks.values():
        del block["_boot"]
    for side in ("candidate_chars", "baseline_chars"):
        lengths = [b[side] for b in blocks.values()]
        average[side] = float(np.mean(lengths)) if None not in lengths else None
    config.update({"judge": judge.describe(), "orders": orders, "judge_max_tokens": judge_max_tokens,
                   "judge_logprobs": judge_logprobs, "judge_prompt": USER_TEMPLATE,
                   "bootstrap": {"resamples": n_boot, "seed": seed, "level": lc_winrate.CI_LEVEL,
                                 "unit": "instruction ids, drawn jointly for every language",
                                 "lc_refit": "each resample refits the GLM at the L1 penalty chosen on all annotations"},
                   "lc": _lc_config(method, lc_source), "judged": True})
    results = {"languages": blocks, "average": average,
               "lc": {"method": method, "label": lc_winrate.LABELS[method],
                      "comparable_with_alpacaeval_leaderboard": method == lc_winrate.V1}}
    return read_json(write_results(out_dir, "xalpacaeval", results, config))


def _lc_config(method: str, source: dict) -> dict:
    return {"method": method, "label": lc_winrate.LABELS[method], "gamed_annotations": source or None,
            "penalty": "L1, C from numpy.logspace(-4, 4, 10) by 5-fold CV grouped by annotation (soft-label log-loss)",
            "gamed_weight": lc_winrate.GAMED_WEIGHT if method == lc_winrate.V1 else None,
            "scikit_learn": importlib.metadata.version("scikit-learn")}


def _lengths_only(lang: str, instructions, cand: dict, base: dict | None = None) -> dict:
    mine = [i for i in instructions if i.lang == lang]
    ok = [cand[i.key] for i in mine if cand[i.key] is not None]
    out = {"instructions": len(mine), "generation_failed": len(mine) - len(ok),
           "candidate_chars": float(np.mean([len(t) for t in ok])) if ok else None}
    if base is not None:
        have = [base[i.key] for i in mine if base[i.key] is not None]
        out["baseline_chars"] = float(np.mean([len(t) for t in have])) if have else None
    return out


def _fmt_ci(value, ci) -> str | None:
    return None if value is None or ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def table(results: dict) -> tuple[str, list[str], list[list]]:
    """(title, columns, rows): per language WR and LC (%) with 95% intervals and mean answer lengths."""
    res, config = results["results"], results["config"]
    if not config.get("judged"):
        columns = ["language", "instructions", "generation failed", "candidate chars", "baseline chars"]
        rows = [[lang, v["instructions"], v["generation_failed"], v["candidate_chars"], v.get("baseline_chars")]
                for lang, v in res["languages"].items()]
        return "X-AlpacaEval answers (not judged)", columns, rows
    method = res.get("lc", {}).get("method", lc_winrate.V1)
    name = lc_winrate.SHORT_NAMES[method]
    columns = ["language", "WR %", "WR 95% CI", f"{name} %", f"{name} 95% CI", "cand. chars", "base chars", "judged",
               "unparseable", "failed", "excluded"]
    rows = [[lang, v["win_rate"], _fmt_ci(v["win_rate"], v["win_rate_ci"]), v["lc_win_rate"],
             _fmt_ci(v["lc_win_rate"], v["lc_win_rate_ci"]), v["candidate_chars"], v["baseline_chars"],
             v["annotations"], v["unparseable"], v["failed"], v["excluded"]] for lang, v in res["languages"].items()]
    avg = res["average"]
    rows.append(["Avg", avg["win_rate"], _fmt_ci(avg["win_rate"], avg["win_rate_ci"]), avg["lc_win_rate"],
                 _fmt_ci(avg["lc_win_rate"], avg["lc_win_rate_ci"]), avg["candidate_chars"], avg["baseline_chars"], None,
                 None, None, None])
    base = config.get("baseline_answers") or config.get("baseline", {}).get("model", "?")
    return (f"X-AlpacaEval: win rate (WR) against {base}, judge {config['judge'].get('model', '?')}; "
            f"{lc_winrate.LABELS[method]}"), columns, rows
