"""The quick-start job end to end on the real MTPE data with a tiny model: stages, skipping, outputs."""

from __future__ import annotations

import json

from xlpo.experiments.quickstart import run_quickstart


def test_quickstart_runs_and_reuses_finished_stages(tmp_path, tiny_model_dir, shared_data, monkeypatch):
    monkeypatch.setenv("XLPO_SHARED_DATA", str(shared_data))
    overrides = [f"model.name_or_path={tiny_model_dir}", "training.max_steps=2", "training.progress=false",
                 f"reference.cache_dir={tmp_path / 'ref'}"]
    logs: list[str] = []
    result = run_quickstart(tmp_path / "qs", overrides=overrides, per_split=2, log=logs.append)
    assert result.results_path.is_file()
    results = json.loads(result.results_path.read_text())
    table = results["accuracy_by_language"]
    assert set(table) == {"ar", "it", "nl", "tr", "uk", "vi", "de", "zh", "all"}
    assert table["all"]["pairs"] == 16  # 2 per direction in the evaluation split
    assert results["train_summary"]["steps"] == 2 and results["versions"]["torch"]
    assert any("[2/3] train:" in line for line in logs)

    again: list[str] = []
    run_quickstart(tmp_path / "qs", overrides=overrides, per_split=2, log=again.append)
    assert any("data: reusing" in line for line in again) and any("train: reusing" in line for line in again)


def test_demo_command_prints_the_per_language_table(tmp_path, tiny_model_dir, shared_data, monkeypatch):
    from typer.testing import CliRunner

    from xlpo.cli import _register, app

    _register()
    monkeypatch.setenv("XLPO_SHARED_DATA", str(shared_data))
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "qs"), "--per-split", "1",
                                      f"model.name_or_path={tiny_model_dir}", "training.max_steps=1",
                                      "training.progress=false", f"reference.cache_dir={tmp_path / 'ref'}"])
    assert result.exit_code == 0, result.output
    assert "Reward accuracy on the evaluation split" in result.output
    assert "│ zh" in result.output and "│ all" in result.output
    assert (tmp_path / "qs" / "results.json").is_file()
