"""The ICR loop end to end on a tiny random model with real prompts: artifacts, resume, no-op re-runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import yaml
from conftest import first_fast, make_random_adapter

import xlpo.icr.policies as policies
import xlpo.icr.response_logps as scoring_mod
import xlpo.icr.sample as sample_mod
import xlpo.models

from xlpo.errors import UserError
from xlpo.icr.config import load_icr_config
from xlpo.icr.pipeline import recompute_stats, run_icr
from xlpo.icr.rundir import IterationDir
from xlpo.icr.prompts import crosslingual_instruction, load_parallel_prompts
from xlpo.icr.response_logps import ResponseEncoder, shared_prompt_logprobs
from xlpo.model_spec import ModelSpec
from xlpo.models import load_policy, load_tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def policy_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A random LoRA adapter on the tiny model: the 'English-aligned' policy, so that policy != reference."""
    return make_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "adapter", seed=1)


def _config(run_dir, tiny_model_dir, adapter, shared_data, *extra):
    prompts = shared_data / "icr" / "ultrafeedback_binarized" / "subset" / "random_1000"
    return load_icr_config(None, [
        f"run_dir={run_dir}", "iterations=1", f"policy.name_or_path={tiny_model_dir}", f"policy.adapter={adapter}",
        "policy.dtype=float32", f"prompts.dir={prompts}", "prompts.languages=[en, es]", "prompts.limit=2",
        "sampling.n=3", "sampling.max_new_tokens=6", "sampling.batch_size=2", "sampling.backend=hf",
        "sampling.chunk_size=1", "sampling.temperature=1.5", "reward.batch_size=4",
        "train.lora={r: 4, alpha: 8, dropout: 0.0}", "train.data.max_length=400", "train.data.max_prompt_length=300",
        "train.training={batch_size: 2, max_steps: 1, learning_rate: 1.0e-3, progress: false}", *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir, policy_adapter, shared_data):
    run_dir = tmp_path_factory.mktemp("icr") / "run"
    config = _config(run_dir, tiny_model_dir, policy_adapter, shared_data)
    logs = []
    result = run_icr(config, log=logs.append)
    return config, result, logs


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_one_iteration_writes_every_artifact(finished):
    config, result, logs = finished
    it = IterationDir(result.run_dir, 1)
    samples = _jsonl(it.samples)
    assert len(samples) == 4 and {s["lang"] for s in samples} == {"en", "es"}
    assert all(len(s["responses"]) == 3 for s in samples)
    es = next(s for s in samples if s["lang"] == "es")
    assert es["prompt"].startswith("¿")  # sampled from the target-language prompt
    scores = _jsonl(it.scores)
    assert all(len(r["scores"]["crosslingual"]["policy"]) == 3 and len(r["scores"]["crosslingual"]["reference"]) == 3
               for r in scores)
    alpha = json.loads(it.alpha.read_text())
    assert set(alpha["crosslingual"]) == {"en", "es"} and 0 <= alpha["crosslingual"]["es"]["alpha"] < 1
    pairs = _jsonl(it.pairs("crosslingual"))
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    by_id = {s["id"]: s for s in samples}
    score_by_id = {r["id"]: r for r in scores}
    for p in pairs:
        s = score_by_id[p["id"]]["scores"]["crosslingual"]
        rewards = [0.1 * (a - b) for a, b in zip(s["policy"], s["reference"])]
        penalised = [r - 0.1 * p["alpha"] * len(y) for r, y in zip(rewards, by_id[p["id"]]["responses"])]
        assert p["chosen_index"] == max(range(3), key=lambda i: (penalised[i], -i))
        assert p["rejected_index"] == min(range(3), key=lambda i: (penalised[i], i))
        assert p["chosen_reward"] == pytest.approx(rewards[p["chosen_index"]])
        assert p["prompt"] == by_id[p["id"]]["prompt"]
    assert (it.train / "adapter" / "adapter_config.json").is_file()
    assert (it.train / "metrics.jsonl").is_file()
    summary = json.loads((it.train / "train_summary.json").read_text())
    assert summary["loss"] == "dpo_nll" and summary["pairs"] == len(pairs)
    # Algorithm 1: the training reference is the policy the iteration starts from (pi^0 = base + adapter).
    assert summary["reference_model"] == {"name_or_path": str(config.policy.name_or_path),
                                          "adapter": str(config.policy.adapter),
                                          "loaded_as": "a second, frozen adapter on the policy's base weights"}
    stats = json.loads(it.stats.read_text())
    for lang in ("en", "es"):
        entry = stats[lang]
        assert entry["responses"] == 6 and entry["response_chars"]["n"] == 6
        assert 0 <= entry["wrong_language_share"] <= 1
        r = entry["rewards"]["crosslingual"]
        assert r["reward"]["n"] == 6 and "chosen_minus_rejected" in r or r["pairs"] == 0
    assert stats["_train"]["steps"] == 1
    assert (it.judge / "requests.jsonl").is_file()
    manifest = json.loads(it.manifest.read_text())
    assert manifest["policy_adapter"].endswith("adapter") and manifest["training_reference"] == manifest["policy"]
    assert manifest["reward_reference"] == str(config.policy.name_or_path)  # pi_I: the base, adapter disabled
    assert (result.run_dir / "config.yaml").is_file() and (result.run_dir / "versions.json").is_file()
    assert not (it.root / "parts").exists()
    assert result.ran == [f"iter-1/{s}" for s in ("sample", "score", "alpha", "pairs", "train", "stats")]


def test_rerunning_a_finished_run_does_nothing(finished, monkeypatch):
    config, result, _ = finished
    def refuse(*args, **kwargs):
        raise AssertionError("a finished run must not load a model")

    monkeypatch.setattr(xlpo.models, "load_model", refuse)
    before = {p: p.stat().st_mtime_ns for p in result.run_dir.rglob("*") if p.is_file()}
    logs = []
    again = run_icr(config, log=logs.append)
    assert again.ran == [] and "nothing to do" in logs[-1]
    assert {p: p.stat().st_mtime_ns for p in result.run_dir.rglob("*") if p.is_file()} == before
    assert again.stats[1] == result.stats[1]


def test_a_changed_setting_is_refused(finished, tiny_model_dir, policy_adapter, shared_data):
    config, result, _ = finished
    changed = _config(result.run_dir, tiny_model_dir, policy_adapter, shared_data, "sampling.n=4")
    with pytest.raises(UserError, match=r"different sampling\.n \(3 there, 4 now\)"):
        run_icr(changed, log=lambda _: None)


def test_judge_labels_give_table1_accuracy(finished, tmp_path):
    config, result, _ = finished
    run_dir = tmp_path / "copy"
    shutil.copytree(result.run_dir, run_dir)
    it = IterationDir(run_dir, 1)
    requests = _jsonl(it.judge / "requests.jsonl")
    labels = [{"id": r["id"], "preferred": "chosen" if i % 2 == 0 else "rejected"} for i, r in enumerate(requests)]
    (it.judge / "labels.jsonl").write_text("".join(json.dumps(x) + "\n" for x in labels))
    stats = recompute_stats(run_dir, log=lambda _: None)[1]
    judged = [stats[lang]["rewards"]["crosslingual"]["judge"] for lang in ("en", "es")
              if "judge" in stats[lang]["rewards"]["crosslingual"]]
    assert sum(j["judged"] for j in judged) == len(requests)
    assert sum(j["chosen"] for j in judged) == (len(requests) + 1) // 2


def _count_calls(monkeypatch, module, name, fail_at=None):
    calls = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt("killed")  # what a kill looks like from inside: the stage stops mid-way
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.mark.e2e
def test_killed_mid_stage_resumes_without_redoing_work(tmp_path, tiny_model_dir, policy_adapter, shared_data,
                                                       monkeypatch):
    config = _config(tmp_path / "run", tiny_model_dir, policy_adapter, shared_data)
    it = IterationDir(config_run := Path(config.run_dir), 1)
    # 1) killed during sampling, at the third of four chunks (one prompt each).
    with monkeypatch.context() as m:
        calls = _count_calls(m, sample_mod, "sample_responses", fail_at=3)
        with pytest.raises(KeyboardInterrupt):
            run_icr(config, log=lambda _: None)
    assert len(calls) == 3 and not it.samples.exists()
    assert len(list(it.parts("sample").glob("*.jsonl"))) == 2
    first_parts = {p.name: p.read_text() for p in it.parts("sample").glob("*.jsonl")}
    # 2) resumed, then killed during scoring (two prompt groups per chunk call each: policy and reference).
    with monkeypatch.context() as m:
        calls = _count_calls(m, sample_mod, "sample_responses")
        scored = _count_calls(m, scoring_mod, "shared_prompt_logprobs", fail_at=5)
        with pytest.raises(KeyboardInterrupt):
            run_icr(config, log=lambda _: None)
    assert len(calls) == 2  # only the two missing chunks were sampled
    samples = _jsonl(it.samples)
    assert len(samples) == 4
    for name, text in first_parts.items():  # finished parts kept as they were
        assert all(row in samples for row in map(json.loads, text.splitlines()))
    assert len(scored) == 5 and len(list(it.parts("score").glob("*.jsonl"))) == 2 and not it.scores.exists()
    # 3) resumed to the end: scoring redoes only the two missing chunks (2 calls each), sampling nothing.
    with monkeypatch.context() as m:
        calls = _count_calls(m, sample_mod, "sample_responses")
        scored = _count_calls(m, scoring_mod, "shared_prompt_logprobs")
        result = run_icr(config, log=lambda _: None)
    assert len(calls) == 0 and len(scored) == 4
    assert result.ran == [f"iter-1/{s}" for s in ("score", "alpha", "pairs", "train", "stats")]
    assert it.stats.is_file() and (config_run / "iter-1" / "train" / "adapter").is_dir()


@pytest.mark.parametrize("training", first_fast(["previous", "initial"]))
def test_training_reference_is_the_starting_policy_or_the_initial_model(finished, tmp_path, tiny_model_dir,
                                                                        policy_adapter, shared_data, training):
    """reference.training=previous (Algorithm 1, the default): the DPO reference is the policy training
    starts from, so the first step has zero margins (loss ln 2 + NLL); initial: the base, pi_I."""
    _, result, _ = finished
    run_dir = tmp_path / "run"
    _copy_stages(result.run_dir, run_dir, ["samples.jsonl", "scores.jsonl", "alpha.json", "pairs"])
    config = _config(run_dir, tiny_model_dir, policy_adapter, shared_data, f"reference.training={training}")
    out = run_icr(config, log=lambda _: None)
    assert out.ran == ["iter-1/train", "iter-1/stats"]
    it = IterationDir(run_dir, 1)
    summary = json.loads((it.train / "train_summary.json").read_text())
    first = json.loads((it.train / "metrics.jsonl").read_text().splitlines()[0])
    manifest = json.loads(it.manifest.read_text())
    if training == "previous":
        assert summary["reference_model"]["adapter"] == str(policy_adapter)
        assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-4)
        assert manifest["training_reference"].endswith("adapter")
    else:
        assert summary["reference_model"] == {"name_or_path": str(tiny_model_dir), "adapter": None,
                                              "loaded_as": "the policy's base weights with its adapters disabled"}
        assert abs(first["rewards/margins"]) > 1e-3
        assert manifest["training_reference"] == str(tiny_model_dir)
    assert not (it.root / "train-reference").exists()


