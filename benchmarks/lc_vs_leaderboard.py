"""xlpo's LC against the AlpacaEval 2.0 leaderboard, on the judge annotations the leaderboard publishes.

    .venv/bin/python benchmarks/lc_vs_leaderboard.py --alpaca-eval PATH [--gamed df_gamed.csv]
        [--write-fixture tests/fixtures/alpacaeval_lc]

PATH is a checkout of github.com/tatsu-lab/alpaca_eval (Apache-2.0): its leaderboard CSV, its GLM
weights and `results/<model>/weighted_alpaca_eval_gpt4_turbo/annotations.json`. For every model
whose 805 annotations are there (in AlpacaEval's instruction order), it computes WR, xlpo's old
default LC (`length_controlled_minimal`) and xlpo's new default (`length_controlled_v1`, with the
gamed annotations of `--gamed`, AlpacaEval's Hub file `df_gamed.csv`), and reports |xlpo -
leaderboard|. Without `--gamed` it builds a stand-in of that file from the same public data (below),
so the v1 numbers then show the stand-in's error, not xlpo's: the leaderboard's own file is needed
for the exact check. Writes benchmarks/results/lc_vs_leaderboard.json.

The stand-in (`stand_in_gamed`): each instruction's difficulty is its maximum a posteriori value
given the leaderboard's published GLM weights of every model here (prior N(0, 1)); the two gamed
baselines' preferences are their published GLMs' predictions at their real answer lengths
(results/gpt4_1106_preview_{verbose,concise}/model_outputs.json).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.special import expit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from xlpo.bench import lc_winrate as lc  # noqa: E402
from xlpo.bench.xalpacaeval.lc_files import read_gamed  # noqa: E402

BASELINE = "gpt4_1106_preview"
GAMED = ("gpt4_1106_preview_verbose", "gpt4_1106_preview_concise")
LEADERBOARD = "src/alpaca_eval/leaderboards/data_AlpacaEval_2/weighted_alpaca_eval_gpt4_turbo_leaderboard.csv"
WEIGHTS = "src/alpaca_eval/metrics/weights/weighted_alpaca_eval_gpt4_turbo/length_controlled_v1/baseline_gpt4_1106_preview.csv"
FIXTURE_MODELS = ("gpt4_gamed", "alpaca-7b", "gpt-3.5-turbo-1106", "NullModel", "claude-2", "FuseChat-Gemma-2-9B-Instruct")


def read_csv_by_name(path: Path) -> dict[str, dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return {row[0]: dict(zip(rows[0][1:], row[1:])) for row in rows[1:]}


def outputs(root: Path, model: str) -> list[dict]:
    return json.loads((root / "results" / model / "model_outputs.json").read_text(encoding="utf-8"))


def load_annotations(root: Path, instructions: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Per model: AlpacaEval's preference (1-2, 2 = the model's output; 0 = a tie), both lengths."""
    out = {}
    for path in sorted((root / "results").glob("*/weighted_alpaca_eval_gpt4_turbo/annotations.json")):
        rows = json.loads(path.read_text(encoding="utf-8"))
        model = path.parts[-3]
        if model == BASELINE or [r["instruction"] for r in rows] != instructions:
            continue  # the baseline itself, or annotations missing some instructions
        out[model] = {"preference": np.array([r["preference"] for r in rows], dtype=float),
                      "len_1": np.array([len(r["output_1"]) for r in rows]),
                      "len_2": np.array([len(r["output_2"]) for r in rows])}
    return out


def stand_in_gamed(root: Path, models: dict, weights: dict) -> list[dict]:
    """Rows of a df_gamed.csv stand-in built from public data only (module docstring)."""
    names = [m for m in models if m in weights]
    coef = {m: [float(weights[m][k]) for k in ("np.tanh(std_delta_len)", "instruction_difficulty",
                                               "not_gamed_baseline.astype(float)")] for m in names + list(GAMED)}
    c, b, a = (np.array([coef[m][i] for m in names])[:, None] for i in range(3))
    y = np.array([unit_preference(models[m]["preference"]) for m in names])
    x = np.tanh(np.array([std_delta(models[m]["len_1"], models[m]["len_2"]) for m in names]))
    d = np.zeros(y.shape[1])
    for _ in range(100):  # Newton on each instruction's (concave) log posterior, steps capped for stability
        p = expit(a + b * d + c * x)
        d += np.clip(((b * (y - p)).sum(0) - d) / ((b ** 2 * p * (1 - p)).sum(0) + 1.0), -1.0, 1.0)
    base = np.array([len(o["output"]) for o in outputs(root, BASELINE)])
    rows = []
    for g in GAMED:
        s = std_delta(base, np.array([len(o["output"]) for o in outputs(root, g)]))
        p = expit(coef[g][2] + coef[g][1] * d + coef[g][0] * np.tanh(s))
        rows += [{"index": i, "preference": f"{p[i]:.10g}", "std_delta_len": f"{s[i]:.10g}",
                  "instruction_difficulty": f"{d[i]:.10g}", "not_gamed_baseline": "False", "model": g}
                 for i in range(len(d))]
    return rows


