"""`xlpo eval rewards` and the capo-mtpe experiment: scored-run files, reference scores, stage reuse."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from xlpo.cli import main
from xlpo.data.mtpe.build import build_mtpe
from xlpo.data.mtpe.common import DIRECTIONS
from xlpo.errors import UserError
from xlpo.eval.rewards import ScoringRequest, score_run
from xlpo.experiments.capo_mtpe import run_experiment
from xlpo.experiments.capo_mtpe_config import RunPlan, load_experiment, run_train_config
from xlpo.experiments.lr_search import choose_lr, next_rate, validation_entry
from xlpo.train.config import load_config
from xlpo.train.trainer import train

FIXTURE = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_score_run_writes_a_scored_run_with_reference(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    run = train(load_config(None, [f"model.name_or_path={tiny_model_dir}", f"data.train={FIXTURE}",
                                   "training.output_dir=runs/capo", "loss.name=capo", "training.max_steps=2",
                                   "training.learning_rate=1e-2", "training.progress=false"]))
    req = ScoringRequest(data=str(FIXTURE), out_dir="scored", model=str(tiny_model_dir), adapter="runs/capo/adapter/")
    out = score_run(req)
    meta = json.loads((out / "scoring.json").read_text())
    assert meta["name"] == "capo" and meta["method"] == "capo" and meta["loss_params"]["alpha"] == 2.0
    assert meta["train_dir"] == "runs/capo"  # as the adapter was given, not resolved to this machine's path
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


def test_experiment_config_seeds_learning_rates_and_split_sizes():
    cfg = load_experiment(None, [])
    assert cfg.seed_list() == [42] and cfg.default_lr() == 5e-4 and not cfg.lr_search.grid
    assert load_experiment(None, ["train.training.seed=3"]).seed_list() == [3]
    cfg = load_experiment(None, ["seeds=[7, 1]", "lr_search.grid=[1e-4, 1e-3]",
                                 "data.per_split={train: 30, validation: 5, evaluation: 20}"])
    assert cfg.seed_list() == [7, 1] and cfg.data.sizes() == {"train": 30, "validation": 5, "evaluation": 20}
    for bad, match in ((["seeds=[1, 1]"], "seeds: .*distinct"), (["lr_search.grid=[1e-4, 0]"], "lr_search.grid"),
                       (["lr_search.grid=[1e-4]", "eval.split=validation"], "chosen on the validation split"),
                       (["data.per_split={train: 30}"], "data.per_split"),
                       (["lr_search.definition=implicit"], "lr_search.definition")):
        with pytest.raises(UserError, match=match):
            load_experiment(None, bad)


def test_capo_ablations_share_capos_learning_rate_unless_asked_to_search(monkeypatch):
    lr_of = {m.name: m.lr_of for m in load_experiment(None, ["alpha_sweep=[4.0]"]).all_methods()}
    assert lr_of == {"dpo": None, "simpo": None, "dpo_nll": None, "capo": None, "capo_inverse": "capo",
                     "capo_alpha4": "capo"}
    searching = load_experiment(None, ["alpha_sweep=[4.0]", "lr_search.ablations=search"]).all_methods()
    assert all(m.lr_of is None for m in searching)
    shared = load_experiment(None, ["methods=[{name: dpo, loss: {name: dpo}}, {name: nll, loss: {name: dpo_nll}, "
                                    "lr_of: dpo}]"]).all_methods()
    assert [m.lr_of for m in shared] == [None, "dpo"]
    for target in ("nowhere", "nll"):  # unknown, or a method that borrows its own rate
        with pytest.raises(UserError, match=f"nll: lr_of '{target}' is not a method that searches its own rate"):
            load_experiment(None, ["methods=[{name: dpo, loss: {name: dpo}}, "
                                   f"{{name: nll, loss: {{name: dpo_nll}}, lr_of: {target}}}]"])


def test_each_run_trains_with_its_own_seed_learning_rate_and_directory(tmp_path):
    cfg = load_experiment(None, ["seeds=[7, 1]"])
    capo = cfg.all_methods()[3]
    plain, searched = RunPlan(capo, 1, 2e-4, lr_in_name=False), RunPlan(capo, 1, 2e-4, lr_in_name=True)
    assert (plain.name, plain.dir_name) == ("capo-s1", "capo-s1")
    assert (searched.name, searched.dir_name) == ("capo-s1", "capo-s1-lr0.0002")
    train_cfg = run_train_config(cfg, searched, tmp_path)
    assert train_cfg.training.seed == 1 and train_cfg.training.learning_rate == 2e-4
    assert train_cfg.training.output_dir == str(tmp_path / "train" / "capo-s1-lr0.0002")
    assert train_cfg.loss.name == "capo" and train_cfg.data.train == str(tmp_path / "data" / "train.jsonl")


def test_a_partial_train_section_completes_the_defaults_it_does_not_name(tmp_path):
    """`train: {training: {seed: 7}}` changes the seed alone: the embedded model's dtype, the LoRA, data and
    other training settings stay the experiment's defaults (they used to be dropped silently)."""
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  training:\n    seed: 7\n", encoding="utf-8")
    default, partial = load_experiment(None, []), load_experiment(str(path), [])
    assert partial.seed_list() == [7] and partial.default_lr() == default.default_lr() == 5e-4
    method = default.all_methods()[0]
    want = run_train_config(default, RunPlan(method, 7, 5e-4, lr_in_name=False), tmp_path).model_dump()
    got = run_train_config(partial, RunPlan(method, 7, 5e-4, lr_in_name=False), tmp_path).model_dump()
    assert got == want and got["model"]["dtype"] == "float32" and got["data"]["max_length"] == 384
    assert load_experiment(None, ["train.training.seed=7"]).train == partial.train  # an override is the same