def _reference_logps_of_first_row(run_dir, shared_data, model_dir, adapter):
    """Recompute the crosslingual log-probs of iteration 2's first scored row under base (+ adapter)."""
    it = IterationDir(run_dir, 2)
    row = _jsonl(it.scores)[0]
    responses = next(s for s in _jsonl(it.samples) if s["id"] == row["id"])["responses"]
    prompts = load_parallel_prompts(shared_data / "icr" / "ultrafeedback_binarized" / "subset" / "random_1000",
                                    ["en", "es"], limit=2)
    prompt = next(p for group in prompts.values() for p in group if p.id == row["id"])
    tokenizer = load_tokenizer(str(model_dir))
    encoder = ResponseEncoder(tokenizer)
    instruction = crosslingual_instruction(prompt.english, prompt.lang)
    text = encoder.prompt_text(instruction)
    model = load_policy(str(model_dir), adapter and str(adapter), "float32")
    got = shared_prompt_logprobs(model, encoder.prompt_ids(text), [encoder.response_ids(instruction, y, text)
                                                                     for y in responses], tokenizer.pad_token_id)
    return row["scores"]["crosslingual"]["reference"], got.sums


@pytest.mark.e2e
def test_reward_reference_previous_scores_iteration_2_against_pi_0(finished, tmp_path, tiny_model_dir,
                                                                  policy_adapter, shared_data):
    """reference.reward=previous (Table 6's alternative): iteration 2 scores pi^1 against pi^0 =
    base + the initial adapter; iteration 1 (no model before pi^0) against pi_I, as by default."""
    _, result, _ = finished
    run_dir = tmp_path / "run"
    shutil.copytree(result.run_dir / "iter-1", run_dir / "iter-1")
    config = _config(run_dir, tiny_model_dir, policy_adapter, shared_data, "reference.reward=previous", "iterations=2")
    out = run_icr(config, log=lambda _: None)
    assert out.ran == [f"iter-2/{s}" for s in ("sample", "score", "alpha", "pairs", "train", "stats")]
    manifest = json.loads(IterationDir(run_dir, 2).manifest.read_text())
    assert manifest["reward_reference"] == f"{tiny_model_dir} + adapter {policy_adapter}"
    assert manifest["policy_adapter"] == str(run_dir / "iter-1" / "train" / "adapter")
    recorded, under_pi_0 = _reference_logps_of_first_row(run_dir, shared_data, tiny_model_dir, policy_adapter)
    assert recorded == pytest.approx(under_pi_0, abs=1e-4)
    _, under_base = _reference_logps_of_first_row(run_dir, shared_data, tiny_model_dir, None)
    assert recorded != pytest.approx(under_base, abs=1e-3)


