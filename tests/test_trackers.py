"""`training.report_to`: metrics.jsonl stays the record; TensorBoard and W&B (offline) get the same numbers
through accelerate's trackers; a tracker that is not installed is a one-line error; no secret lands on disk."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from xlpo.errors import UserError
from xlpo.train.config import TRACKERS, load_config
from xlpo.train.trainer import Trainer, train

FIXTURE = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"
SECRETS = {"HF_TOKEN": "hf_SENTINELsecret0123456789", "WANDB_API_KEY": "wandbSENTINEL" + "0" * 28}


def _config(out: Path, model_dir, *overrides):
    return load_config(None, [f"model.name_or_path={model_dir}", f"data.train={FIXTURE}",
                              f"training.output_dir={out}", f"reference.cache_dir={out.parent / 'ref'}",
                              "training.learning_rate=1e-3", "training.batch_size=4", *overrides])


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_model_dir):
    """One DPO run logging to TensorBoard and to W&B in offline mode, with secrets in the environment."""
    pytest.importorskip("wandb")
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in SECRETS.items():
            mp.setenv(name, value)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):  # keep W&B out of $HOME
            mp.setenv(name, str(root / "wandb-home"))
        result = train(_config(root / "run", tiny_model_dir, "loss.name=dpo", "training.report_to=[tensorboard, wandb]"))
    return result.output_dir


def _jsonl(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # several seconds: make test-all
def test_tensorboard_event_files_hold_the_jsonl_numbers(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((tracked_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    scalars = EventAccumulator(str(tracked_run / "tensorboard" / "xlpo")).Reload()
    for record in _jsonl(tracked_run):
        for key in ("loss", "rewards/accuracies", "rewards/margins", "learning_rate", "grad_norm"):
            logged = {e.step: e.value for e in scalars.Scalars(key)}
            assert logged[record["step"]] == pytest.approx(record[key], rel=1e-6, abs=1e-7), key
    assert any(tag.startswith("rewards/accuracies/") for tag in scalars.Tags()["scalars"])  # per language too


def _wandb_records(run: Path) -> list:
    """The records of the offline W&B run file (LevelDB-log framing: 32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run.glob("wandb/offline-run-*/run-*.wandb")
    raw, pos, block, pending, records = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        pending += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_run_gets_the_config_and_every_logged_step(tracked_run):
    records = _wandb_records(tracked_run)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.project == "xlpo" and run.display_name == "run"
    config = {u.key: json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for u in r.config.update}
    assert config["loss.name"] == "dpo" and config["training.learning_rate"] == 1e-3
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    jsonl = _jsonl(tracked_run)
    assert [h["_step"] for h in history] == [r["step"] for r in jsonl]
    for logged, record in zip(history, jsonl):
        assert logged["loss"] == pytest.approx(record["loss"]) and logged["rewards/accuracies"] == record["rewards/accuracies"]


def test_no_secret_from_the_environment_is_written_anywhere(tracked_run):
    files = [p for p in tracked_run.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files) and (tracked_run / "adapter" / "README.md").is_file()
    for path in files:
        data = path.read_bytes()
        for secret in SECRETS.values():
            assert secret.encode() not in data, f"{secret[:6]}... written to {path}"


def test_report_to_none_writes_only_jsonl(tmp_path, tiny_model_dir):
    result = train(_config(tmp_path / "run", tiny_model_dir, "loss.name=simpo", "training.max_steps=1",
                           "training.report_to=none"))
    assert not (result.output_dir / "tensorboard").exists() and not (result.output_dir / "wandb").exists()
    assert len(_jsonl(result.output_dir)) == 1


def test_a_tracker_that_is_not_installed_is_one_error_before_anything_is_written(tmp_path, tiny_model_dir, monkeypatch):
    import xlpo.train.metrics as metrics

    monkeypatch.setattr(metrics, "get_available_trackers", lambda: ["tensorboard"])
    with pytest.raises(UserError, match=r"training.report_to: mlflow not installed here \(pip install mlflow\)"):
        Trainer(_config(tmp_path / "run", tiny_model_dir, "training.report_to=[tensorboard, mlflow]"))
    assert not (tmp_path / "run").exists()
    # The default's TensorBoard is optional: missing, it is left out with a notice, not an error.
    monkeypatch.setattr(metrics, "get_available_trackers", lambda: [])
    assert metrics.tracker_names(_config(tmp_path / "run", tiny_model_dir).training) == []


def test_tracker_names_are_accelerates():
    from accelerate.utils import LoggerType

    assert set(TRACKERS) == {t.value for t in LoggerType} - {"all"}
    with pytest.raises(UserError, match="training.report_to: unknown tracker 'tensorbord'"):
        load_config(None, ["training.report_to=tensorbord"])
    assert load_config(None, ["training.report_to=tensorboard,wandb"]).training.report_to == ["tensorboard", "wandb"]
    assert load_config(None, ["training.report_to=none"]).training.report_to == []
