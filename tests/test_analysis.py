"""Analysis metrics against hand-computed values, and `xlpo analyze` end to end on synthetic runs.

The synthetic runs are written the way the experiment command writes them: one group per method,
its runs "<method>-s<seed>" are replicates. tests/test_analysis_null.py holds the simulations.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student_t

from xlpo.errors import UserError
from xlpo.eval.analysis.accuracy import accuracy_table, reward_differences
from xlpo.eval.analysis.compare import (
    Difference,
    accuracy_comparison,
    format_difference,
    mean_difference,
    shift_comparison,
    statistic_difference,
)
from xlpo.eval.analysis.correlation import fisher_interval, pearson
from xlpo.eval.analysis.driver import analyze
from xlpo.eval.analysis.groups import Group, alpha_sweep, group_accuracy, group_runs
from xlpo.eval.analysis.kde import kde_weighted_mean, kde_weighted_means
from xlpo.eval.analysis.paper import claim_best_everywhere, claim_shift_everywhere
from xlpo.eval.analysis.runs import ScoredRun, load_run, load_training_log, tokenization_diagnostics


def _row(i, lang, a, b, tc=10, tr=10, ref=None, chars=(40, 40)):
    return {"id": f"p{i}", "lang": lang, "logp_chosen": a, "logp_rejected": b, "tokens_chosen": tc,
            "tokens_rejected": tr, "chars_chosen": chars[0], "chars_rejected": chars[1],
            "ref_logp_chosen": None if ref is None else ref[0], "ref_logp_rejected": None if ref is None else ref[1]}


def _group(label, *row_lists, method="dpo"):
    """A group of runs (one per row list, seeds 1, 2, ...) held in memory."""
    return Group(label, [ScoredRun(f"{label}-s{k}", method, Path("."), {"group": label, "seed": k}, rows)
                         for k, rows in enumerate(row_lists, 1)])


# --------------------------------------------------------------------------------------------- accuracy

def test_accuracy_hand_computed():
    rows = [
        _row(0, "de", -10, -12, 10, 10, ref=(-11, -12)),  # sum: yes; mean: -1.0 > -1.2 yes; implicit: 1 > 0 yes
        _row(1, "de", -10, -8, 20, 10, ref=(-9, -9)),     # sum: no;  mean: -0.5 > -0.8 yes; implicit: -1 > 1 no
        _row(2, "de", -5, -5, 10, 10, ref=(-5, -6)),      # sum: tie -> no; mean: tie -> no; implicit: 0 > 1 no
        _row(3, "it", -3, -4, 3, 2),                      # sum: yes; mean: -1 > -2 yes; implicit: no ref
    ]
    t = accuracy_table(rows, n_boot=200, seed=1)
    assert list(t) == ["de", "it", "all"]
    assert t["de"]["sum"]["acc"] == pytest.approx(1 / 3) and t["de"]["sum"]["n"] == 3
    assert t["de"]["mean"]["acc"] == pytest.approx(2 / 3)
    assert t["de"]["implicit"]["acc"] == pytest.approx(1 / 3) and t["de"]["implicit"]["n"] == 3
    assert "implicit" not in t["it"]  # no reference log-probs in that group
    assert t["all"]["sum"]["acc"] == pytest.approx(2 / 4) and t["all"]["sum"]["n"] == 4
    assert t["all"]["mean"]["acc"] == pytest.approx(3 / 4)
    assert t["all"]["implicit"]["n"] == 3  # only rows with a reference
    assert t["it"]["sum"] == {"acc": 1.0, "lo": 1.0, "hi": 1.0, "n": 1}


def test_accuracy_ci_seeded_contains_point_and_degenerate():
    rng = np.random.default_rng(0)
    rows = [_row(i, "de" if i % 2 else "zh", float(-10 + rng.normal()), float(-10 + rng.normal() - 0.3))
            for i in range(200)]
    a = accuracy_table(rows, n_boot=300, seed=7)
    b = accuracy_table(rows, n_boot=300, seed=7)
    c = accuracy_table(rows, n_boot=300, seed=8)
    assert a == b  # seeded: identical
    assert a["all"]["sum"]["lo"] != c["all"]["sum"]["lo"] or a["all"]["sum"]["hi"] != c["all"]["sum"]["hi"]
    for lang in ("de", "zh", "all"):
        for d in ("sum", "mean"):
            e = a[lang][d]
            assert e["lo"] <= e["acc"] <= e["hi"]
            assert e["hi"] - e["lo"] < 0.35
    # binomial standard error check on the pooled interval: width ~ 2 * 1.96 * sqrt(p(1-p)/n)
    p, n = a["all"]["sum"]["acc"], 200
    assert a["all"]["sum"]["hi"] - a["all"]["sum"]["lo"] == pytest.approx(2 * 1.96 * math.sqrt(p * (1 - p) / n),
                                                                          rel=0.3)
    # a language's interval does not depend on the other languages present
    only_de = accuracy_table([r for r in rows if r["lang"] == "de"], n_boot=300, seed=7)
    assert only_de["de"] == a["de"]
    # all correct: [1, 1]
    good = [_row(i, "uk", -1.0, -2.0) for i in range(30)]
    e = accuracy_table(good, n_boot=100)["uk"]["sum"]
    assert (e["acc"], e["lo"], e["hi"]) == (1.0, 1.0, 1.0)
    # no bootstrap
    assert accuracy_table(good, n_boot=0)["all"]["sum"]["lo"] is None
    with pytest.raises(ValueError):
        accuracy_table(good, n_boot=-1)


def test_accuracy_difference_paired():
    base = [_row(0, "de", -1, -2), _row(1, "de", -2, -1), _row(2, "it", -2, -1), _row(3, "it", -2, -1)]
    targ = [_row(0, "de", -1, -2), _row(1, "de", -1, -2), _row(2, "it", -1, -2), _row(3, "it", -2, -1),
            _row(9, "it", -1, -2)]  # p9 unmatched: ignored
    d = accuracy_comparison(_group("t", targ), _group("b", base))
    assert d.pooled.n == 4
    assert d.languages["de"].diff == pytest.approx(0.5)   # 1.0 - 0.5
    assert d.languages["it"].diff == pytest.approx(0.5)   # 0.5 - 0.0
    assert d.pooled.diff == pytest.approx(0.5) and d.macro.diff == pytest.approx(0.5)
    assert d.pooled.lo <= 0.5 <= d.pooled.hi
    assert not d.pooled.covers_seeds and d.pooled.status == "underpowered"  # one seed each, 4 pairs


# --------------------------------------------------------------------------------------------- reward differences, KDE

def test_reward_differences_kinds():
    rows = [_row(0, "de", -10, -12, 10, 4, ref=(-11, -11)), _row(1, "it", -3, -4, 3, 2)]
    s = reward_differences(rows, "sum")
    assert s["de"].tolist() == [2.0] and s["it"].tolist() == [1.0] and s["all"].tolist() == [2.0, 1.0]
    m = reward_differences(rows, "mean")
    assert m["de"].tolist() == [pytest.approx(-1.0 + 3.0)] and m["it"].tolist() == [pytest.approx(-1 + 2)]
    imp = reward_differences(rows, "implicit")
    assert imp["all"].tolist() == [pytest.approx(1.0 - (-1.0))] and "it" not in imp
    assert reward_differences(rows, "sum", beta=0.1)["de"].tolist() == [pytest.approx(0.2)]
    with pytest.raises(ValueError):
        reward_differences([_row(0, "de", -1, -2)], "implicit")


def test_kde_weighted_mean_symmetric_and_degenerate():
    sym = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]) + 5.0
    assert kde_weighted_mean(sym, "grid") == pytest.approx(5.0, abs=1e-9)
    assert kde_weighted_mean(sym, "density") == pytest.approx(5.0, abs=1e-9)
    assert kde_weighted_mean([2.0, 2.0, 2.0]) == 2.0
    assert kde_weighted_mean([7.5]) == 7.5
    assert math.isnan(kde_weighted_mean([]))
    # grid method = mean of the KDE density = the sample mean (Gaussian kernels are symmetric)
    skew = np.random.default_rng(0).exponential(2.0, size=300)
    assert kde_weighted_mean(skew, "grid") == pytest.approx(skew.mean(), abs=1e-3)
    # density-weighted mean leans toward the mode (below the mean of a right-skewed sample)
    assert kde_weighted_mean(skew, "density") < skew.mean() - 0.3
    # translation equivariance
    assert kde_weighted_mean(skew + 10, "density") == pytest.approx(kde_weighted_mean(skew, "density") + 10)
    with pytest.raises(ValueError):
        kde_weighted_mean(sym, "mode")


def test_kde_shift_sign_and_pairing():
    rng = np.random.default_rng(1)
    base, targ = [], []
    for i in range(60):
        lang = "de" if i < 30 else "vi"
        m = float(rng.normal(0, 2))
        base.append(_row(i, lang, -20 + m, -20))
        targ.append(_row(i, lang, -20 + m + (1.0 if lang == "de" else -2.0), -20))
    s = shift_comparison(_group("t", targ), _group("b", base), n_boot=50, seed=0)
    assert s.languages["de"].diff == pytest.approx(1.0, abs=1e-3) and s.languages["de"].n == 30
    assert s.languages["vi"].diff == pytest.approx(-2.0, abs=1e-3)
    # a constant per-pair shift: every paired resample gives the same shift
    assert s.languages["de"].lo == pytest.approx(1.0, abs=1e-3) and s.languages["de"].hi == pytest.approx(1.0, abs=1e-3)
    assert s.pooled.diff == pytest.approx(-0.5, abs=1e-3)
    assert shift_comparison(_group("t", targ), _group("b", base), method="mean").languages["de"].diff == pytest.approx(1.0)
    rev = shift_comparison(_group("b", base), _group("t", targ), n_boot=0)
    assert rev.languages["de"].diff == pytest.approx(-1.0, abs=1e-3) and rev.languages["de"].lo is None
    # runs that scored different pairs are compared on the pairs both scored
    unpaired = shift_comparison(_group("t", targ), _group("b", base[:29] + base[30:]), n_boot=20)
    assert unpaired.languages["de"].n == 29 and unpaired.languages["de"].lo <= unpaired.languages["de"].hi


# --------------------------------------------------------------------------------------------- correlation

def test_pearson_anticorrelated_and_small_n():
    bleu = {"ar": 10.0, "de": 20.0, "it": 30.0, "vi": 40.0, "zh": 50.0}
    shift = {"ar": 4.0, "de": 3.0, "it": 2.0, "vi": 1.0, "zh": 0.0, "all": 99.0}
    c = pearson(bleu, shift)
    assert c["r"] == pytest.approx(-1.0) and c["p"] == pytest.approx(0.0, abs=1e-9)
    assert c["n"] == 5 and c["languages"] == ["ar", "de", "it", "vi", "zh"]
    two = pearson({"ar": 1.0, "de": 2.0}, {"ar": 3.0, "de": 1.0})
    assert two["n"] == 2 and two["r"] == pytest.approx(-1.0) and "n < 3" in two["note"] and two["ci_lo"] is None
    assert pearson({"ar": 1.0}, {"ar": 2.0})["r"] is None
    assert pearson({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 1.0, "b": 2.0, "c": 3.0})["r"] is None  # constant
    # hand-computed: x = 1,2,3,4; y = 2,1,4,3 -> r = 0.6
    c = pearson({"a": 1, "b": 2, "c": 3, "d": 4}, {"a": 2, "b": 1, "c": 4, "d": 3})
    assert c["r"] == pytest.approx(0.6) and c["ci_lo"] < 0.6 < c["ci_hi"]
    lo, hi, p = fisher_interval(-0.47, 8)
    assert lo == pytest.approx(-0.882, abs=2e-3) and hi == pytest.approx(0.350, abs=2e-3) and p == pytest.approx(
        0.240, abs=5e-3)


# --------------------------------------------------------------------------------------------- tokenization, logs

def test_tokenization_diagnostics_hand_computed():
    rows = [_row(0, "zh", -20, -30, 10, 15, chars=(20, 30)), _row(1, "zh", -10, -10, 10, 5, chars=(20, 10))]
    t = tokenization_diagnostics(rows)["zh"]
    assert t["tokens_per_char_chosen"] == pytest.approx(20 / 40)
    assert t["tokens_per_char_rejected"] == pytest.approx(20 / 40)
    assert t["tokens_per_char"] == pytest.approx(40 / 80)
    assert t["logp_per_token_chosen"] == pytest.approx(-30 / 20)
    assert t["logp_per_token_rejected"] == pytest.approx(-40 / 20)
    no_chars = [dict(r, chars_chosen=None) for r in rows]
    assert tokenization_diagnostics(no_chars)["zh"]["tokens_per_char_chosen"] is None


def test_training_log_resume_keeps_last(tmp_path):
    lines = [{"step": 1, "loss": 0.7, "rewards/accuracies": 0.5, "rewards/accuracies/de": 0.4},
             {"step": 2, "loss": 0.6, "rewards/accuracies": 0.6},
             {"step": 2, "loss": 0.55, "rewards/accuracies": 0.65, "rewards/accuracies/de": 0.7}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    c = load_training_log(tmp_path)
    assert c["steps"] == [1, 2] and c["loss"] == [0.7, 0.55] and c["accuracy_by_lang"]["de"] == [0.4, 0.7]
    assert load_training_log(tmp_path / "missing") is None


# --------------------------------------------------------------------------------------------- synthetic runs

LANGS = ("ar", "de", "vi", "zh")
EDIT_RATE = {"ar": 0.6, "de": 0.15, "it": 0.2, "nl": 0.25, "tr": 0.45, "uk": 0.5, "vi": 0.65, "zh": 0.3}
TOKENS_PER_CHAR = {"ar": 0.45, "de": 0.3, "it": 0.28, "nl": 0.3, "tr": 0.4, "uk": 0.5, "vi": 0.42, "zh": 0.9}
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega").split()


def make_synthetic_runs(root: Path, langs=LANGS, per_lang: int = 30, steps: int = 20, seed: int = 0,
                        sweep: bool = True, name_override: dict | None = None, seeds=(42, 7),
                        gains: dict | None = None) -> tuple[list[Path], Path]:
    """Scored runs (base, dpo, simpo, dpo_nll, capo, capo alpha sweep, capo inverse) and their data file.

    Each trained method is a group of runs "<method>-s<seed>" (scoring.json "group" and "seed", as
    the experiment command writes them), one per seed in `seeds`; the base model is one run. Seeds
    shift a run's margins a little, per language. CAPO's margin gain grows with the language's edit
    rate (low BLEU), so the BLEU-shift correlation is negative by construction, as in the paper.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    data, pairs = [], []
    for lang in langs:
        for k in range(per_lang):
            words = list(rng.choice(WORDS, size=12))
            rej = [w if rng.random() > EDIT_RATE[lang] else str(rng.choice(WORDS)) for w in words]
            pid = f"{lang}-{k}"
            chosen, rejected = " ".join(words), " ".join(rej)
            data.append({"id": pid, "prompt": "Translate", "chosen": chosen, "rejected": rejected, "lang": lang})
            pairs.append((pid, lang, len(chosen), len(rejected), float(rng.normal(0.0, 3.0))))
    data_file = root / "train.jsonl"
    data_file.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in data), encoding="utf-8")

    specs = [("base", "base", None, 0.0), ("dpo", "dpo", {"beta": 0.1}, 1.0),
             ("simpo", "simpo", {"beta": 2.0, "gamma": 0.5}, 0.5), ("dpo_nll", "dpo_nll", {"beta": 0.1}, 0.3),
             ("capo", "capo", {"beta": 0.1, "alpha": 2.0, "rrm": "paper"}, 2.0)]
    if sweep:
        specs += [("capo-a1", "capo", {"beta": 0.1, "alpha": 1.0, "rrm": "paper"}, 1.5),
                  ("capo-a4", "capo", {"beta": 0.1, "alpha": 4.0, "rrm": "paper"}, -1.0),
                  ("capo-inverse", "capo", {"beta": 0.1, "alpha": 2.0, "rrm": "inverse"}, 2.5)]
    base_scores = {}
    dirs = []
    for group, method, params, gain in specs:
        gain = (gains or {}).get(group, gain)
        label = (name_override or {}).get(group, group)
        for train_seed in (None,) if params is None else seeds:
            name = label if train_seed is None else f"{label}-s{train_seed}"
            run_dir = _synthetic_run(root, name, method, params, gain, train_seed, pairs, base_scores, langs, steps,
                                     data_file, rng)
            meta = json.loads((run_dir / "scoring.json").read_text())
            meta.update(group=label, seed=train_seed)
            (run_dir / "scoring.json").write_text(json.dumps(meta), encoding="utf-8")
            dirs.append(run_dir)
    return dirs, data_file


