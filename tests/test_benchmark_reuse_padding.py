"""Smoke test: the reference-reuse and padding benchmark runs end to end (16 pairs, 2 DPO betas)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reuse_and_padding.py"
pytestmark = pytest.mark.slow


def test_reuse_and_padding_smoke(tmp_path, shared_data):
    out = tmp_path / "reuse_and_padding.json"
    env = {**os.environ, "XLPO_SHARED_DATA": str(shared_data)}
    done = subprocess.run([sys.executable, str(SCRIPT), "--pairs", "16", "--betas", "0.1,0.2", "--others", "",
                           "--repeats", "1", "--layout-repeats", "1", "--threads", "1", "--out", str(out)],
                          check=False, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["pairs"] == 16 and result["steps_per_run"] == 2 and result["threads"] == result["torch_threads"] == 1
    assert result["versions"]["torch"] and result["versions"]["xlpo"]

    sweep = result["sweep"]
    assert [r["params"] for r in sweep["runs"]] == [{"beta": 0.1}, {"beta": 0.2}]
    modes = sweep["modes"]
    assert set(modes) == {"shared", "per_run", "live"}
    # One cache for the sweep: only its first run computes the reference; the others load it.
    assert modes["shared"]["reference_passes"] == 1
    assert [r["reference"].split()[0] for r in sweep["sweeps"][0]["runs"]] == ["computed,", "cache"]
    assert modes["per_run"]["reference_passes"] == 2 and modes["live"]["reference_passes"] == 2
    for row in modes.values():
        assert row["losses_match"], row
        assert row["median_sweep_seconds"] > 0 and row["seconds_ratio_to_shared"] > 0
    assert modes["per_run"]["max_abs_diff_vs_shared"] <= 1e-6
    for sweep_run in sweep["sweeps"]:
        assert all(len(run["steps"]) == 2 for run in sweep_run["runs"])

    layouts = result["layouts"]
    variants = layouts["variants"]
    grouped, ungrouped, two_rows = variants["grouped_shared"], variants["ungrouped_shared"], variants["grouped_two_rows"]
    assert 0 <= grouped["padding_fraction"] <= ungrouped["padding_fraction"] < 1
    assert grouped["computed_tokens"] == ungrouped["computed_tokens"]  # the same pairs, batched differently
    assert grouped["computed_tokens"] < two_rows["computed_tokens"]  # each prompt computed once, not twice
    assert grouped["runs"][0]["summary_layout"] == "shared prompt" and two_rows["runs"][0]["summary_layout"] == "two rows"
    assert layouts["max_abs_loss_diff_shared_vs_two_rows"] < 1e-3
    assert layouts["grouping"]["pairs_per_second_ratio"] > 0 and layouts["prompt_sharing"]["pairs_per_second_ratio"] > 0
    assert all(r["pairs_trained"] == 16 for v in variants.values() for r in v["runs"])
    assert "per_run" in done.stdout and "grouped_two_rows" in done.stdout
