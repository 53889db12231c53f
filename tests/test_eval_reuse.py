"""`xlpo eval rewards` and the capo-mtpe experiment check every input before a model loads, and reuse a
finished result (scored run, trained adapter, built data) only when its files are what was saved."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

import xlpo.eval.rewards as rewards_module
from xlpo.cli import main
from xlpo.errors import UserError
from xlpo.eval.rewards import ScoringRequest, score_run
from xlpo.experiments import capo_mtpe
from xlpo.experiments.capo_mtpe_config import first_runs, load_experiment
from xlpo.train.config import load_config
from xlpo.train.trainer import train

FIXTURE = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    train(load_config(None, [f"model.name_or_path={tiny_model_dir}", f"data.train={FIXTURE}", f"training.output_dir={out}",
                             "loss.name=dpo", "training.max_steps=1", "training.progress=false",
                             "training.report_to=none", f"reference.cache_dir={out.parent / 'ref'}"]))
    return out


def _no_model(monkeypatch):
    monkeypatch.setattr(rewards_module, "load_policy", lambda *a, **k: pytest.fail("a model was loaded"))


@pytest.mark.parametrize("problem", ["adapter_config.json", "adapter weights", "out is a file", "data"])
def test_eval_rewards_checks_its_inputs_before_loading_a_model(tmp_path, tiny_model_dir, trained, monkeypatch,
                                                               problem):
    adapter, out, data = tmp_path / "adapter", tmp_path / "scored", FIXTURE
    shutil.copytree(trained / "adapter", adapter)
    if problem == "adapter_config.json":
        (adapter / "adapter_config.json").write_text("{")
        says = r"adapter_config.json: not valid JSON"
    elif problem == "adapter weights":
        (adapter / "adapter_model.safetensors").write_bytes(b"\x00" * 10)
        says = r"adapter_model.safetensors: not a readable safetensors file"
    elif problem == "out is a file":
        out.write_text("a file")
        says = r"out_dir: .*scored is a file, not a directory"
    else:
        data = tmp_path / "pairs.jsonl"
        data.write_text('{"prompt": "p", "chosen": "a"}\n')
        says = r"pairs.jsonl:1"
    _no_model(monkeypatch)
    with pytest.raises(UserError, match=says):
        score_run(ScoringRequest(data=str(data), out_dir=str(out), model=str(tiny_model_dir), adapter=str(adapter)))
    assert not out.is_dir()


def test_eval_rewards_cli_checks_the_dtype_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["xlpo", "eval", "rewards", str(FIXTURE), "--out", str(tmp_path / "s"),
                                      "--dtype", "float8"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2 and "--dtype" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_a_damaged_scored_run_is_scored_again_and_not_reused_as_reference(tmp_path, tiny_model_dir, trained):
    base_req = ScoringRequest(data=str(FIXTURE), out_dir=str(tmp_path / "base"), model=str(tiny_model_dir))
    base = score_run(base_req)
    first = (base / "scores.jsonl").read_bytes()
    (base / "scores.jsonl").write_bytes(first[:len(first) // 2])
    logs = []
    score_run(base_req, log=logs.append)
    assert not any("up to date" in m for m in logs) and (base / "scores.jsonl").read_bytes() == first
    score_run(base_req, log=logs.append)
    assert "up to date" in logs[-1]
    # A damaged base run is not reused as the adapter's reference (before, a traceback once the model loaded).
    (base / "scoring.json").write_text("{")
    req = ScoringRequest(data=str(FIXTURE), out_dir=str(tmp_path / "adapter"), model=str(tiny_model_dir),
                         adapter=str(trained / "adapter"), reference_scores=str(base))
    rows = [json.loads(line) for line in (score_run(req) / "scores.jsonl").read_text().splitlines()]
    assert all(row["ref_logp_chosen"] is not None for row in rows)


# -- the experiment ----------------------------------------------------------------------------------
def _experiment(tmp_path, model_dir, *extra):
    return load_experiment(None, [f"out_dir={tmp_path / 'study'}", "data.per_split=1",
                                  f"train.model.name_or_path={model_dir}", "train.training.max_steps=1",
                                  f"train.reference.cache_dir={tmp_path / 'ref'}", "train.training.progress=false",
                                  "train.training.report_to=none", *extra])


@pytest.mark.parametrize("problem", ["out_dir is a file", "adapter", "model"])
def test_the_experiment_checks_its_inputs_before_building_anything(tmp_path, tiny_model_dir, trained, shared_data,
                                                                   monkeypatch, problem):
    monkeypatch.setenv("XLPO_SHARED_DATA", str(shared_data))
    extra, model = [], tiny_model_dir
    if problem == "out_dir is a file":
        (tmp_path / "study").write_text("a file")
        says = r"out_dir: .*study is a file"
    elif problem == "adapter":
        adapter = tmp_path / "adapter"
        shutil.copytree(trained / "adapter", adapter)
        (adapter / "adapter_config.json").write_text("[1]")
        extra, says = [f"train.model.adapter={adapter}"], r"adapter_config.json: expected a PEFT adapter config"
    else:
        model, says = tmp_path / "no-such-model", r"model .*no-such-model.*: cannot load its tokenizer"
    monkeypatch.setattr(capo_mtpe, "make_mtpe", lambda *a, **k: pytest.fail("data were built"))
    with pytest.raises(UserError, match=says):
        capo_mtpe.run_experiment(_experiment(tmp_path, model, *extra), log=lambda _: None)


def test_the_experiment_builds_damaged_data_and_trains_a_damaged_adapter_again(tmp_path, tiny_model_dir,
                                                                              shared_data, monkeypatch):
    monkeypatch.setenv("XLPO_SHARED_DATA", str(shared_data))
    config = _experiment(tmp_path, tiny_model_dir)
    out, logs = Path(config.out_dir), []
    data = capo_mtpe._data_stage(config, out, logs.append)
    train_rows = (data / "train.jsonl").read_bytes()
    (data / "train.jsonl").write_bytes(train_rows[:-10])
    del logs[:]
    capo_mtpe._data_stage(config, out, logs.append)
    assert "building" in logs[0] and (data / "train.jsonl").read_bytes() == train_rows
    run = first_runs(config)[0]
    run_dir = capo_mtpe._train_stage(config, run, out, logs.append).dir
    capo_mtpe._train_stage(config, run, out, logs.append)
    assert "reusing" in logs[-1]
    weights = run_dir / "adapter" / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    capo_mtpe._train_stage(config, run, out, logs.append)
    assert "reusing" not in logs[-1] and logs[-1].startswith(f"train {run.dir_name}: loss")