def _entry(lr, sums, means, ns=(4, 4, 4)):
    accuracy = {lang: {"sum": {"acc": s, "n": n}, "mean": {"acc": m, "n": n}}
                for lang, s, m, n in zip("abc", sums, means, ns)}
    pooled = {d: sum(accuracy[k][d]["acc"] * n for k, n in zip("abc", ns)) / sum(ns) for d in ("sum", "mean")}
    return validation_entry(lr, f"run-{lr}", {**accuracy, "all": {d: {"acc": pooled[d], "n": sum(ns)} for d in pooled}})


def test_validation_entry_has_the_pooled_and_the_macro_average_over_languages():
    e = _entry(1e-3, [0.5, 0.25, 1.0], [0.75, 0.5, 0.0], ns=(10, 100, 10))
    assert e["macro"]["sum"] == pytest.approx((0.5 + 0.25 + 1.0) / 3)  # "all" is not a language
    assert e["pooled"]["sum"] == pytest.approx((5 + 25 + 10) / 120)  # each pair once: the big language weighs most
    assert e["languages"]["b"] == {"sum": 0.25, "mean": 0.5, "n": 100} and "all" not in e["languages"]


def test_choose_lr_weighs_pairs_not_languages_and_ties_within_the_tolerance_go_to_the_larger_rate():
    # Issue 23: one pair flipping in small languages steered the macro rule. Pooled, a 100-pair language
    # outweighs three 9-pair ones.
    ns = (100, 9, 9)
    entries = [_entry(1e-4, [0.30, 0.67, 0.67], [0.5] * 3, ns), _entry(1e-3, [0.40, 0.33, 0.33], [0.5] * 3, ns)]
    assert choose_lr(entries, "sum", "macro") == 1e-4 and choose_lr(entries, "sum", "pooled") == 1e-3
    # Within the tolerance: tied, and a tie goes to the larger rate, wherever it sits in the grid.
    close = [_entry(1e-2, [0.50] * 3, [0.5] * 3), _entry(1e-4, [0.51] * 3, [0.9] * 3), _entry(1e-3, [0.52] * 3, [0.1] * 3)]
    assert choose_lr(close, "sum", "pooled", tolerance=0.02) == 1e-2
    assert choose_lr(close, "sum", "pooled", tolerance=0.015) == 1e-3
    assert choose_lr(close, "sum", "pooled", tolerance=0.0) == 1e-3
    assert choose_lr(close, "mean", "pooled", tolerance=0.0) == 1e-4
    # Equal accuracies reached in another order (the float sums differ in the last bit) tie exactly.
    same = [_entry(1e-3, [0.1, 0.2, 0.3], [0.5] * 3), _entry(1e-4, [0.3, 0.2, 0.1], [0.5] * 3)]
    assert choose_lr(same, "sum", "macro") == 1e-3


