"""A damaged ICR file is redone, never trusted or crashed on: each stage file (checked against the checksum
recorded when it was written), a sampled part, the trained adapter, and the bookkeeping around them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import first_fast, make_random_adapter
from test_icr_pipeline import _config as icr_config

import xlpo.icr.sample as sample_mod
from xlpo.errors import UserError
from xlpo.icr.pipeline import recompute_stats, run_icr
from xlpo.icr.rundir import IterationDir

STAGES = ("sample", "score", "alpha", "pairs", "train", "stats")


def _config(run_dir, model_dir, adapter, shared_data, *extra):
    return icr_config(run_dir, model_dir, adapter, shared_data, "stats.language_id=false",
                      "train.training.report_to=none", *extra)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir, shared_data):
    """A finished run of two iterations, and how to configure a copy of it."""
    root = tmp_path_factory.mktemp("icr-damage")
    adapter = make_random_adapter(tiny_model_dir, root / "adapter", seed=1)
    run_icr(_config(root / "run", tiny_model_dir, adapter, shared_data, "iterations=2"), log=lambda _: None)
    return root / "run", lambda run_dir, *extra: _config(run_dir, tiny_model_dir, adapter, shared_data, *extra)


def _copy(finished, tmp_path) -> tuple[Path, IterationDir, IterationDir]:
    run_dir = tmp_path / "run"
    shutil.copytree(finished[0], run_dir)
    return run_dir, IterationDir(run_dir, 1), IterationDir(run_dir, 2)


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[:len(data) // 2])
    elif how == "flip":  # same size: only the checksum tells
        path.write_bytes(data[:-2] + bytes([data[-2] ^ 0x01]) + data[-1:])
    else:
        path.write_text("{not json\n")


@pytest.mark.parametrize("file, how, stage", first_fast([  # one damaged file in make test, every one in make test-all
    ("samples.jsonl", "flip", "sample"), ("scores.jsonl", "truncate", "score"), ("alpha.json", "garbage", "alpha"),
    ("pairs/crosslingual.jsonl", "truncate", "pairs"), ("stats.json", "garbage", "stats"),
]))
def test_a_damaged_stage_file_is_redone_with_the_stages_after_it(finished, tmp_path, file, how, stage):
    run_dir, it, _ = _copy(finished, tmp_path)
    before = (it.root / file).read_bytes()
    _damage(it.root / file, how)
    logs = []
    result = run_icr(finished[1](run_dir, "iterations=1"), log=logs.append)
    assert result.ran == [f"iter-1/{s}" for s in STAGES[STAGES.index(stage):]]
    assert any(line.startswith(f"iter-1/{stage}: {file}") and "redoing" in line for line in logs), logs
    if stage != "stats":  # (stats.json holds the stages' timings)
        assert (it.root / file).read_bytes() == before  # seeded: done again, it is what it was
    assert run_icr(finished[1](run_dir, "iterations=1"), log=lambda _: None).ran == []


def test_a_damaged_adapter_is_trained_again_and_the_next_iteration_redone(finished, tmp_path):
    run_dir, it1, it2 = _copy(finished, tmp_path)
    _damage(it1.train / "adapter" / "adapter_model.safetensors", "flip")
    logs = []
    result = run_icr(finished[1](run_dir, "iterations=2"), log=logs.append)
    assert result.ran == ["iter-1/train", "iter-1/stats"] + [f"iter-2/{s}" for s in STAGES]
    assert any(line.startswith("iter-1/train: adapter/: adapter_model.safetensors differs") for line in logs)
    assert "iter-2: its policy was trained again: redoing the iteration" in logs
    assert it2.stats.is_file()


def test_a_damaged_part_is_sampled_again(finished, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    config = finished[1](run_dir, "iterations=1")
    it = IterationDir(run_dir, 1)
    calls = []
    original = sample_mod.sample_responses

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(sample_mod, "sample_responses", dying)
    with pytest.raises(KeyboardInterrupt):
        run_icr(config, log=lambda _: None)
    parts = sorted(it.parts("sample").glob("*.jsonl"))
    assert len(parts) == 2
    _damage(parts[0], "flip")
    calls.clear()
    monkeypatch.setattr(sample_mod, "sample_responses", lambda *a, **k: calls.append(1) or original(*a, **k))
    run_icr(config, log=lambda _: None)
    assert len(calls) == 3  # the two missing parts and the damaged one


def test_damaged_bookkeeping_is_not_crashed_on(finished, tmp_path):
    run_dir, it, _ = _copy(finished, tmp_path)
    it.timings.write_text("{not json")
    it.stats.unlink()
    assert run_icr(finished[1](run_dir, "iterations=1"), log=lambda _: None).ran == ["iter-1/stats"]
    assert set(json.loads(it.timings.read_text())) == {"stats"}
    it.checksums.write_text("{not json")  # nothing can be verified: the iteration is redone
    assert run_icr(finished[1](run_dir, "iterations=1"), log=lambda _: None).ran == [f"iter-1/{s}" for s in STAGES]
    (run_dir / "config.yaml").write_text("[unclosed")
    with pytest.raises(UserError, match=r"config.yaml: damaged \(not the YAML config of an ICR run\)"):
        run_icr(finished[1](run_dir, "iterations=1"), log=lambda _: None)


def test_stats_of_a_damaged_run_is_one_line(finished, tmp_path):
    run_dir, it, _ = _copy(finished, tmp_path)
    _damage(it.scores, "truncate")
    with pytest.raises(UserError, match=r"scores.jsonl: scores.jsonl has .* bytes, .* when saved; `xlpo icr run`"):
        recompute_stats(run_dir, log=lambda _: None)