@pytest.mark.e2e
def test_sigkill_mid_sampling_then_resume(tmp_path, tiny_model_dir, policy_adapter, shared_data, monkeypatch):
    """A real kill (SIGKILL, no cleanup) as soon as the first sampled part is on disk."""
    config = _config(tmp_path / "run", tiny_model_dir, policy_adapter, shared_data, "prompts.limit=4",
                     "sampling.max_new_tokens=24")
    path = tmp_path / "icr.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    it = IterationDir(Path(config.run_dir), 1)
    code = ("import sys; from xlpo.icr.config import load_icr_config; from xlpo.icr.pipeline import run_icr; "
            "run_icr(load_icr_config(sys.argv[1]), log=lambda _: None)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (it.parts("sample").is_dir() and any(it.parts("sample").glob("*.jsonl"))) and not it.samples.exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = {p.name: p.read_text() for p in it.parts("sample").glob("*.jsonl")} if not it.samples.exists() else None
    print("parts done at the kill:", None if done is None else len(done))
    calls = _count_calls(monkeypatch, sample_mod, "sample_responses")
    result = run_icr(config, log=lambda _: None)
    assert it.stats.is_file() and result.stats[1]["es"]["responses"] == 12
    if done is not None:  # killed inside sampling: only the missing chunks are sampled again
        assert len(calls) == 8 - len(done) and len(done) >= 1
        samples = _jsonl(it.samples)
        for text in done.values():
            assert all(row in samples for row in map(json.loads, text.splitlines()))
    else:
        assert len(calls) == 0


def _copy_stages(src_run: Path, dst_run: Path, names) -> None:
    for name in names:
        src = src_run / "iter-1" / name
        dst = dst_run / "iter-1" / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)


