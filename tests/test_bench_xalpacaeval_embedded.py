"""Integration: X-AlpacaEval end to end with the embedded SmolLM2 as candidate, baseline source and
local judge (no server), and `xlpo bench mtbench` with a local judge, on a few real instructions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
GAMED = Path(__file__).parent / "fixtures" / "alpacaeval_lc"  # a stand-in of AlpacaEval's df_gamed.csv (README)


def xlpo(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", OMP_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-m", "xlpo", *map(str, args)], capture_output=True, text=True,
                          timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_xalpacaeval_with_a_local_judge(tmp_path, shared_data):
    data = shared_data / "icr" / "x-alpacaeval" / "data"
    common = ["--data", data, "--languages", "en,de", "--limit", "3", "--max-tokens", "24"]
    # The baseline: the same model's answers with another seed, generated first (a folder of answers).
    base = tmp_path / "base"
    xlpo("bench", "xalpacaeval", *common, "--seed", "1", "--generate-only", "--out", base)
    out = tmp_path / "cand"
    done = xlpo("bench", "xalpacaeval", *common, "--model", "embedded", "--baseline", base,
                "--judge-model", "embedded", "--orders", "both", "--bootstrap", "200", "--lc-files", GAMED, "--out", out)
    results = json.loads((out / "results.json").read_text())
    assert results["results"]["lc"]["method"] == "length_controlled_v1"
    assert results["config"]["judge"]["kind"] == "local" and results["config"]["baseline_answers"] == str(base)
    for lang in ("en", "de"):
        block = results["results"]["languages"][lang]
        assert block["instructions"] == 3 and block["excluded"] == 0 and block["candidate_chars"] > 0
        assert block["annotations"] + block["unparseable"] + block["failed"] + block.get("sources", {}).get(
            "identical", 0) >= 3
        assert block["failed"] == 0
    rows = [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]
    judged = [r for r in rows if r["source"] != "identical"]
    assert judged and all(r["top_logprobs"] for r in judged)  # the local judge's own first-token log-probs
    assert {r["candidate_position"] for r in judged} == {"1", "2"}
    assert "X-AlpacaEval" in done.stdout and "Avg" in done.stdout
    # A rerun on the same folder reuses every answer and judgment.
    again = xlpo("bench", "xalpacaeval", *common, "--model", "embedded", "--baseline", base,
                 "--judge-model", "embedded", "--orders", "both", "--bootstrap", "200", "--lc-files", GAMED, "--out", out)
    assert "reusing 6 of 6" in again.stderr and json.loads((out / "results.json").read_text())["results"] == \
        results["results"]


def test_mtbench_with_a_local_judge(tmp_path, shared_data):
    out = tmp_path / "mtbench"
    xlpo("bench", "mtbench", "--data", shared_data / "mt-bench", "--languages", "en", "--limit", "1",
         "--max-tokens", "16", "--judge-model", "embedded", "--judge-max-tokens", "24", "--out", out)
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["judge"]["kind"] == "local"
    counts = results["results"]["languages"]["en"]["counts"]
    for turn in ("1", "2"):  # each turn was judged by the local model: scored or unparseable, never failed
        assert counts[turn]["judge_failed"] == 0 and counts[turn]["scored"] + counts[turn]["unparseable"] == 1
