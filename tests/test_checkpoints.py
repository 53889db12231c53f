"""Verifiable saves: checksum manifests, resuming from the newest intact checkpoint, a moved run folder,
damaged adapters and reference-cache entries, and saved files that are the same from run to run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xlpo.checksums import MANIFEST, folder_problem, manifest_folder
from xlpo.errors import UserError
from xlpo.models import check_adapter
from xlpo.train.config import load_config
from xlpo.train.reference import load_cached, save_cached
from xlpo.train.trainer import train

FIXTURE = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"
REPO = Path(__file__).resolve().parents[1]


def _config(out, model_dir, *overrides):
    return load_config(None, [
        f"model.name_or_path={model_dir}", f"data.train={FIXTURE}", f"training.output_dir={out}",
        f"reference.cache_dir={out.parent / 'refcache'}", "training.progress=false", "training.report_to=none",
        "training.learning_rate=1e-3", "training.batch_size=2", "loss.name=dpo", *overrides])


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[:len(data) // 2])
    elif how == "flip":  # same size, one byte changed: only the checksum can tell
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    elif how == "garbage":
        path.write_text("{not json")
    else:
        path.unlink()


# -- the manifest ------------------------------------------------------------------------------------
def test_a_manifest_finds_truncated_changed_and_missing_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"x" * 1000)
    (tmp_path / "sub" / "b.json").write_text('{"k": 1}')
    (tmp_path / "README.md").write_text("card")
    manifest_folder(tmp_path, skip=["README.md"])
    assert folder_problem(tmp_path) is None
    (tmp_path / "README.md").write_text("a card that evaluations changed")
    assert folder_problem(tmp_path) is None  # left out of the manifest
    _damage(tmp_path / "a.bin", "flip")
    assert folder_problem(tmp_path) == "a.bin differs from what was saved (checksum)"
    _damage(tmp_path / "a.bin", "truncate")
    assert folder_problem(tmp_path) == "a.bin has 500 bytes, 1,000 when saved"
    (tmp_path / "sub" / "b.json").unlink()
    assert folder_problem(tmp_path) in ("a.bin has 500 bytes, 1,000 when saved", "sub/b.json is missing")
    (tmp_path / MANIFEST).write_text("{")
    assert folder_problem(tmp_path) == f"{MANIFEST} is damaged"
    (tmp_path / MANIFEST).unlink()
    assert folder_problem(tmp_path).startswith(f"no {MANIFEST}")


# -- checkpoints -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory, tiny_model_dir):
    """A finished 3-step run with checkpoints at steps 1 and 2."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(_config(out, tiny_model_dir, "training.max_steps=3", "training.save_steps=1", "training.keep_checkpoints=2"))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000001", "step-0000002"]
    return out


@pytest.mark.parametrize("name, how, says", [
    ("model.safetensors", "truncate", "model.safetensors has"),  # the trained (adapter) weights
    ("model.safetensors", "flip", "model.safetensors differs"),
    ("xlpo_state.json", "garbage", "xlpo_state.json has"),
    ("optimizer.bin", "truncate", "optimizer.bin has"),
    ("custom_checkpoint_0.pkl", "flip", "custom_checkpoint_0.pkl differs"),  # the scheduler
    ("random_states_0.pkl", "delete", "random_states_0.pkl is missing"),
    (MANIFEST, "delete", f"no {MANIFEST}"),
])
def test_resume_skips_a_damaged_checkpoint_for_the_newest_intact_one(tmp_path, tiny_model_dir, checkpointed, capsys,
                                                                     name, how, says):
    out = tmp_path / "run"
    shutil.copytree(checkpointed, out)
    _damage(out / "checkpoints" / "step-0000002" / name, how)
    result = train(_config(out, tiny_model_dir, "training.max_steps=3", "training.save_steps=1",
                           "training.keep_checkpoints=2"), resume=True)
    assert result.summary["resumed_from_step"] == 1
    printed = capsys.readouterr().out
    assert f"skipping step-0000002 ({says}" in printed
    assert "continuing from" in printed and "step-0000001 (step 1, the newest intact checkpoint)" in printed
    assert folder_problem(out / "checkpoints" / "step-0000002") is None  # saved again as the run went on


