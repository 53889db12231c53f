"""Smoke test: the TRL comparison script still runs end to end (one tiny setting, one step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "vs_trl.py"
pytestmark = pytest.mark.slow


def test_vs_trl_smoke(tmp_path, shared_data):
    out = tmp_path / "vs_trl.json"
    env = {**os.environ, "XLPO_SHARED_DATA": str(shared_data)}
    done = subprocess.run([sys.executable, str(SCRIPT), "--settings", "a", "--threads", "1", "--methods", "dpo",
                           "--steps", "1", "--warmup", "1", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert len(results) == 1
    row = results[0]
    assert row["xlpo"]["pairs"] == row["trl"]["pairs"] == 16
    assert row["speed_ratio"] > 0 and row["memory_ratio"] > 0 and 0 < row["xlpo"]["mfu"] < 1
    assert row["xlpo"]["layout"] == "shared prompt" and json.loads(out.read_text())["xlpo_layout"] == "shared"
    assert "dpo" in done.stdout and "TRL DPOTrainer" in done.stdout
