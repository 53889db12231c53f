"""benchmarks/gpu_check.py at its --smoke sizes on the CPU, so that the prepared GPU check never rots;
and the recorder's promises: a section's file is complete before the next starts, a failed check fails
the run, GPU sizes refuse to run without a GPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_check  # noqa: E402
import gpu_check_numerics  # noqa: E402


def _load(out: Path, section: str) -> dict:
    return json.loads((out / f"{section}.json").read_text())


@pytest.mark.slow
def test_smoke_runs_every_section_and_every_check_passes(tmp_path, tokenizer):
    out = tmp_path / "out"
    assert gpu_check.main(["--smoke", "--out", str(out)]) == 0
    for section in gpu_check.SECTIONS:
        data = _load(out, section)
        assert data["status"] == "done"
        for name, item in data["items"].items():
            assert "error" not in item and "skipped" not in item, (section, name, item)
            assert all((item.get("checks") or {}).values()), (section, name, item["checks"])
    env = _load(out, "env")["items"]["environment"]
    assert env["device"] == "cpu" and env["versions"]["torch"] and env["matmul_ceiling_gflops"] > 0
    numerics = _load(out, "numerics")["items"]
    assert set(numerics) == {"chunked_vs_full_logits/fp32", "chunked_vs_full_logits/bf16",
                             *(f"shared_vs_two_rows/{d}/{a}" for d in ("fp32", "bf16") for a in ("sdpa", "eager"))}
    assert numerics["chunked_vs_full_logits/fp32"]["vs_full_logits"]["value_max_rel"] < 1e-5
    assert numerics["shared_vs_two_rows/fp32/sdpa"]["attention_ops"]["shared"]  # the profiler saw attention
    training = _load(out, "training")["items"]
    for loss in ("dpo", "simpo", "capo", "kto"):
        for mode in ("lora", "full"):
            run = training[f"{loss}/{mode}"]
            assert len(run["losses"]) == 2 and run["layout"] == "shared prompt"
    assert training["resume_reproduces_uninterrupted_run"]["resumed_from_step"] == 2
    for name in ("gradient_checkpointing_equals_plain/lora", "gradient_checkpointing_equals_plain/full",
                 "grad_accumulation_equals_larger_batch"):
        assert training[name]["max_loss_difference"] <= training[name]["tolerance"]
    speed = _load(out, "speed")["items"]
    assert speed["xlpo/shared_prompt"]["layout"] == "shared prompt" and speed["xlpo/two_rows"]["layout"] == "two rows"
    assert speed["trl/DPOTrainer"]["pairs_per_second"] > 0  # TRL is in the dev extras
    assert speed["ratios_and_targets"]["speed_vs_trl"] > 0


def test_a_cut_off_run_keeps_the_sections_it_finished(tmp_path, tokenizer, monkeypatch):
    def killed(section, *args):
        section.run("first item", lambda: {"measured": 1.0, "checks": {"ok": True}})
        raise KeyboardInterrupt  # the machine's time limit, in the middle of a section

    monkeypatch.setattr(gpu_check_numerics, "run", killed)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--smoke", "--out", str(tmp_path), "--sections", "env,numerics,training"])
    assert _load(tmp_path, "env")["status"] == "done"
    numerics = _load(tmp_path, "numerics")
    assert numerics["status"] == "running" and numerics["items"]["first item"]["measured"] == 1.0
    assert not (tmp_path / "training.json").exists()


def test_a_failed_check_or_an_error_fails_the_run_and_is_recorded(tmp_path, tokenizer, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "environment", lambda device: {"checks": {"bf16_supported": False}})
    assert gpu_check.main(["--smoke", "--out", str(tmp_path), "--sections", "env"]) == 1
    assert "FAILED: env/environment/bf16_supported" in capsys.readouterr().out

    monkeypatch.setattr(gpu_check, "environment", lambda device: 1 / 0)
    assert gpu_check.main(["--smoke", "--out", str(tmp_path), "--sections", "env"]) == 1
    item = _load(tmp_path, "env")["items"]["environment"]
    assert item["error"].startswith("ZeroDivisionError") and "traceback" in item


def test_time_budget_skips_what_does_not_fit_and_gpu_sizes_need_a_gpu(tmp_path, tokenizer, monkeypatch):
    section = gpu_check.Section(tmp_path, "numerics", deadline=0.0)
    assert section.run("too long", lambda: {"checks": {"ok": False}}, estimate_s=10) is None
    assert _load(tmp_path, "numerics")["items"]["too long"]["skipped"].startswith("time budget")
    assert section.failures() == []
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