def test_resume_with_no_intact_checkpoint_stops_in_one_line_before_loading_a_model(tmp_path, tiny_model_dir,
                                                                                   checkpointed, monkeypatch):
    import xlpo.train.distributed as loading  # the trainer loads its models through it

    out = tmp_path / "run"
    shutil.copytree(checkpointed, out)
    _damage(out / "checkpoints" / "step-0000001" / "optimizer.bin", "truncate")
    _damage(out / "checkpoints" / "step-0000002" / "model.safetensors", "flip")
    monkeypatch.setattr(loading, "load_weights", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(UserError, match=r"^--resume: no intact checkpoint in .*checkpoints: step-0000002 "
                                        r"\(model.safetensors differs .*\); step-0000001 \(optimizer.bin has .*\); "
                                        r"start again without --resume$"):
        train(_config(out, tiny_model_dir, "training.max_steps=3", "training.save_steps=1"), resume=True)


def test_a_moved_run_folder_resumes_with_its_data_and_adapter_moved_too(tmp_path, tiny_model_dir):
    from conftest import make_random_adapter

    adapter = make_random_adapter(tiny_model_dir, tmp_path / "start", seed=1)
    data = tmp_path / "pairs.jsonl"
    shutil.copy(FIXTURE, data)
    common = ["training.max_steps=3", "training.save_steps=2"]
    train(_config(tmp_path / "old" / "run", tiny_model_dir, f"model.adapter={adapter}", f"data.train={data}", *common))
    (tmp_path / "old" / "run" / "adapter").rename(tmp_path / "old" / "run" / "unfinished")  # as if killed at step 3
    moved = tmp_path / "new" / "renamed"
    moved.parent.mkdir()
    (tmp_path / "old" / "run").rename(moved)
    adapter = adapter.rename(tmp_path / "start-moved")
    data = data.rename(tmp_path / "pairs-moved.jsonl")
    result = train(_config(moved, tiny_model_dir, f"model.adapter={adapter}", f"data.train={data}", *common),
                   resume=True)
    assert result.summary["resumed_from_step"] == 2
    # The rest of the config must still match, and an adapter is compared by what it holds.
    other = make_random_adapter(tiny_model_dir, tmp_path / "other", seed=2)
    with pytest.raises(UserError, match="made with a different config"):
        train(_config(moved, tiny_model_dir, f"model.adapter={other}", f"data.train={data}", *common), resume=True)


def test_a_new_run_removes_the_later_checkpoints_an_earlier_run_left(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    train(_config(out, tiny_model_dir, "training.max_steps=5", "training.save_steps=2", "training.keep_checkpoints=3"))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    train(_config(out, tiny_model_dir, "training.max_steps=3", "training.save_steps=2", "training.keep_checkpoints=3"))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002"]


# -- adapters ----------------------------------------------------------------------------------------
def test_a_damaged_adapter_is_a_one_line_error(tmp_path, checkpointed):
    adapter = tmp_path / "adapter"
    shutil.copytree(checkpointed / "adapter", adapter)
    assert (adapter / MANIFEST).is_file()
    check_adapter(str(adapter))
    config = (adapter / "adapter_config.json").read_text()
    (adapter / "adapter_config.json").write_text("{not json")
    with pytest.raises(UserError, match=r"adapter_config.json: not valid JSON \(Expecting property name"):
        check_adapter(str(adapter))
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 4}))
    with pytest.raises(UserError, match=r"adapter_config.json: expected a PEFT adapter config .*peft_type"):
        check_adapter(str(adapter))
    (adapter / "adapter_config.json").write_text(config)
    _damage(adapter / "adapter_model.safetensors", "truncate")
    with pytest.raises(UserError, match=r"adapter_model.safetensors: not a readable safetensors file"):
        check_adapter(str(adapter))
    shutil.copy(checkpointed / "adapter" / "adapter_model.safetensors", adapter)
    _damage(adapter / "adapter_model.safetensors", "flip")
    with pytest.raises(UserError, match=r"damaged: adapter_model.safetensors differs from what was saved"):
        check_adapter(str(adapter))
    (adapter / MANIFEST).unlink()  # an adapter saved before xlpo wrote manifests (or by another tool)
    check_adapter(str(adapter))


