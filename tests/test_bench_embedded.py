"""Integration: every benchmark end to end through `xlpo serve` on loopback, with the embedded
SmolLM2 as both candidate and judge (scores are poor; the plumbing is real)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def served():
    """`xlpo serve` on a free loopback port in a child process; its base URL."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "xlpo", "serve", "--port", "0"], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        deadline, url = time.monotonic() + 300, None
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError("xlpo serve exited before listening")
            if match := re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line):
                url = match.group(1)
        assert url, "xlpo serve did not announce its address"
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def bench(*args, out: Path, url: str, cache: Path) -> dict:
    """Run `xlpo bench ...` with the served model as candidate and judge; results.json."""
    cmd = [sys.executable, "-m", "xlpo", "bench", *args, "--out", str(out), "--endpoint", url,
           "--endpoint-model", "embedded"]
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "results: " in done.stdout
    return json.loads((out / "results.json").read_text())


def judge_args(url: str, cache: Path) -> list[str]:
    return ["--judge-url", url, "--judge-model", "embedded", "--judge-cache", str(cache)]


def test_mtbench_through_xlpo_serve(served, tmp_path, shared_data):
    out, cache = tmp_path / "mtbench", tmp_path / "cache"
    args = ["mtbench", "--data", str(shared_data / "mt-bench"), "--languages", "en,ja", "--limit", "1",
            "--max-tokens", "24", "--judge-max-tokens", "32", *judge_args(served, cache)]
    results = bench(*args, out=out, url=served, cache=cache)
    for lang in ("en", "ja"):
        counts = results["results"]["languages"][lang]["counts"]
        assert sum(counts["1"].values()) == 1 and sum(counts["2"].values()) == 1
        assert counts["1"]["generation_failed"] == 0 and counts["1"]["judge_failed"] == 0
    rows = [json.loads(x) for x in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["judge_reply"] for r in rows)
    assert results["config"]["judge"]["model"] == "embedded"
    # A rerun is answered from the run's files and the judge cache: identical results.
    again = bench(*args, out=out, url=served, cache=cache)
    assert again["results"] == results["results"]


def test_xlsum_and_winrate_through_xlpo_serve(served, tmp_path):
    cache = tmp_path / "cache"
    common = ["xlsum", "--source", str(FIXTURES / "xlsum"), "--languages", "en,zh", "--n", "2", "--max-tokens", "24"]
    sampled = bench(*common, out=tmp_path / "sampled", url=served, cache=cache)
    greedy = bench(*common, "--temperature", "0", out=tmp_path / "greedy", url=served, cache=cache)
    for results in (sampled, greedy):
        per_lang = results["results"]["languages"]
        assert {lang: per_lang[lang]["n"] for lang in ("en", "zh")} == {"en": 2, "zh": 2}
        assert all(0.0 <= per_lang[lang]["rougeL"] <= 100.0 for lang in ("en", "zh"))
        assert per_lang["en"]["failed"] == 0
    cmd = [sys.executable, "-m", "xlpo", "bench", "winrate", str(tmp_path / "sampled"), str(tmp_path / "greedy"),
           "--out", str(tmp_path / "winrate"), "--repeats", "2", "--judge-max-tokens", "32", *judge_args(served, cache)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=dict(os.environ, COLUMNS="200"))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "winrate" / "results.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "winrate" / "judgments.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {r["repeat"] for r in rows} == {0, 1}
    assert all(r["outcome"] in ("win", "tie", "lose", "unparseable") and r["reply"] for r in rows)
    for repeat in results["results"]["all"]["per_repeat"]:  # every judgment is accounted for exactly once
        assert repeat["win"] + repeat["tie"] + repeat["lose"] + repeat["unparseable"] + repeat["failed"] == 4


def test_mifeval_through_xlpo_serve(served, tmp_path, shared_data):
    out = tmp_path / "mifeval"
    results = bench("mifeval", "--data", str(shared_data / "m-ifeval" / "data"), "--limit", "1", "--max-tokens", "32",
                    out=out, url=served, cache=tmp_path / "cache")
    per_language = results["results"]["per_language"]
    assert set(per_language) == {"en", "es", "fr", "ja"}
    for row in per_language.values():
        assert row["n_prompts"] == 1 and row["n_failed"] == 0
        assert 0.0 <= row["instruction_strict_acc"] <= row["instruction_loose_acc"] <= 1.0
    scored = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    assert len(scored) == 4 and all(s["response"] for s in scored)