def test_next_rate_steps_past_the_top_at_the_grids_own_ratio():
    assert next_rate([5e-4, 1.5e-3]) == 4.5e-3 and next_rate([1.5e-3, 5e-4]) == 4.5e-3
    assert next_rate([1e-4, 1e-3, 1e-2]) == 0.1 and next_rate([2e-3]) == 6e-3


def test_the_lr_search_grows_past_the_top_while_the_top_wins(tmp_path):
    """A method whose best rate is the top of the grid gets the next rate up (at most `extend` times); one whose
    best is inside the grid does not; the result is the same rule applied to everything tried."""
    from xlpo.experiments.capo_mtpe import _search_stage

    cfg = load_experiment(None, ["methods=[{name: dpo, loss: {name: dpo}}, {name: capo, loss: {name: capo}}]",
                                 "capo_inverse=false", "lr_search.grid=[1e-4, 1e-3]", "lr_search.extend=2"])
    # dpo keeps improving with the rate; capo peaks at 1e-2 (tried once the grid has grown).
    curve = {"dpo": {1e-4: 0.3, 1e-3: 0.4, 1e-2: 0.5, 0.1: 0.6}, "capo": {1e-4: 0.3, 1e-3: 0.4, 1e-2: 0.5, 0.1: 0.2}}
    rounds = []

    def run(jobs):
        rounds.append(sorted((j.run.method.name, j.run.lr) for j in jobs))
        dirs = []
        for j in jobs:
            acc = curve[j.run.method.name][j.run.lr]
            cell = {"sum": {"acc": acc, "n": 10}, "mean": {"acc": acc, "n": 10}}
            d = tmp_path / j.name
            d.mkdir()
            (d / "accuracy.json").write_text(json.dumps({"de": cell, "all": cell}))
            dirs.append(d)
        return dirs

    search = _search_stage(cfg, cfg.all_methods(), 42, tmp_path / "base", run, log=lambda m: None)
    assert rounds == [[("capo", 1e-4), ("capo", 1e-3), ("dpo", 1e-4), ("dpo", 1e-3)],
                      [("capo", 1e-2), ("dpo", 1e-2)], [("capo", 0.1), ("dpo", 0.1)]]
    assert search["dpo"]["chosen"] == 0.1 and search["dpo"]["extended"] == [1e-2, 0.1]  # stopped by extend=2
    assert search["capo"]["chosen"] == 1e-2 and [e["lr"] for e in search["capo"]["entries"]] == [1e-4, 1e-3, 1e-2, 0.1]


def test_the_smallest_experiment_runs_and_a_rerun_reuses_every_stage(tmp_path, tiny_model_dir, shared_data,
                                                                      monkeypatch):
    """The fast tier's run of the whole study: two methods, one seed, one pair per direction and split,
    one step each; a rerun finds every stage done (the e2e tests below run the full study)."""
    monkeypatch.setenv("XLPO_SHARED_DATA", str(shared_data))
    overrides = [f"out_dir={tmp_path / 'study'}", "data.per_split=1", "data.directions=[en-de, en-zh]",
                 f"train.model.name_or_path={tiny_model_dir}", "train.training.max_steps=1",
                 f"train.reference.cache_dir={tmp_path / 'ref'}", "train.training.progress=false",
                 "methods=[{name: dpo, loss: {name: dpo}}, {name: capo, loss: {name: capo}}]", "capo_inverse=false",
                 "runner.workers=1"]
    report = run_experiment(load_experiment(None, overrides), log=lambda m: None)
    assert {"report.html", "report.md", "results.json"} <= {p.name for p in report.iterdir()}
    logs: list[str] = []
    run_experiment(load_experiment(None, overrides), log=logs.append)
    assert sum("reusing" in m for m in logs) == 1 + 2 and sum("up to date" in m for m in logs) == 3
    assert not [m for m in logs if m.startswith("train ") and "reusing" not in m]


