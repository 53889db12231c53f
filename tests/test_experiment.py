"""`xlpo eval rewards` and the capo-mtpe experiment: scored-run files, reference scores, stage reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xlpo.errors import UserError
from xlpo.eval.rewards import ScoringRequest, score_run
from xlpo.experiments.capo_mtpe import run_experiment
from xlpo.experiments.capo_mtpe_config import load_experiment
from xlpo.train.config import load_config
from xlpo.train.trainer import train

FIXTURE = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_score_run_writes_a_scored_run_with_reference(tmp_path, tiny_model_dir):
    run = train(load_config(None, [f"model.name_or_path={tiny_model_dir}", f"data.train={FIXTURE}",
                                   f"training.output_dir={tmp_path / 'capo'}", "loss.name=capo", "training.max_steps=2",
                                   "training.learning_rate=1e-2", "training.progress=false"]))
    req = ScoringRequest(data=str(FIXTURE), out_dir=str(tmp_path / "scored"), model=str(tiny_model_dir),
                         adapter=str(run.output_dir / "adapter"))
    out = score_run(req)
    meta = json.loads((out / "scoring.json").read_text())
    assert meta["name"] == "capo" and meta["method"] == "capo" and meta["loss_params"]["alpha"] == 2.0
    assert meta["train_dir"] == str(run.output_dir.resolve())
    rows = _rows(out / "scores.jsonl")
    assert len(rows) == 12 and {r["lang"] for r in rows} == {"de", "zh", "en"}
    fixture = {r["id"]: r for r in _rows(FIXTURE)}
    for row in rows:
        assert row["chars_chosen"] == len(fixture[row["id"]]["chosen"])
        assert row["ref_logp_chosen"] is not None and row["ref_logp_chosen"] != row["logp_chosen"]
    # The reference scores are the base model's own scores.
    base = score_run(ScoringRequest(data=str(FIXTURE), out_dir=str(tmp_path / "base"), model=str(tiny_model_dir)))
    base_rows = {r["id"]: r for r in _rows(base / "scores.jsonl")}
    for row in rows:
        assert row["ref_logp_chosen"] == pytest.approx(base_rows[row["id"]]["logp_chosen"], abs=1e-4)
        assert base_rows[row["id"]]["ref_logp_chosen"] is None
    accuracy = json.loads((out / "accuracy.json").read_text())
    assert set(accuracy) == {"de", "zh", "en", "all"} and "implicit" in accuracy["all"]
    # Unchanged inputs: not scored again (the file is not rewritten).
    stamp = (out / "scores.jsonl").stat().st_mtime_ns
    messages = []
    score_run(req, log=messages.append)
    assert (out / "scores.jsonl").stat().st_mtime_ns == stamp and "up to date" in messages[0]


def test_experiment_config_validates_every_method_up_front(tmp_path):
    with pytest.raises(UserError, match=r"train \(method capo\): loss.rrm"):
        load_experiment(None, ["methods=[{name: capo, loss: {name: capo, rrm: sideways}}]"])
    with pytest.raises(UserError, match="data.per_split"):
        load_experiment(None, ["data.per_split=0"])
    cfg = load_experiment(None, ["alpha_sweep=[1.0, 2.0, 4.0]"])
    names = [m.name for m in cfg.all_methods()]
    assert names == ["dpo", "simpo", "dpo_nll", "capo", "capo_inverse", "capo_alpha1", "capo_alpha4"]


def test_experiment_end_to_end_on_real_mtpe_data(tmp_path, tiny_model_dir, shared_data, monkeypatch):
    monkeypatch.setenv("XLPO_SHARED_DATA", str(shared_data))
    overrides = [f"out_dir={tmp_path / 'study'}", "data.per_split=1", f"train.model.name_or_path={tiny_model_dir}",
                 "train.training.max_steps=2", f"train.reference.cache_dir={tmp_path / 'ref'}",
                 "alpha_sweep=[4.0]", "train.training.progress=false"]
    cfg = load_experiment(None, overrides)
    report = run_experiment(cfg, log=lambda m: None)
    for name in ("report.html", "report.md", "results.json"):
        assert (report / name).is_file()
    results = json.loads((report / "results.json").read_text())
    assert results["experiment"]["config"]["data"]["per_split"] == 1
    scored = sorted(p.name for p in (tmp_path / "study" / "scores").iterdir())
    assert scored == ["base", "capo", "capo_alpha4", "capo_inverse", "dpo", "dpo_nll", "simpo"]
    # A second run reuses every stage.
    logs: list[str] = []
    run_experiment(load_experiment(None, overrides), log=logs.append)
    assert sum("reusing" in m for m in logs) == 1 + 6 and sum("up to date" in m for m in logs) == 7


def test_reference_scores_are_reused_from_the_base_run(tmp_path, tiny_model_dir, monkeypatch):
    run = train(load_config(None, [f"model.name_or_path={tiny_model_dir}", f"data.train={FIXTURE}",
                                   f"training.output_dir={tmp_path / 'dpo'}", "loss.name=dpo", "training.max_steps=1",
                                   "training.progress=false", f"reference.cache_dir={tmp_path / 'ref'}"]))
    base = score_run(ScoringRequest(data=str(FIXTURE), out_dir=str(tmp_path / "base"), model=str(tiny_model_dir)))
    common = dict(data=str(FIXTURE), model=str(tiny_model_dir), adapter=str(run.output_dir / "adapter"))
    import xlpo.eval.rewards as rewards

    def no_reference_pass(*args, **kwargs):
        raise AssertionError("the base scores should have been reused")

    with monkeypatch.context() as patch:
        patch.setattr(rewards, "reference_mode", no_reference_pass)
        reused = score_run(ScoringRequest(out_dir=str(tmp_path / "reused"), reference_scores=str(base), **common))
    fresh = score_run(ScoringRequest(out_dir=str(tmp_path / "fresh"), **common))
    for a, b in zip(_rows(reused / "scores.jsonl"), _rows(fresh / "scores.jsonl")):
        assert a["ref_logp_chosen"] == pytest.approx(b["ref_logp_chosen"], abs=1e-4)
        assert a["ref_logp_rejected"] == pytest.approx(b["ref_logp_rejected"], abs=1e-4)
