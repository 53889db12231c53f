"""A training run's folder as a type (`TrainRun`): finished or not, its policy, summary, config and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from xlpo.errors import UserError
from xlpo.model_spec import ModelSpec
from xlpo.train.config import load_config
from xlpo.train.run import TrainRun


def _run(tmp_path: Path, saved: str | None = "adapter", summary: bool = True, overrides=()) -> TrainRun:
    """A run folder as the trainer leaves it (config, metrics, then the saved policy and the summary)."""
    run = TrainRun(tmp_path / "run")
    run.dir.mkdir(parents=True)
    config = load_config(None, list(overrides))
    run.config_file.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    run.metrics_file.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2)))
    if saved:
        (run.dir / saved).mkdir()
    if summary:
        run.summary_file.write_text(json.dumps({"steps": 2, "loss_params": {"beta": 0.1}}))
    return run


def test_a_finished_run_names_its_policy(tmp_path):
    lora = _run(tmp_path / "lora")
    assert lora.finished and lora.policy("base") == ModelSpec("base", str(lora.adapter))
    full = _run(tmp_path / "full", saved="model")
    assert full.finished and full.policy("base") == ModelSpec(str(full.model))
    assert lora.summary() == {"steps": 2, "loss_params": {"beta": 0.1}}


@pytest.mark.parametrize("saved,summary", [(None, True), ("adapter", False)])
def test_a_run_without_its_saved_policy_or_summary_is_not_finished(tmp_path, saved, summary):
    run = _run(tmp_path, saved=saved, summary=summary)
    assert not run.finished and run.policy("base") is None
    assert not run.finished_with(run.train_config())


def test_finished_with_compares_the_config_as_todays_schema_reads_it(tmp_path):
    run = _run(tmp_path, overrides=["training.seed=3"])
    assert run.finished_with(load_config(None, ["training.seed=3"]))
    assert not run.finished_with(load_config(None, ["training.seed=4"]))
    saved = yaml.safe_load(run.config_file.read_text())
    del saved["training"]["progress"]  # a setting a newer xlpo added: its default is what ran
    run.config_file.write_text(yaml.safe_dump(saved))
    assert run.finished_with(load_config(None, ["training.seed=3"]))
    saved["training"]["gone"] = 1  # a setting since removed: another run
    run.config_file.write_text(yaml.safe_dump(saved))
    assert not run.finished_with(load_config(None, ["training.seed=3"]))
    run.config_file.write_text("training: [unclosed\n")  # damaged: another run
    assert not run.finished_with(load_config(None, ["training.seed=3"]))


def test_damaged_files_are_one_line_errors_naming_them(tmp_path):
    run = _run(tmp_path)
    run.summary_file.write_text("{not json")
    with pytest.raises(UserError, match=r"train_summary\.json: not valid JSON"):
        run.summary()
    run.config_file.write_text("- a list\n")
    with pytest.raises(UserError, match=r"config\.yaml: expected a mapping"):
        run.saved_config()


def test_metrics_keep_one_record_per_step_in_order(tmp_path):
    run = _run(tmp_path)
    with run.metrics_file.open("a") as f:
        f.write(json.dumps({"step": 1, "loss": 0.5}) + "\n")  # step 1 logged again (resumed before truncation)
    assert run.metrics() == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.5}]
    assert TrainRun(tmp_path / "absent").metrics() == []


def test_the_run_of_a_saved_adapter_is_named_as_the_adapter_was_given(tmp_path, monkeypatch):
    run = _run(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert TrainRun.of_saved("run/adapter/") == TrainRun(Path("run"))
    assert TrainRun.of_saved(run.adapter) == run
    assert TrainRun.of_saved(tmp_path / "elsewhere" / "adapter") is None
    assert not run.resumable
    run.checkpoints.mkdir()
    assert run.resumable
