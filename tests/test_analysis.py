"""Analysis metrics against hand-computed values, and `xlpo analyze` end to end on synthetic runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from xlpo.errors import UserError
from xlpo.eval.analysis import (
    accuracy_difference,
    accuracy_table,
    alpha_sweep,
    analyze,
    fisher_interval,
    kde_shift,
    kde_weighted_mean,
    kde_weighted_means,
    load_run,
    load_training_log,
    pearson,
    reward_differences,
    tokenization_diagnostics,
)


def _row(i, lang, a, b, tc=10, tr=10, ref=None, chars=(40, 40)):
    return {"id": f"p{i}", "lang": lang, "logp_chosen": a, "logp_rejected": b, "tokens_chosen": tc,
            "tokens_rejected": tr, "chars_chosen": chars[0], "chars_rejected": chars[1],
            "ref_logp_chosen": None if ref is None else ref[0], "ref_logp_rejected": None if ref is None else ref[1]}


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
        accuracy_table(good, beta=0.0)
    assert accuracy_table(good, beta=0.1)["all"] == accuracy_table(good, beta=2.0)["all"]  # beta scales, no change


def test_accuracy_difference_paired():
    base = [_row(0, "de", -1, -2), _row(1, "de", -2, -1), _row(2, "it", -2, -1), _row(3, "it", -2, -1)]
    targ = [_row(0, "de", -1, -2), _row(1, "de", -1, -2), _row(2, "it", -1, -2), _row(3, "it", -2, -1),
            _row(9, "it", -1, -2)]  # p9 unmatched: ignored
    d = accuracy_difference(base, targ, n_boot=200, seed=0)
    assert d["matched_pairs"] == 4
    assert d["languages"]["de"]["diff"] == pytest.approx(0.5)   # 1.0 - 0.5
    assert d["languages"]["it"]["diff"] == pytest.approx(0.5)   # 0.5 - 0.0
    assert d["all"]["diff"] == pytest.approx(0.5) and d["macro"]["diff"] == pytest.approx(0.5)
    assert d["all"]["lo"] <= 0.5 <= d["all"]["hi"]


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
    s = kde_shift(base, targ, n_boot=50, seed=0)
    assert s["de"]["shift"] == pytest.approx(1.0, abs=1e-3) and s["de"]["paired"]
    assert s["vi"]["shift"] == pytest.approx(-2.0, abs=1e-3)
    # a constant per-pair shift: every paired resample gives the same shift
    assert s["de"]["lo"] == pytest.approx(1.0, abs=1e-3) and s["de"]["hi"] == pytest.approx(1.0, abs=1e-3)
    assert s["all"]["shift"] == pytest.approx(-0.5, abs=1e-3)
    assert s["de"]["mean_shift"] == pytest.approx(1.0)
    rev = kde_shift(targ, base, n_boot=0)
    assert rev["de"]["shift"] == pytest.approx(-1.0, abs=1e-3) and rev["de"]["lo"] is None
    unpaired = kde_shift(base[:29] + base[30:], targ, n_boot=20)
    assert not unpaired["de"]["paired"] and unpaired["de"]["lo"] < unpaired["de"]["hi"]


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
                        sweep: bool = True, name_override: dict | None = None) -> tuple[list[Path], Path]:
    """Scored runs (base, dpo, simpo, dpo_nll, capo, capo alpha sweep, capo inverse) and their data file.

    CAPO's margin gain grows with the language's edit rate (low BLEU), so the BLEU-shift
    correlation is negative by construction, as in the paper.
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
    for name, method, params, gain in specs:
        run = root / "runs" / name
        run.mkdir(parents=True, exist_ok=True)
        rows = []
        for pid, lang, cc, cr in ((p[0], p[1], p[2], p[3]) for p in pairs):
            m0 = dict((p[0], p[4]) for p in pairs)[pid]
            tc, tr = max(1, round(cc * TOKENS_PER_CHAR[lang])), max(1, round(cr * TOKENS_PER_CHAR[lang]))
            lp_r = -1.5 * tr + float(rng.normal(0, 1))
            extra = gain * (1 + 4 * EDIT_RATE[lang]) if method == "capo" else gain
            lp_c = lp_r - 1.0 + m0 + extra + float(rng.normal(0, 0.5))
            if name == "base":
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
                f"loss:\n  name: {method}\ndata:\n  train: {data_file}\ntraining:\n  seed: 42\n", encoding="utf-8")
            (train_dir / "train_summary.json").write_text(json.dumps({"loss": method, "loss_params": params}))
        meta = {"name": (name_override or {}).get(name, name), "method": method, "loss_params": params,
                "model": "embedded", "adapter": None if train_dir is None else str(train_dir / "adapter"),
                "beta": 0.1, "data": str(data_file), "train_dir": None if train_dir is None else str(train_dir)}
        (run / "scoring.json").write_text(json.dumps(meta), encoding="utf-8")
        dirs.append(run)
    return dirs, data_file


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
    assert saved["config"]["baseline_run"] == "dpo" and saved["config"]["target_run"] == "capo"
    assert saved["versions"]["numpy"] == np.__version__ and saved["seeds"]["bootstrap"] == 0
    assert saved["seeds"]["train:capo"] == 42
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
    assert all(shift[k]["shift"] > 0 for k in LANGS)
    assert shift["vi"]["shift"] > shift["de"]["shift"]
    corr = saved["correlation"]["grid"]
    assert corr["n"] == 4 and corr["r"] < -0.8
    # alpha sweep: capo-a1, capo, capo-a4 (paper orientation) and capo-inverse
    sweep = {e["name"]: e for e in saved["alpha_sweep"]}
    assert set(sweep) == {"capo-a1", "capo", "capo-a4", "capo-inverse"}
    assert sweep["capo-a4"]["final_loss"] < sweep["capo-a1"]["final_loss"]
    # the comparison plots leave out the sweep siblings but keep the inverse orientation
    compared = [r["name"] for r in saved["runs"] if r["compared"]]
    assert compared == ["base", "dpo", "simpo", "dpo_nll", "capo", "capo-inverse"]
    verdicts = {v["claim"]: v for v in saved["against_paper"]}
    assert verdicts["capo has higher average reward accuracy than dpo"]["verdict"] == "agrees"
    assert verdicts["capo is worse than dpo in en"]["verdict"] == "cannot check"  # no en in the data
    assert verdicts["evaluation accuracy drops for alpha > 2"]["verdict"] in ("agrees", "partly agrees")
    orient = saved["rrm_orientation"]
    assert orient["paper"] == "capo" and orient["inverse"] == "capo-inverse"
    assert any(v["verdict"] == "cannot check" for v in saved["against_paper"])
    assert all(v["verdict"] in ("agrees", "contradicts", "inconclusive", "partly agrees", "cannot check")
               for v in saved["against_paper"])
    md = (out / "report.md").read_text()
    for heading in ("## Setup", "## Reward accuracy per language", "## Reward-difference distributions",
                    "## Shift and BLEU correlation", "## Training curves", "## Alpha sweep",
                    "## Tokenization diagnostics", "## Against the paper"):
        assert heading in md
    assert "](plots/kde.png)" in md


def test_analyze_missing_methods_says_so(tmp_path):
    dirs, _ = make_synthetic_runs(tmp_path, langs=("de", "it"), per_lang=12, steps=5, sweep=False)
    only = [d for d in dirs if d.name in ("base", "capo")]
    res = analyze(only, tmp_path / "r", n_boot=0, plots=False)
    assert res["config"]["baseline_run"] is None and res["shift"]["grid"] == {}
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
    dirs, _ = make_synthetic_runs(tmp_path, langs=("de",), per_lang=8, steps=4)
    without_main = [d for d in dirs if d.name != "capo"]  # "capo" is then only a method, held by 3 runs
    with pytest.raises(UserError, match="matches 3 runs"):
        analyze(without_main, tmp_path / "r", target="capo", n_boot=0, plots=False)
    runs = [load_run(d) for d in dirs]
    acc = {r.name: accuracy_table(r.rows, n_boot=0) for r in runs}
    sweep = alpha_sweep(runs, acc, "capo")
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
    capo = next(d for d in dirs if d.name == "capo")
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