@pytest.mark.e2e
def test_experiment_end_to_end_on_real_mtpe_data(tmp_path, tiny_model_dir, shared_data, monkeypatch):
    monkeypatch.setenv("XLPO_SHARED_DATA", str(shared_data))
    overrides = [f"out_dir={tmp_path / 'study'}", "data.per_split=1", f"train.model.name_or_path={tiny_model_dir}",
                 "train.training.max_steps=2", f"train.reference.cache_dir={tmp_path / 'ref'}",
                 "alpha_sweep=[4.0]", "train.training.progress=false", "runner.workers=1"]
    cfg = load_experiment(None, overrides)
    report = run_experiment(cfg, log=lambda m: None)
    for name in ("report.html", "report.md", "results.json"):
        assert (report / name).is_file()
    results = json.loads((report / "results.json").read_text())
    assert results["experiment"]["config"]["data"]["per_split"] == 1
    assert results["experiment"]["seeds"] == [42] and results["experiment"]["lr_search"] is None
    scored = sorted(p.name for p in (tmp_path / "study" / "scores").iterdir())
    assert scored == ["base", *(f"{m}-s42" for m in ("capo", "capo_alpha4", "capo_inverse", "dpo", "dpo_nll",
                                                      "simpo"))]
    assert (tmp_path / "study" / "train" / "capo_alpha4-s42" / "adapter").is_dir()
    # One seed per method: no interval of the headline covers seeds.
    macro = results["headline"]["definitions"]["sum"][-1]
    assert macro["lang"] == "macro" and macro["target_minus_baseline"]["covers_seeds"] is False
    assert "once per training seed (42)" in (report / "report.md").read_text()
    # A second run reuses every stage, also a run saved before a setting existed (read at its default),
    # but not one whose saved config differs in a value.
    saved = {m: tmp_path / "study" / "train" / f"{m}-s42" / "config.yaml" for m in ("dpo", "simpo")}
    older = yaml.safe_load(saved["dpo"].read_text())
    del older["training"]["report_to"]
    saved["dpo"].write_text(yaml.safe_dump(older))
    changed = yaml.safe_load(saved["simpo"].read_text())
    changed["training"]["max_steps"] = 1
    saved["simpo"].write_text(yaml.safe_dump(changed))
    logs: list[str] = []
    run_experiment(load_experiment(None, overrides), log=logs.append)
    assert [m.split(":")[0] for m in logs if m.startswith("train ") and "reusing" not in m] == ["train simpo-s42"]
    assert sum("reusing" in m for m in logs) == 1 + 5
    # Trained again from the same config and seed, simpo's adapter is the same: every score stays valid.
    assert sum("up to date" in m for m in logs) == 7