@pytest.mark.parametrize("key", ["model.adapter", "reference.adapter"])
def test_training_checks_its_adapters_before_loading_a_model(tmp_path, tiny_model_dir, checkpointed, monkeypatch,
                                                             key):
    import xlpo.train.distributed as loading  # the trainer loads its models through it

    adapter = tmp_path / "adapter"
    shutil.copytree(checkpointed / "adapter", adapter)
    (adapter / "adapter_config.json").write_text("{")
    monkeypatch.setattr(loading, "load_weights", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(UserError, match=r"adapter_config.json: not valid JSON"):
        train(_config(tmp_path / "run", tiny_model_dir, f"{key}={adapter}", "training.max_steps=1"))
    assert not (tmp_path / "run").exists()


def test_adapter_config_lists_target_modules_in_a_fixed_order(checkpointed):
    saved = json.loads((checkpointed / "adapter" / "adapter_config.json").read_text())["target_modules"]
    assert len(saved) > 2 and saved == sorted(saved)


@pytest.mark.slow  # two trainings in subprocesses (~13 s): make test-all
def test_two_runs_save_the_same_files(tmp_path, tiny_model_dir):
    """Every file a run saves is the same byte for byte in a second process (another hash seed), except
    what measures time: metrics' and the summary's speeds, the model card's training time, and
    TensorBoard's event files."""
    out = tmp_path / "run"
    overrides = [f"model.name_or_path={tiny_model_dir}", f"data.train={FIXTURE}", f"training.output_dir={out}",
                 f"reference.cache_dir={tmp_path / 'cache'}", "training.progress=false", "training.report_to=none",
                 "training.batch_size=2", "training.max_steps=2", "training.save_steps=1", "loss.name=dpo"]
    code = ("from xlpo.train.config import load_config; from xlpo.train.trainer import train; "
            f"train(load_config(None, {overrides!r}))")
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
        runs.append(out.rename(tmp_path / f"run{seed}"))
        shutil.rmtree(tmp_path / "cache")
    files = sorted(p.relative_to(runs[0]) for p in runs[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(runs[1]) for p in runs[1].rglob("*") if p.is_file())
    timed = {"metrics.jsonl", "train_summary.json", "adapter/README.md"}
    differ = [str(f) for f in files if (runs[0] / f).read_bytes() != (runs[1] / f).read_bytes()]
    assert set(differ) <= timed and {"metrics.jsonl", "train_summary.json"} <= set(differ)
    cards = [[line for line in (r / "adapter" / "README.md").read_text().splitlines()
              if not line.startswith("| training time |")] for r in runs]
    assert cards[0] == cards[1]  # whole seconds: the same on a quiet machine, not on a busy one
    for a, b in zip(*((r / "metrics.jsonl").read_text().splitlines() for r in runs)):
        a, b = json.loads(a), json.loads(b)
        assert {k: v for k, v in a.items() if k not in ("tokens_per_second", "step_seconds")} == \
               {k: v for k, v in b.items() if k not in ("tokens_per_second", "step_seconds")}


# -- the reference cache -------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["truncate", "flip", "garbage", "no checksum"])
def test_a_damaged_reference_cache_entry_is_not_trusted(tmp_path, how):
    values = torch.randn(5, 2)
    path = save_cached(tmp_path, "key", values, {"data": "fp"})
    assert torch.equal(load_cached(tmp_path, "key", 5), values)
    assert load_cached(tmp_path, "key", 6) is None
    if how == "no checksum":  # an entry written before entries carried one: it cannot be verified
        from safetensors.torch import save_file

        save_file({"logps": values}, str(path), metadata={"data": "fp"})
    else:
        _damage(path, how)
    assert load_cached(tmp_path, "key", 5) is None


def test_a_damaged_reference_cache_entry_is_computed_again(tmp_path, tiny_model_dir):
    first = train(_config(tmp_path / "a", tiny_model_dir, "training.max_steps=1"))
    entry = next((tmp_path / "refcache").glob("*.safetensors"))
    _damage(entry, "flip")
    again = train(_config(tmp_path / "b", tiny_model_dir, "training.max_steps=1"))
    assert again.summary["reference"].startswith("computed") and first.summary["reference"].startswith("computed")
    assert again.final_metrics["loss"] == pytest.approx(first.final_metrics["loss"], abs=1e-6)
    assert load_cached(tmp_path / "refcache", entry.stem, first.summary["pairs"]) is not None