@pytest.mark.e2e
def test_multilingual_and_translate_rewards(finished, tmp_path, tiny_model_dir, policy_adapter, shared_data):
    _, result, _ = finished
    run_dir = tmp_path / "run"
    _copy_stages(result.run_dir, run_dir, ["samples.jsonl"])
    config = _config(run_dir, tiny_model_dir, policy_adapter, shared_data, "reward.also=[translate, multilingual]")
    out = run_icr(config, log=lambda _: None)
    assert out.ran[:2] == ["iter-1/translate", "iter-1/score"]
    it = IterationDir(run_dir, 1)
    samples = {r["id"]: r for r in _jsonl(it.samples)}
    translations = _jsonl(it.translations)
    for row in translations:
        assert len(row["translations"]) == 3
        if row["lang"] == "en":  # T(en, y) = y
            assert row["translations"] == samples[row["id"]]["responses"]
    scores = _jsonl(it.scores)
    assert all(set(r["scores"]) == {"crosslingual", "multilingual", "translate"} for r in scores)
    # Crosslingual and multilingual score the same responses under different prompts: different values
    # for Spanish, identical for English (no prefix, and the English prompt is the target-language prompt).
    for r in scores:
        same = r["scores"]["crosslingual"]["policy"] == pytest.approx(r["scores"]["multilingual"]["policy"], abs=1e-4)
        assert same == (r["lang"] == "en")
    for kind in ("crosslingual", "multilingual", "translate"):
        assert it.pairs(kind).is_file()
    stats = json.loads(it.stats.read_text())
    assert set(stats["es"]["rewards"]) == {"crosslingual", "translate", "multilingual"}
    requests = _jsonl(it.judge / "requests.jsonl")
    assert {r["kind"] for r in requests} == {"crosslingual", "translate", "multilingual"}