@pytest.mark.e2e
def test_experiment_with_seeds_and_a_learning_rate_chosen_on_validation(tmp_path, tiny_model_dir, shared_data,
                                                                         monkeypatch):
    monkeypatch.setenv("XLPO_SHARED_DATA", str(shared_data))
    out = tmp_path / "study"
    overrides = [f"out_dir={out}", "data.per_split=2", "data.directions=[en-de, en-zh]",
                 f"train.model.name_or_path={tiny_model_dir}", "train.training.max_steps=2",
                 f"train.reference.cache_dir={tmp_path / 'ref'}", "train.training.progress=false",
                 "methods=[{name: dpo, loss: {name: dpo}}, {name: capo, loss: {name: capo}}]", "capo_inverse=true",
                 "seeds=[5, 6]", "lr_search.grid=[1e-4, 3e-2]", "lr_search.extend=0", "runner.workers=1"]
    report = run_experiment(load_experiment(None, overrides), log=lambda m: None)
    exp = json.loads((report / "results.json").read_text())["experiment"]
    # The inverse-RRM ablation is not searched: it trains each seed at CAPO's chosen rate.
    assert set(exp["lr_search"]) == {"dpo", "capo"} and exp["lr_shared"] == {"capo_inverse": "capo"}
    assert exp["learning_rates"]["capo_inverse"] == exp["learning_rates"]["capo"]
    assert not list((out / "validation").glob("capo_inverse*"))
    assert sorted(p.name for p in (out / "train").glob("capo_inverse*")) == [
        f"capo_inverse-s{seed}-lr{exp['learning_rates']['capo']:g}" for seed in (5, 6)]
    assert "capo_inverse used capo's rate" in (report / "report.md").read_text()
    for method in ("dpo", "capo"):
        search = exp["lr_search"][method]
        assert [e["lr"] for e in search["entries"]] == [1e-4, 3e-2] and search["seed"] == 5
        assert search["chosen"] == choose_lr(search["entries"], "sum", "pooled", 0.02) == exp["learning_rates"][method]
        for e in search["entries"]:  # each lr scored on the validation split from its own training run
            scoring = json.loads((out / "validation" / e["run"] / "scoring.json").read_text())
            assert scoring["data"].endswith("validation.jsonl") and scoring["train_dir"].endswith(e["run"])
            accuracy = json.loads((out / "validation" / e["run"] / "accuracy.json").read_text())
            assert e["macro"]["sum"] == pytest.approx((accuracy["de"]["sum"]["acc"] + accuracy["zh"]["sum"]["acc"]) / 2)
            assert e["pooled"]["sum"] == accuracy["all"]["sum"]["acc"]
        lr = f"{search['chosen']:g}"
        for seed in (5, 6):  # the first seed's run is the lr search's run at the chosen lr, reused
            scoring = json.loads((out / "scores" / f"{method}-s{seed}" / "scoring.json").read_text())
            assert (scoring["group"], scoring["seed"], scoring["name"]) == (method, seed, f"{method}-s{seed}")
            assert scoring["data"].endswith("evaluation.jsonl")
            assert scoring["adapter"] == str(out / "train" / f"{method}-s{seed}-lr{lr}" / "adapter")
            train_cfg = yaml.safe_load((out / "train" / f"{method}-s{seed}-lr{lr}" / "config.yaml").read_text())
            assert train_cfg["training"]["seed"] == seed and train_cfg["training"]["learning_rate"] == search["chosen"]
        other = 1e-4 if search["chosen"] == 3e-2 else 3e-2
        assert not (out / "train" / f"{method}-s6-lr{other:g}").exists()
    results = json.loads((report / "results.json").read_text())
    groups = {g["label"]: g for g in results["groups"]}
    assert groups["dpo"]["seeds"] == [5, 6] and groups["capo"]["replicated"] and not groups["base"]["trained"]
    assert exp["base_validation"]["sum"] == pytest.approx(
        sum(v["sum"]["acc"] for k, v in json.loads((out / "validation" / "base" / "accuracy.json").read_text()).items()
            if k != "all") / 2)
    text = (report / "report.md").read_text()
    assert text.index("## Headline") < text.index("Learning rates were chosen on the validation split")
    assert "Validation accuracy of each learning rate tried" in text
    # Interrupted after the lr search: a rerun trains only what is missing and chooses the same rates.
    shutil.rmtree(out / "train" / f"dpo-s6-lr{exp['learning_rates']['dpo']:g}")
    shutil.rmtree(out / "scores" / "dpo-s6")
    logs: list[str] = []
    run_experiment(load_experiment(None, overrides), log=logs.append)
    assert [m for m in logs if m.startswith("train ") and "reusing" not in m] == [
        next(m for m in logs if m.startswith("train dpo-s6"))]
    again = json.loads((report / "results.json").read_text())["experiment"]
    assert again["learning_rates"] == exp["learning_rates"]


@pytest.mark.e2e
def test_two_worker_processes_give_the_same_study_as_one(tmp_path, tiny_model_dir, shared_data, monkeypatch):
    """Jobs taken by two spawned one-thread workers: the same chosen rates and the same scores, file for file."""
    monkeypatch.setenv("XLPO_SHARED_DATA", str(shared_data))
    common = ["data.per_split=2", "data.directions=[en-de, en-zh]", f"train.model.name_or_path={tiny_model_dir}",
              "train.training.max_steps=2", "train.training.progress=false", "capo_inverse=false",
              "methods=[{name: dpo, loss: {name: dpo}}, {name: capo, loss: {name: capo}}]", "seeds=[5, 6]",
              "lr_search.grid=[1e-3, 1e-2]", "lr_search.extend=1", "runner.threads=1"]
    studies = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        report = run_experiment(load_experiment(None, [*common, f"out_dir={out}", f"runner.workers={workers}",
                                                       f"train.reference.cache_dir={tmp_path / f'ref{workers}'}"]),
                                log=lambda m: None)
        studies[workers] = (out, json.loads((report / "results.json").read_text())["experiment"])
    (one, exp1), (two, exp2) = studies[1], studies[2]
    assert exp2["workers"] == "2 workers x 1 thread" and exp1["workers"] == "1 worker x 1 thread"
    assert exp1["learning_rates"] == exp2["learning_rates"] and exp1["lr_search"] == exp2["lr_search"]
    scored = sorted(p.name for p in (one / "scores").iterdir())
    assert scored == sorted(p.name for p in (two / "scores").iterdir()) and len(scored) == 5
    for name in scored:
        assert _rows(one / "scores" / name / "scores.jsonl") == _rows(two / "scores" / name / "scores.jsonl")