def unit_preference(preference: np.ndarray) -> np.ndarray:
    """AlpacaEval's preference as the probability that output_2 wins (its 0 means a tie)."""
    return np.where(preference == 0, 0.5, preference - 1)


def std_delta(len_1: np.ndarray, len_2: np.ndarray) -> np.ndarray:
    delta = (len_1 - len_2).astype(float)
    return delta / delta.std(ddof=1)


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def compare(models: dict, board: dict, gamed_path: Path) -> list[dict]:
    gamed, difficulty = read_gamed(gamed_path)
    out = []
    for model, ann in models.items():
        if model not in board:
            continue
        base = lc.Annotations(unit_preference(ann["preference"]), (ann["len_2"] - ann["len_1"]).astype(float), [str(i) for i in range(805)])
        started = time.perf_counter()
        v1 = lc.summarize(replace(base, difficulty=difficulty), None, gamed)
        seconds = time.perf_counter() - started
        minimal = lc.summarize(base, method=lc.MINIMAL)
        row = {"model": model, "avg_length": float(ann["len_2"].mean()), "win_rate": v1["win_rate"],
               "leaderboard_win_rate": float(board[model]["win_rate"]), "minimal": minimal["lc_win_rate"],
               "v1": v1["lc_win_rate"], "leaderboard_lc": float(board[model]["length_controlled_winrate"]),
               "v1_seconds": round(seconds, 3)}
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def summary(rows: list[dict], column: str) -> dict:
    gaps = np.array([abs(r[column] - r["leaderboard_lc"]) for r in rows])
    worst = rows[int(gaps.argmax())]["model"]
    return {"models": len(rows), "mean_abs_gap": float(gaps.mean()), "max_abs_gap": float(gaps.max()), "worst": worst}


def write_fixture(folder: Path, root: Path, models: dict, board: dict, gamed_rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    baseline = models[FIXTURE_MODELS[0]]["len_1"]
    assert all((models[m]["len_1"] == baseline).all() for m in FIXTURE_MODELS), "one baseline answer per instruction"
    write_csv(folder / "annotations.csv", [
        {"row": i, "baseline_chars": int(baseline[i]),
         **{f"{m}:{field}": value for m in FIXTURE_MODELS for field, value in
            (("preference", repr(float(models[m]["preference"][i]))), ("chars", int(models[m]["len_2"][i])))}}
        for i in range(805)])
    columns = ("win_rate", "length_controlled_winrate", "avg_length")
    write_csv(folder / "leaderboard.csv", [{"model": m, **{k: board[m][k] for k in columns}} for m in FIXTURE_MODELS])
    write_csv(folder / "df_gamed.csv", gamed_rows)
    write_csv(folder / "alpacaeval_instructions.csv", [
        {"row": i, "dataset": o["dataset"], "sha256_16": hashlib.sha256(o["instruction"].encode()).hexdigest()[:16]}
        for i, o in enumerate(outputs(root, BASELINE))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpaca-eval", type=Path, required=True, help="a checkout of tatsu-lab/alpaca_eval")
    parser.add_argument("--gamed", type=Path, help="AlpacaEval's df_gamed.csv (default: the stand-in)")
    parser.add_argument("--write-fixture", type=Path, help="write the test fixture (stand-in df_gamed) here")
    args = parser.parse_args()
    root = args.alpaca_eval
    instructions = [o["instruction"] for o in outputs(root, BASELINE)]
    models, board = load_annotations(root, instructions), read_csv_by_name(root / LEADERBOARD)
    gamed_rows = stand_in_gamed(root, models, read_csv_by_name(root / WEIGHTS))
    gamed_path = args.gamed or Path(tempfile.mkdtemp()) / "df_gamed_stand_in.csv"
    if args.gamed is None:
        write_csv(gamed_path, gamed_rows)
    rows = compare(models, board, gamed_path)
    out = {"gamed_file": "AlpacaEval's df_gamed.csv" if args.gamed else "stand-in built from public data",
           "gamed_sha256": hashlib.sha256(gamed_path.read_bytes()).hexdigest(),
           "before_minimal": summary(rows, "minimal"), "after_v1": summary(rows, "v1"), "models": rows,
           "machine": platform.platform()}
    print(json.dumps({k: out[k] for k in ("gamed_file", "before_minimal", "after_v1")}, indent=2))
    name = "lc_vs_leaderboard.json" if args.gamed else "lc_vs_leaderboard_stand_in.json"
    (REPO / "benchmarks" / "results" / name).write_text(json.dumps(out, indent=2) + "\n")
    if args.write_fixture:
        write_fixture(args.write_fixture, root, models, board, gamed_rows)


if __name__ == "__main__":
    main()