@pytest.mark.e2e
def test_a_second_iteration_starts_from_the_first_ones_adapter(finished, tmp_path, tiny_model_dir, policy_adapter,
                                                               shared_data):
    config, result, _ = finished
    run_dir = tmp_path / "run"
    shutil.copytree(result.run_dir, run_dir)
    more = _config(run_dir, tiny_model_dir, policy_adapter, shared_data, "iterations=2")
    out = run_icr(more, log=lambda _: None)
    assert out.ran == [f"iter-2/{s}" for s in ("sample", "score", "alpha", "pairs", "train", "stats")]
    manifest = json.loads(IterationDir(run_dir, 2).manifest.read_text())
    assert manifest["policy_adapter"] == str(run_dir / "iter-1" / "train" / "adapter")
    assert manifest["reward_reference"] == str(tiny_model_dir)  # the initial model, not iteration 1's policy
    assert manifest["training_reference"] == manifest["policy"]  # pi_ref <- pi^1
    recorded, under_base = _reference_logps_of_first_row(run_dir, shared_data, tiny_model_dir, None)
    assert recorded == pytest.approx(under_base, abs=1e-4)
    summary = json.loads((IterationDir(run_dir, 2).train / "train_summary.json").read_text())
    assert summary["reference_model"]["adapter"] == str(run_dir / "iter-1" / "train" / "adapter")
    assert sorted(out.stats) == [1, 2]


@pytest.mark.e2e
def test_kto_trains_on_best_and_worst(finished, tmp_path, tiny_model_dir, policy_adapter, shared_data):
    _, result, _ = finished
    run_dir = tmp_path / "run"
    _copy_stages(result.run_dir, run_dir, ["samples.jsonl", "scores.jsonl", "alpha.json", "pairs"])
    config = _config(run_dir, tiny_model_dir, policy_adapter, shared_data, "train.loss.name=kto")
    assert run_icr(config, log=lambda _: None).ran == ["iter-1/train", "iter-1/stats"]
    summary = json.loads((IterationDir(run_dir, 1).train / "train_summary.json").read_text())
    assert summary["loss"] == "kto"


def _prompt_dir(path: Path, problem: str) -> Path:
    path.mkdir()
    rows = {"en": [("a", "Hello"), ("b", "Bye")], "es": [("a", "Hola"), ("b", "Adiós")]}
    if problem == "no en.jsonl":
        del rows["en"]
    elif problem == "different lengths":
        rows["es"] = rows["es"][:1]
    elif problem == "repeated instruction_id":
        rows = {lang: [(lang_rows[0][0], text) for _, text in lang_rows] for lang, lang_rows in rows.items()}
    for lang, lang_rows in rows.items():
        (path / f"{lang}.jsonl").write_text("".join(json.dumps({"instruction_id": i, "instruction": t}) + "\n"
                                                    for i, t in lang_rows))
    return path


@pytest.mark.parametrize("problem", ["no en.jsonl", "different lengths", "repeated instruction_id", "init.pairs",
                                     "run_dir is a file"])
def test_bad_inputs_are_refused_before_the_run_directory_is_written(tmp_path, tiny_model_dir, policy_adapter,
                                                                    shared_data, problem):
    run_dir = tmp_path / "run"
    extra = []
    if problem in ("init.pairs", "run_dir is a file"):
        prompts = _prompt_dir(tmp_path / "prompts", "none")
        if problem == "init.pairs":
            extra = ["policy.adapter=null", f"init.pairs={tmp_path / 'missing.jsonl'}"]
        else:
            run_dir.write_text("not a directory\n")
    else:
        prompts = _prompt_dir(tmp_path / "prompts", problem)
    config = _config(run_dir, tiny_model_dir, policy_adapter, shared_data, f"prompts.dir={prompts}", *extra)
    with pytest.raises(UserError) as err:
        run_icr(config, log=lambda _: None)
    assert "\n" not in str(err.value)
    if problem == "run_dir is a file":
        assert str(err.value).startswith("run_dir: ") and run_dir.read_text() == "not a directory\n"
    else:
        assert not run_dir.exists()


def test_vllm_starts_after_the_hf_models_are_gone(tmp_path, tiny_model_dir, policy_adapter, shared_data, monkeypatch):
    """vLLM claims a share of the GPU's free memory when it starts: no HF model of ours may hold any."""
    config = _config(tmp_path / "run", tiny_model_dir, policy_adapter, shared_data)
    models = policies.Models(config, ModelSpec(str(tiny_model_dir), str(policy_adapter)), ModelSpec(str(tiny_model_dir)))
    with models.reference():
        pass
    policy = weakref.ref(models.policy)
    alive_at_start = []
    monkeypatch.setattr(policies, "choose_backend", lambda backend: "vllm")
    monkeypatch.setattr(policies, "make_generator", lambda *a, **k: alive_at_start.append(policy()) or object())
    models.generator()
    assert alive_at_start == [None]