def test_workers_resolve_to_one_single_thread_process_per_core_on_a_cpu():
    from xlpo.experiments.runner import Workers

    assert Workers.resolve("auto", "auto", gpu=False, cores=2) == Workers(2, 1)
    assert Workers.resolve("auto", "auto", gpu=False, cores=16) == Workers(4, 4)
    assert Workers.resolve("auto", "auto", gpu=True, cores=16) == Workers(1, 16)
    assert Workers.resolve(1, "auto", gpu=False, cores=2) == Workers(1, 2)
    assert Workers.resolve(3, 2, gpu=False, cores=2) == Workers(3, 2)


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


def test_the_shipped_study_and_demo_configs_stay_valid(shared_data, monkeypatch, capsys):
    """A dry run of capo-mtpe-study-cpu and capo-mtpe-decisive-cpu (the committed studies, docs/study.md) and of
    the demo, so none of them rots."""
    monkeypatch.setenv("XLPO_SHARED_DATA", str(shared_data))
    study = load_experiment("capo-mtpe-study-cpu")
    assert [m.name for m in study.all_methods()] == ["dpo", "simpo", "dpo_nll", "capo", "capo_inverse",
                                                      "capo_alpha1", "capo_alpha4"]
    assert len(study.seed_list()) >= 2 and len(study.lr_search.grid) >= 2 and study.eval.split == "evaluation"
    assert study.data.directions is None  # every direction the data allows
    for method in study.all_methods():  # every run the study trains has a valid training config
        for seed in study.seed_list():
            for lr in study.lr_search.grid:
                run_train_config(study, RunPlan(method, seed, lr, lr_in_name=True), Path(study.out_dir))
    build = build_mtpe(None, per_split=study.data.sizes(), seed=study.data.seed)
    counts = build.manifest["counts"]
    assert set(counts["evaluation"]) == set(DIRECTIONS)
    assert all(n > 0 for split in counts.values() for n in split.values())
    assert {d: counts["evaluation"][d] for d in ("en-de", "en-zh")} == {"en-de": 100, "en-zh": 100}

    decisive = load_experiment("capo-mtpe-decisive-cpu")  # docs/study.md, "The decisive study"
    seeds = {m.name: len(decisive.seeds_of(m)) for m in decisive.all_methods()}
    assert seeds == {"dpo": 8, "capo": 8, "capo_inverse": 3, "simpo": 3}
    assert decisive.data.directions == ["en-de", "en-zh"] and decisive.lr_search.average == "pooled"
    assert (decisive.analysis.baseline, decisive.analysis.target) == ("dpo", "capo")
    grid = list(decisive.lr_search.grid)
    for _ in range(decisive.lr_search.extend):  # every rate the search can reach
        grid.append(next_rate(grid))
    for method in decisive.all_methods():
        for seed in decisive.seeds_of(method):
            for lr in grid:
                run_train_config(decisive, RunPlan(method, seed, lr, lr_in_name=True), Path(decisive.out_dir))
    counts = build_mtpe(decisive.data.directions, per_split=decisive.data.sizes(),
                        seed=decisive.data.seed).manifest["counts"]
    assert counts["evaluation"] == {"en-de": 300, "en-zh": 300} and counts["validation"] == {"en-de": 100, "en-zh": 100}

    demo = load_experiment("capo-mtpe-cpu")
    names = [m.name for m in demo.all_methods()]
    assert {"dpo", "capo"} <= set(names) and len(demo.seed_list()) >= 2
    assert (demo.analysis.baseline, demo.analysis.target) == ("dpo", "capo")
    for name in ("capo-mtpe-study-cpu", "capo-mtpe-decisive-cpu", "capo-mtpe-cpu"):
        monkeypatch.setattr(sys, "argv", ["xlpo", "experiment", "capo-mtpe", name, "--dry-run"])
        with pytest.raises(SystemExit) as info:
            main()
        assert info.value.code == 0 and "lr_search:" in capsys.readouterr().out