def _synthetic_run(root, name, method, params, gain, train_seed, pairs, base_scores, langs, steps, data_file, rng):
    run = root / "runs" / name
    run.mkdir(parents=True, exist_ok=True)
    seed_effect = {lang: float(rng.normal(0, 0.15)) if params else 0.0 for lang in langs}
    rows = []
    for pid, lang, cc, cr, m0 in pairs:
        tc, tr = max(1, round(cc * TOKENS_PER_CHAR[lang])), max(1, round(cr * TOKENS_PER_CHAR[lang]))
        lp_r = -1.5 * tr + float(rng.normal(0, 1))
        extra = gain * (1 + 4 * EDIT_RATE[lang]) if method == "capo" else gain
        lp_c = lp_r - 1.0 + m0 + extra + seed_effect[lang] + float(rng.normal(0, 0.5))
        if params is None:
            base_scores[pid] = (lp_c, lp_r)
        ref = base_scores[pid] if method in ("dpo", "dpo_nll") else (None, None)
        rows.append({"id": pid, "lang": lang, "logp_chosen": lp_c, "logp_rejected": lp_r, "tokens_chosen": tc,
                     "tokens_rejected": tr, "chars_chosen": cc, "chars_rejected": cr,
                     "ref_logp_chosen": ref[0], "ref_logp_rejected": ref[1]})
    (run / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    train_dir = None
    if params is not None:
        train_dir = root / "train" / name
        train_dir.mkdir(parents=True, exist_ok=True)
        start = 0.693 - 0.1 * params.get("alpha", 0.0)
        with open(train_dir / "metrics.jsonl", "w", encoding="utf-8") as f:
            for step in range(1, steps + 1):
                loss = start * math.exp(-step / (steps * (1.0 + 0.2 * params.get("alpha", 0.0))))
                rec = {"step": step, "loss": loss + float(rng.normal(0, 0.02)),
                       "rewards/accuracies": min(1.0, 0.4 + 0.02 * step + float(rng.normal(0, 0.05)))}
                for lang in langs:
                    rec[f"rewards/accuracies/{lang}"] = float(rng.uniform(0.3, 1.0))
                f.write(json.dumps(rec) + "\n")
        (train_dir / "config.yaml").write_text(
            f"loss:\n  name: {method}\ndata:\n  train: {data_file}\ntraining:\n  seed: {train_seed}\n",
            encoding="utf-8")
        (train_dir / "train_summary.json").write_text(json.dumps({"loss": method, "loss_params": params}))
    meta = {"name": name, "method": method, "loss_params": params,
            "model": "embedded", "adapter": None if train_dir is None else str(train_dir / "adapter"),
            "beta": 0.1, "data": str(data_file), "train_dir": None if train_dir is None else str(train_dir)}
    (run / "scoring.json").write_text(json.dumps(meta), encoding="utf-8")
    return run


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    dirs, data_file = make_synthetic_runs(root)
    results = analyze(dirs, root / "report", n_boot=60, seed=0)
    return root, dirs, data_file, results


def test_analyze_end_to_end(synthetic):
    root, dirs, data_file, results = synthetic
    out = root / "report"
    for name in ("results.json", "report.md", "report.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 500
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["baseline_group"] == "dpo" and saved["config"]["target_group"] == "capo"
    assert saved["versions"]["numpy"] == np.__version__ and saved["seeds"]["bootstrap"] == 0
    assert saved["seeds"]["runs"]["capo-s42"] == 42 and saved["seeds"]["runs"]["capo-s7"] == 7
    groups = {g["label"]: g for g in saved["groups"]}
    assert groups["capo"]["runs"] == ["capo-s42", "capo-s7"] and groups["capo"]["seeds"] == [42, 7]
    assert groups["base"]["runs"] == ["base"] and not groups["base"]["trained"] and groups["base"]["replicated"]
    assert set(saved["plots"]) == {"accuracy", "kde", "shift", "bleu_shift", "training", "alpha", "tokenization"}
    for rel in saved["plots"].values():
        png = (out / rel).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 400_000
    # BLEU from the target's training data; lower BLEU where more words were edited
    assert saved["bleu"]["file"] == str(data_file) and "training data" in saved["bleu"]["source"]
    bleu = {k: v["bleu"] for k, v in saved["bleu"]["languages"].items()}
    assert bleu["de"] > bleu["zh"] > bleu["ar"] > bleu["vi"]
    # CAPO's gain grows with the edit rate: shift > 0 everywhere, negative correlation with BLEU
    shift = saved["shift"]["grid"]
    assert all(shift[k]["diff"] > 0 for k in LANGS)
    assert shift["vi"]["diff"] > shift["de"]["diff"]
    corr = saved["correlation"]["grid"]
    assert corr["n"] == 4 and corr["r"] < -0.8
    # alpha sweep: capo-a1, capo, capo-a4 (paper orientation) and capo-inverse
    sweep = {e["name"]: e for e in saved["alpha_sweep"]}
    assert set(sweep) == {"capo-a1", "capo", "capo-a4", "capo-inverse"}
    assert sweep["capo-a4"]["final_loss"] < sweep["capo-a1"]["final_loss"]
    # the comparison plots leave out the sweep siblings but keep the inverse orientation
    compared = [g["label"] for g in saved["groups"] if g["compared"]]
    assert compared == ["base", "dpo", "simpo", "dpo_nll", "capo", "capo-inverse"]
    verdicts = {v["claim"]: v for v in saved["against_paper"]}
    assert verdicts["capo has higher average reward accuracy than dpo"]["verdict"] == "agrees"
    assert verdicts["capo is worse than dpo in en"]["verdict"] == "cannot check"  # no en in the data
    assert verdicts["evaluation accuracy drops for alpha > 2"]["verdict"] == "agrees"
    orient = saved["rrm_orientation"]
    assert orient["paper"] == "capo" and orient["inverse"] == "capo-inverse"
    assert any(v["verdict"] == "cannot check" for v in saved["against_paper"])
    assert all(v["verdict"] in saved["legend"]["verdicts"] for v in saved["against_paper"])
    md = (out / "report.md").read_text()
    assert md.index("## Headline") < md.index("## Against the paper") < md.index("## Setup")
    for heading in ("## Setup", "## Seed-to-seed spread", "## Reward accuracy per language",
                    "## Reward-difference distributions",
                    "## Shift and BLEU correlation", "## Training curves", "## Alpha sweep",
                    "## Tokenization diagnostics", "## Against the paper"):
        assert heading in md
    assert "](plots/kde.png)" in md


def test_analyze_missing_methods_says_so(tmp_path):
    dirs, _ = make_synthetic_runs(tmp_path, langs=("de", "it"), per_lang=12, steps=5, sweep=False)
    only = [d for d in dirs if d.name in ("base", "capo-s42", "capo-s7")]
    res = analyze(only, tmp_path / "r", n_boot=0, plots=False)
    assert res["config"]["baseline_group"] is None and res["shift"]["grid"] == {}
    v = {x["claim"]: x for x in res["against_paper"]}
    assert v["capo has higher average reward accuracy than dpo"]["verdict"] == "cannot check"
    assert "no scored run for dpo" in v["capo has higher average reward accuracy than dpo"]["detail"]
    assert "No shift" in (tmp_path / "r" / "report.md").read_text()


def test_load_run_errors(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        load_run(tmp_path / "nope")
    run = tmp_path / "run"
    run.mkdir()
    (run / "scoring.json").write_text(json.dumps({"name": "x", "method": "dpo"}))
    (run / "scores.jsonl").write_text(json.dumps({"id": "a", "lang": "de", "logp_chosen": -1.0}) + "\n")
    with pytest.raises(UserError, match=r"scores.jsonl:1: missing field 'logp_rejected'"):
        load_run(run)
    (run / "scores.jsonl").write_text(json.dumps(_row(0, "de", -1, -2, tc=0)) + "\n")
    with pytest.raises(UserError, match="tokens_chosen"):
        load_run(run)


def test_ambiguous_target_and_alpha_sweep_helper(tmp_path):
    dirs, _ = make_synthetic_runs(tmp_path, langs=("de",), per_lang=8, steps=4, seeds=(42,))
    without_main = [d for d in dirs if d.name != "capo-s42"]  # "capo" is then only a method, held by 3 runs
    with pytest.raises(UserError, match="matches 3 runs"):
        analyze(without_main, tmp_path / "r", target="capo", n_boot=0, plots=False)
    with pytest.raises(UserError, match="one seed of group 'capo'"):
        analyze(dirs, tmp_path / "r", target="capo-s42", n_boot=0, plots=False)
    groups = group_runs([load_run(d) for d in dirs])
    acc = {r.name: accuracy_table(r.rows, n_boot=0) for g in groups for r in g.runs}
    sweep = alpha_sweep(groups, {g.label: group_accuracy(g, acc) for g in groups}, "capo")
    assert [(e["rrm"], e["alpha"]) for e in sweep] == [("inverse", 2.0), ("paper", 1.0), ("paper", 2.0),
                                                       ("paper", 4.0)]


def test_cli_analyze(tmp_path):
    from typer.testing import CliRunner

    from xlpo.cli import _register, app

    _register()
    dirs, _ = make_synthetic_runs(tmp_path, langs=("de", "zh"), per_lang=10, steps=4, sweep=False)
    res = CliRunner().invoke(app, ["analyze", *map(str, dirs), "--out", str(tmp_path / "rep"), "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    assert "Reward accuracy" in res.output and "report.html" in res.output
    assert (tmp_path / "rep" / "report.html").is_file()
    bad = CliRunner().invoke(app, ["analyze", str(tmp_path / "missing"), "--out", str(tmp_path / "rep2")])
    assert bad.exit_code == 2


def test_kde_weighted_means_match_scipy_gaussian_kde():
    """The closed-form estimator equals scipy.stats.gaussian_kde evaluated on a fine grid (grid method)
    and at the sample points (density method); the vectorised form equals the scalar one."""
    from scipy.stats import gaussian_kde

    rng = np.random.default_rng(3)
    samples = np.stack([rng.normal(0, 1, 40), rng.exponential(1.0, 40), np.full(40, 2.5), rng.gamma(2.0, 1.0, 40)])
    for row in samples[[0, 1, 3]]:
        kde = gaussian_kde(row)
        h = math.sqrt(kde.covariance[0, 0])
        grid = np.linspace(row.min() - 3 * h, row.max() + 3 * h, 20001)
        f = kde(grid)
        assert kde_weighted_mean(row, "grid") == pytest.approx(np.trapezoid(grid * f, grid) / np.trapezoid(f, grid),
                                                               abs=1e-7)
        w = kde(row)
        assert kde_weighted_mean(row, "density") == pytest.approx(np.sum(w * row) / np.sum(w), abs=1e-10)
    for method in ("grid", "density"):
        fast = kde_weighted_means(samples, method)
        np.testing.assert_allclose(fast, [kde_weighted_mean(r, method) for r in samples], rtol=0, atol=1e-12)
        assert fast[2] == 2.5


def test_loss_params_defaults_filled(tmp_path):
    """A CAPO run whose config omitted alpha trained with the default: the analysis knows its alpha."""
    dirs, _ = make_synthetic_runs(tmp_path, langs=("de",), per_lang=5, steps=3, sweep=False)
    capo = next(d for d in dirs if d.name == "capo-s42")
    meta = json.loads((capo / "scoring.json").read_text())
    (Path(meta["train_dir"]) / "train_summary.json").unlink()
    meta["loss_params"] = {"beta": 0.1}
    (capo / "scoring.json").write_text(json.dumps(meta))
    run = load_run(capo)
    assert run.alpha == 2.0 and run.rrm == "paper"
    (Path(meta["train_dir"]) / "train_summary.json").write_text(json.dumps({"loss_params": {"alpha": 3.0,
                                                                                            "rrm": "inverse"}}))
    run = load_run(capo)
    assert run.alpha == 3.0 and run.rrm == "inverse"


def test_too_few_pairs_give_no_verdict(tmp_path):
    """Three pairs per language: a percentile bootstrap of three pairs is no interval, so no verdict."""
    dirs, _ = make_synthetic_runs(tmp_path, langs=("de", "zh"), per_lang=3, steps=3, sweep=False)
    res = analyze(dirs, tmp_path / "r", n_boot=50, plots=False)
    v = {x["claim"]: x["verdict"] for x in res["against_paper"]}
    assert v["capo has higher average reward accuracy than dpo"] == "inconclusive"
    assert v["capo has the highest accuracy in every language except en"] == "inconclusive"
    assert v["capo shifts the reward-difference distribution to the right of dpo's in every language"] == "inconclusive"


# --------------------------------------------------------------------------------------------- seeds as replicates

def test_group_and_seed_from_scoring_json_or_training_config(tmp_path):
    dirs, _ = make_synthetic_runs(tmp_path, langs=("de",), per_lang=4, steps=2, sweep=False)
    capo = next(d for d in dirs if d.name == "capo-s7")
    run = load_run(capo)
    assert (run.group, run.seed, run.trained) == ("capo", 7, True)
    meta = json.loads((capo / "scoring.json").read_text())
    meta.pop("group"), meta.pop("seed")
    (capo / "scoring.json").write_text(json.dumps(meta))
    run = load_run(capo)
    assert run.group == "capo-s7" and run.seed == 7  # its own group; the seed from the training config
    base = load_run(next(d for d in dirs if d.name == "base"))
    assert not base.trained and base.seed is None


def test_group_runs_rejects_mixed_groups_and_repeated_seeds():
    rows = [_row(0, "de", -1, -2)]
    a = ScoredRun("a", "dpo", Path("."), {"group": "g", "seed": 1}, rows)
    b = ScoredRun("b", "capo", Path("."), {"group": "g", "seed": 2}, rows)
    with pytest.raises(UserError, match="differ in method"):
        group_runs([a, b])
    c = ScoredRun("c", "dpo", Path("."), {"group": "g", "seed": 1}, rows)
    with pytest.raises(UserError, match="two runs with seed 1"):
        group_runs([a, c])
    e = ScoredRun("e", "capo", Path("."), {"seed": 2}, rows)  # no group: its own
    groups = group_runs([a, ScoredRun("d", "dpo", Path("."), {"group": "g", "seed": 5}, rows), e])
    assert [(g.label, [r.name for r in g.runs]) for g in groups] == [("g", ["a", "d"]), ("e", ["e"])]


def _slow_interval(t, b, langs, t_trained, b_trained, macro, others=()):
    """The seed-and-pair interval written out with loops (the obvious version of compare.mean_difference): each
    trained side's seed variance is the larger of its own and the one pooled over every trained group with two
    seeds or more (the two compared, and `others`), with the pool's degrees of freedom."""
    names = sorted(set(langs))
    idx = {lang: [i for i in range(len(langs)) if langs[i] == lang] for lang in names}
    weight = {lang: (1 / len(names) if macro else len(idx[lang]) / len(langs)) for lang in names}

    def stat(row):
        return sum(weight[lang] * sum(row[i] for i in idx[lang]) / len(idx[lang]) for lang in names)

    def var(xs):
        m = sum(xs) / len(xs)
        return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)

    ts, bs = [stat(r) for r in t], [stat(r) for r in b]
    diff = sum(ts) / len(ts) - sum(bs) / len(bs)
    replicated = [[stat(r) for r in g] for g in [t if t_trained else [], b if b_trained else [], *others] if len(g) > 1]
    pool_df = sum(len(g) - 1 for g in replicated)
    pooled = sum((len(g) - 1) * var(g) for g in replicated) / pool_df
    parts = [(max(var(s), pooled) / len(s), pool_df) if len(s) < 4 else (var(s) / len(s), len(s) - 1)
             for s, trained in ((ts, t_trained), (bs, b_trained)) if trained]
    d = [sum(r[i] for r in t) / len(t) - sum(r[i] for r in b) / len(b) for i in range(len(langs))]
    pair = 0.0
    for lang in names:
        vals = [d[i] for i in idx[lang]]
        pair += weight[lang] ** 2 * var(vals) / len(vals)
    parts.append((pair, len(langs) - len(names)))
    total = sum(v for v, _ in parts)
    df = total ** 2 / sum(v * v / k for v, k in parts)
    half = student_t.ppf(0.975, df) * math.sqrt(total)
    return diff, math.sqrt(total), df, diff - half, diff + half


@pytest.mark.parametrize("macro", [False, True])
@pytest.mark.parametrize("kb, b_trained", [(2, True), (3, True), (1, False)])
def test_mean_difference_matches_the_slow_version(macro, kb, b_trained):
    rng = np.random.default_rng(7)
    langs = np.array(["de"] * 7 + ["zh"] * 12 + ["ar"] * 5)
    t = (rng.random((3, langs.size)) < 0.6).astype(float)
    b = (rng.random((kb, langs.size)) < 0.5).astype(float)
    d = mean_difference(t, b, langs, (True, b_trained), macro=macro)
    diff, se, df, lo, hi = _slow_interval(t.tolist(), b.tolist(), langs.tolist(), True, b_trained, macro)
    assert (d.diff, d.se, d.df, d.lo, d.hi) == pytest.approx((diff, se, df, lo, hi), rel=1e-9)
    assert d.covers_seeds and d.n == langs.size


@pytest.mark.parametrize("macro", [False, True])
def test_a_studys_seed_pool_matches_the_slow_version(macro):
    """The seed variance pooled over every replicated group of a study, not only the two compared."""
    from xlpo.eval.analysis.compare import SeedPool

    rng = np.random.default_rng(9)
    langs = np.array(["de"] * 7 + ["zh"] * 12 + ["ar"] * 5)
    t, b = ((rng.random((k, langs.size)) < p).astype(float) for k, p in ((2, 0.6), (5, 0.5)))
    others = [(rng.random((k, langs.size)) < 0.3 + 0.4 * rng.random((k, 1))).astype(float) for k in (2, 3, 1)]
    pool = SeedPool.of([t, b, *others], langs)
    d = mean_difference(t, b, langs, (True, True), macro=macro, pool=pool)
    slow = _slow_interval(t.tolist(), b.tolist(), langs.tolist(), True, True, macro, [o.tolist() for o in others])
    assert (d.diff, d.se, d.df, d.lo, d.hi) == pytest.approx(slow, rel=1e-9)
    assert d.df > 5  # the target's seed variance pooled (1 + 4 + 1 + 2 degrees of freedom); the baseline's own (4)


def test_two_seeds_that_agree_by_chance_borrow_the_studys_seed_spread_and_a_wide_group_keeps_its_own():
    """Issue 23: with one degree of freedom per side, a near-zero spread made an interval narrow and a wide one made
    it reach past +100 points. Pooled over the study's groups, both are tamed."""
    from xlpo.eval.analysis.compare import SeedPool, compare_means, language_floor

    langs = np.repeat(np.array(["de", "zh"]), 20)
    still = np.zeros((2, 40))
    still[:, :10] = 1.0  # both seeds 50% in de, 0% in zh: no spread
    wide = np.zeros((2, 40))
    wide[0, :16], wide[1, :4] = 1.0, 1.0  # de: 80% and 20%
    base = np.zeros((1, 40))
    study = [still, wide, *[(np.random.default_rng(s).random((2, 40)) < 0.5).astype(float) for s in range(4)]]
    pool = SeedPool.of(study, langs)
    calm = compare_means(still, base, langs, (True, False), ("t", "b"), "accuracy sum", pool)
    by_lang = [pool.mean_variance({lang: 1.0}) for lang in ("de", "zh")]
    floor = language_floor(by_lang)  # a language's pooled variance is not taken below the languages' average
    assert floor == (pytest.approx((by_lang[0][0] + by_lang[1][0]) / 2), 12.0)
    seed_var = max(by_lang[0][0], floor[0])
    assert calm.languages["de"].seed_sd[0] == 0.0  # the observed spread is reported as it is
    pairs = still.mean(axis=0)[:20]  # de's per-pair differences (the base model is 0)
    assert calm.languages["de"].se ** 2 == pytest.approx(seed_var / 2 + pairs.var(ddof=1) / 20)
    assert by_lang[0][1] == 6 and calm.languages["de"].df > 6  # six seed degrees of freedom (or 12), and the pairs
    spread = compare_means(wide, base, langs, (True, False), ("t", "b"), "accuracy sum", pool)
    d = spread.languages["de"]
    assert d.se ** 2 >= np.var([0.8, 0.2], ddof=1) / 2 and -1.0 <= d.lo and d.hi <= 1.0
    own = compare_means(wide, base, langs, (True, False), ("t", "b"), "accuracy sum")  # the two groups alone: df 1
    assert own.languages["de"].df < 2 and own.languages["de"].hi == 1.0  # cut to the feasible range


def test_accuracy_intervals_stay_within_what_an_accuracy_difference_can_be():
    from xlpo.eval.analysis.compare import Difference

    wide = Difference(0.9, 0.5, 3.0, 20, (2, 2), (0.1, 0.1), True, (-1.0, 1.0))
    assert wide.hi == 1.0 and wide.lo == pytest.approx(0.9 - float(student_t.ppf(0.975, 3)) * 0.5)
    assert Difference(0.9, 0.5, 3.0, 20, (2, 2), (0.1, 0.1), True).hi > 1.0  # a shift in nats is not cut


def test_one_trained_seed_covers_pairs_only_and_the_base_model_has_no_seed_spread():
    rng = np.random.default_rng(8)
    langs = np.array(["de"] * 40)
    one, two = (rng.random((1, 40)) < 0.7) * 1.0, (rng.random((2, 40)) < 0.7) * 1.0
    base = (rng.random((1, 40)) < 0.4) * 1.0
    d = mean_difference(one, base, langs, (True, False))
    assert not d.covers_seeds and d.status == "not established" and d.lo is not None  # pairs only
    d = mean_difference(two, base, langs, (True, False))
    assert d.covers_seeds and d.seed_sd[1] is None and d.seed_sd[0] == pytest.approx(two.mean(axis=1).std(ddof=1))


def test_bootstrap_pair_variance_matches_the_analytic_one():
    """statistic_difference with the plain mean as statistic estimates the analytic pair variance."""
    rng = np.random.default_rng(9)
    langs = np.repeat(np.array(["de", "zh"]), 60)
    t, b = rng.normal(1.0, 2.0, (2, 120)), rng.normal(0.0, 2.0, (2, 120))
    exact = mean_difference(t, b, langs, (False, False))
    boot = statistic_difference(t, b, langs, (False, False), lambda x: x.mean(axis=1), 4000, np.random.default_rng(0))
    assert boot.diff == pytest.approx(exact.diff) and boot.se == pytest.approx(exact.se, rel=0.05)


# --------------------------------------------------------------------------------------------- verdict rules

def _verdicts(results):
    return {v["claim"]: v for v in results["against_paper"]}


def test_ties_are_not_wins():
    """Old rule: the target counted as highest in a language where it tied; now a tie is no evidence."""
    rng = np.random.default_rng(10)
    rows = [[_row(i, lang, float(m), 0.0) for i, (lang, m) in enumerate(zip(["de"] * 30 + ["zh"] * 30,
                                                                              rng.normal(0, 1, 60)))]] * 2
    same_t, same_b = _group("capo", *rows, method="capo"), _group("dpo", *rows)
    comps = {"dpo": accuracy_comparison(same_t, same_b)}
    assert claim_best_everywhere("capo", same_t, comps, [same_b]).verdict == "inconclusive"


def test_one_language_below_zero_contradicts_every_language():
    """Old rule: "partly agrees" when some languages were above 0 and one significantly below."""
    rng = np.random.default_rng(11)
    base, targ = [], []
    for i in range(120):
        lang = ("de", "zh", "ar")[i // 40]
        m = float(rng.normal(0, 1))
        base.append(_row(i, lang, m, 0.0))
        targ.append(_row(i, lang, m + (-3.0 if lang == "ar" else 3.0) + float(rng.normal(0, 0.1)), 0.0))
    targ2 = [dict(r, logp_chosen=r["logp_chosen"] + 0.05) for r in targ]
    base2 = [dict(r, logp_chosen=r["logp_chosen"] - 0.05) for r in base]
    s = shift_comparison(_group("capo", targ, targ2, method="capo"), _group("dpo", base, base2), n_boot=200)
    assert [s.languages[k].status for k in ("ar", "de", "zh")] == ["below 0", "above 0", "above 0"]
    assert claim_shift_everywhere("capo", "dpo", s).verdict == "contradicts"


def test_method_claims_with_one_seed_are_not_established(tmp_path):
    """Old rule: one run per method gave "agrees" from intervals over pairs alone."""
    dirs, _ = make_synthetic_runs(tmp_path, per_lang=30, steps=4, seeds=(42,))
    res = analyze(dirs, tmp_path / "r", n_boot=40, plots=False)
    v = _verdicts(res)
    for claim in ("capo has higher average reward accuracy than dpo",
                  "capo has the highest accuracy in every language except en",
                  "capo shifts the reward-difference distribution to the right of dpo's in every language",
                  "BLEU(chosen, rejected) correlates negatively with the shift across languages",
                  "evaluation accuracy drops for alpha > 2"):
        assert v[claim]["verdict"] == "not established", claim
    md = (tmp_path / "r" / "report.md").read_text()
    assert "not established (one training seed" in md


def test_alpha_is_compared_with_alpha_2_fixed_in_advance(tmp_path):
    """Old rule: each alpha > 2 was compared with the best alpha <= 2 chosen on the same evaluation data."""
    dirs, _ = make_synthetic_runs(tmp_path, langs=("de", "zh"), per_lang=20, steps=4, gains={"capo-a1": 4.0})
    res = analyze(dirs, tmp_path / "r", n_boot=0, plots=False)
    accs = {e["name"]: e["acc_sum"]["mean"] for e in res["alpha_sweep"] if e["rrm"] == "paper"}
    assert accs["capo-a1"] > accs["capo"]  # alpha 1 is the best alpha <= 2 here ...
    # ... yet the reference is alpha 2
    assert res["alpha_reference"] == "capo" and set(res["alpha_differences"]) == {"capo-a4"}
    assert "fixed in advance" in _verdicts(res)["evaluation accuracy drops for alpha > 2"]["compared"]


def test_rows_say_what_was_compared_and_tested(synthetic):
    _, _, _, res = synthetic
    v = _verdicts(res)
    acc = v["capo has higher average reward accuracy than dpo"]
    assert "capo (2 seeds: 42, 7) vs dpo (2 seeds: 42, 7)" in acc["compared"]
    assert acc["test"].startswith("the sign only") and "The size is not tested" in acc["detail"]
    assert ("inside" in acc["detail"]) != ("outside" in acc["detail"])
    assert all(x["verdict"] == "cannot check" or (x["compared"] and x["test"]) for x in v.values())
    # the two loss claims hold by construction (CAPO starts near -log sigmoid(alpha), DPO at ln 2)
    assert v["training loss decreases as alpha grows"]["verdict"] == "by construction"
    assert "0.127" in v["training loss decreases as alpha grows"]["detail"]
    assert v["capo's training loss is lower than dpo's from the start"]["verdict"] == "by construction"
    # the BLEU note next to the correlation
    assert "65.6 -> 57.6" in v["BLEU(chosen, rejected) correlates negatively with the shift across languages"]["detail"]
    # the legend defines every verdict; "partly agrees" is gone
    assert set(res["legend"]["verdicts"]) == {"agrees", "contradicts", "inconclusive", "not established",
                                              "by construction", "cannot check"}
    assert "partly" not in json.dumps(res["against_paper"])


def test_headline(synthetic, tmp_path):
    root, _, _, res = synthetic
    h = res["headline"]
    assert (h["base"], h["target"], h["baseline"]) == ("base", "capo", "dpo")
    for definition in ("sum", "mean"):
        rows = {r["lang"]: r for r in h["definitions"][definition]}
        assert list(rows) == [*sorted(LANGS), "macro"]
        assert set(rows["de"]["gains"]) == {"dpo", "simpo", "dpo_nll", "capo", "capo-inverse"}
        assert rows["macro"]["target_minus_baseline"]["covers_seeds"]
        assert rows["de"]["target_minus_baseline"]["diff"] == pytest.approx(
            res["accuracy_difference"]["vs_baseline"][definition]["languages"]["de"]["diff"])
    md = (root / "report" / "report.md").read_text()
    assert md.index("## Headline") < md.index("**Accuracy gains (points), summed log-prob")
    # a language with fewer pairs than MIN_PAIRS is flagged, not hidden
    dirs, _ = make_synthetic_runs(tmp_path, langs=("de", "zh"), per_lang=6, steps=3, sweep=False)
    small = analyze(dirs, tmp_path / "r", n_boot=0, plots=False)
    rows = small["headline"]["definitions"]["sum"]
    assert [r["lang"] for r in rows if r["underpowered"]] == ["de", "zh"]
    assert "de (underpowered)" in (tmp_path / "r" / "report.md").read_text()


def test_equal_within_is_two_one_sided_t_tests_at_five_percent():
    """`Difference.equal_within` against the slow obvious version: both one-sided p-values (H0: diff <= -m, H0:
    diff >= +m) below 0.05, with the interval's own t and degrees of freedom."""
    rng = np.random.default_rng(3)
    said = 0
    for _ in range(400):
        diff, se, df, margin = rng.normal(0, 0.03), rng.uniform(0.002, 0.03), rng.uniform(2, 200), 0.03
        d = Difference(diff, se, df, 300, (8, 8), (0.02, 0.02), True, (-1.0, 1.0))
        p_low, p_high = student_t.sf((diff + margin) / se, df), student_t.cdf((diff - margin) / se, df)
        assert d.equal_within(margin) == (p_low < 0.05 and p_high < 0.05)
        said += d.equal_within(margin)
    assert 0 < said < 400
    one_seed = Difference(0.001, 0.001, 50, 300, (1, 8), (None, 0.02), False, (-1.0, 1.0))
    assert not one_seed.equal_within()


def test_the_headline_says_equal_within_three_points_only_where_the_interval_includes_zero():
    equal = Difference(0.0073, 0.0124, 24.9, 600, (8, 8), (0.02, 0.02), True, (-1.0, 1.0))  # the decisive study
    assert format_difference(equal.to_dict(), unit="", words=True) == "+0.7 [95% CI -1.8, +3.3], equal within ±3"
    wide = Difference(0.007, 0.02, 24.9, 600, (8, 8), (0.02, 0.02), True, (-1.0, 1.0))
    assert format_difference(wide.to_dict(), unit="", words=True).endswith("not established")
