"""The shipped CPU config end to end on the embedded SmolLM2 (iteration 0 + one ICR iteration), shrunk a little."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xlpo.icr.config import load_icr_config
from xlpo.icr.pipeline import run_icr
from xlpo.icr.rundir import IterationDir

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_shipped_cpu_config_runs_one_iteration(tmp_path, shared_data):
    prompts = shared_data / "icr" / "ultrafeedback_binarized" / "subset" / "random_1000"
    config = load_icr_config(REPO / "src" / "xlpo" / "configs" / "icr-cpu-smollm2.yaml", [
        f"run_dir={tmp_path / 'run'}", f"prompts.dir={prompts}", "prompts.limit=2", "sampling.max_new_tokens=24",
        "init.train.training.max_steps=2", "init.mtpe_per_split=1"])
    result = run_icr(config, log=print)
    it = IterationDir(result.run_dir, 1)
    manifest = json.loads(it.manifest.read_text())
    assert manifest["policy_adapter"].endswith("iter-0/train/adapter") and manifest["reward_reference"] == "embedded"
    pairs = [json.loads(x) for x in it.pairs("crosslingual").read_text().splitlines()]
    assert {p["lang"] for p in pairs} <= {"en", "es", "de"} and len(pairs) >= 4
    assert any(p["chosen_reward"] != p["rejected_reward"] for p in pairs)  # policy != reference: a real signal
    stats = json.loads(it.stats.read_text())
    assert stats["es"]["wrong_language_share"] is not None
    assert (it.train / "adapter" / "adapter_config.json").is_file()
    assert run_icr(config, log=print).ran == []
