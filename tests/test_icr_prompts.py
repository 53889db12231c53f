"""Parallel prompt files and the ICR config: alignment checks, one-line errors naming file/line or key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xlpo.errors import UserError
from xlpo.icr.config import load_icr_config
from xlpo.icr.prompts import load_parallel_prompts

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _files(tmp_path, es_ids=("a", "b", "c")):
    _write(tmp_path / "en.jsonl", [{"instruction": f"Q {i}", "instruction_id": i} for i in ("a", "b", "c")])
    _write(tmp_path / "es.jsonl", [{"instruction": f"P {i}", "instruction_id": i} for i in es_ids])
    return tmp_path


def test_real_prompts_are_aligned_with_english(shared_data):
    folder = shared_data / "icr" / "ultrafeedback_binarized" / "subset" / "random_1000"
    prompts = load_parallel_prompts(folder, ["en", "es", "de"], limit=5)
    assert [len(p) for p in prompts.values()] == [5, 5, 5]
    for es, de, en in zip(prompts["es"], prompts["de"], prompts["en"]):
        assert es.instruction_id == de.instruction_id == en.instruction_id
        assert es.english == en.instruction and es.instruction != en.instruction
    assert prompts["es"][0].id == prompts["es"][0].instruction_id + "-es"
    assert prompts["es"][0].instruction.startswith("¿")


def test_aligned_files_and_limit(tmp_path):
    prompts = load_parallel_prompts(_files(tmp_path), ["es", "en"], limit=2)
    assert [p.english for p in prompts["es"]] == ["Q a", "Q b"]
    assert [p.instruction for p in prompts["es"]] == ["P a", "P b"]


def test_misaligned_order_names_file_and_line(tmp_path):
    _files(tmp_path, es_ids=("a", "c", "b"))
    with pytest.raises(UserError, match=r"es\.jsonl:2: instruction_id c\.\.\. differs from .*en\.jsonl"):
        load_parallel_prompts(tmp_path, ["en", "es"])


def test_different_count_is_an_error(tmp_path):
    _files(tmp_path, es_ids=("a", "b"))
    with pytest.raises(UserError, match=r"es\.jsonl: 2 prompts but .*en\.jsonl has 3"):
        load_parallel_prompts(tmp_path, ["es"])


def test_missing_english_file(tmp_path):
    _files(tmp_path)
    (tmp_path / "en.jsonl").unlink()
    with pytest.raises(UserError, match=r"en\.jsonl: missing English file"):
        load_parallel_prompts(tmp_path, ["es"])


def test_missing_language_file_and_unknown_language(tmp_path):
    _files(tmp_path)
    with pytest.raises(UserError, match=r"de\.jsonl: prompt file for language 'de' not found"):
        load_parallel_prompts(tmp_path, ["de"])
    with pytest.raises(UserError, match="unknown language 'xx'"):
        load_parallel_prompts(tmp_path, ["xx"])


def test_bad_lines_name_file_and_line(tmp_path):
    _files(tmp_path)
    (tmp_path / "es.jsonl").write_text('{"instruction": "P a", "instruction_id": "a"}\n{"instruction": 3\n')
    with pytest.raises(UserError, match=r"es\.jsonl:2: invalid JSON"):
        load_parallel_prompts(tmp_path, ["es"])
    (tmp_path / "es.jsonl").write_text('{"instruction": "P a", "instruction_id": "a"}\n{"instruction_id": "b"}\n')
    with pytest.raises(UserError, match=r"es\.jsonl:2: missing or non-string field 'instruction'"):
        load_parallel_prompts(tmp_path, ["es"])
    _write(tmp_path / "en.jsonl", [{"instruction": "Q", "instruction_id": "a"}] * 2)
    with pytest.raises(UserError, match=r"en\.jsonl:2: instruction_id a\.\.\. repeats line 1"):
        load_parallel_prompts(tmp_path, ["en"])


# -- config --------------------------------------------------------------------------------------
def test_shipped_configs_validate():
    cpu = load_icr_config(REPO / "src" / "xlpo" / "configs" / "icr-cpu-smollm2.yaml")
    assert cpu.init.pairs == "mtpe" and cpu.iterations == 1 and cpu.sampling.n == 4
    gpu = load_icr_config(REPO / "src" / "xlpo" / "configs" / "icr-paper-gpu.yaml")
    assert gpu.policy.name_or_path == "princeton-nlp/Llama-3-Base-8B-SFT-DPO"
    assert gpu.reference.name_or_path == "princeton-nlp/Llama-3-Base-8B-SFT" and gpu.reference.training == "previous" and gpu.reference.reward == "initial"
    assert (gpu.sampling.n, gpu.sampling.temperature, gpu.sampling.top_p, gpu.iterations) == (10, 0.9, 1.0, 2)
    assert gpu.train["loss"] == {"name": "dpo_nll", "beta": 0.1, "nll_weight": 1.0}


def test_defaults_follow_the_paper():
    cfg = load_icr_config(None, ["policy.adapter=some/adapter"])
    assert (cfg.sampling.n, cfg.sampling.temperature, cfg.sampling.top_p, cfg.iterations) == (10, 0.9, 1.0, 2)
    assert cfg.reward.select == "crosslingual" and cfg.reward.beta == 0.1
    # Algorithm 1: pi_ref <- pi^{t-1} for training; Eq. 9 with the fixed pi_I for the reward (Tables 6, 11).
    assert cfg.reference.training == "previous" and cfg.reference.reward == "initial"
    assert cfg.train["loss"]["name"] == "dpo_nll"


@pytest.mark.parametrize("overrides, message", [
    (["policy.adapter=a", "sampling.temprature=1"], r"config: sampling\.temprature: unknown key \(did you mean 'temperature'\?\)"),
    (["policy.adapter=a", "sampling.n=1"], r"config: sampling\.n: Input should be greater than or equal to 2"),
    (["policy.adapter=a", "reward.select=bleu"], r"config: reward\.select: Input should be"),
    ([], r"config: policy: the initial policy equals the reference"),
    (["policy.adapter=a", "init.pairs=mtpe"], r"init\.pairs and policy\.adapter are both set"),
    (["policy.adapter=a", "train.model.name_or_path=x"], r"config: train\.model: not settable here"),
    (["policy.adapter=a", "train.reference.adapter=x"], r"config: train\.reference\.adapter: not settable here"),
    (["policy.adapter=a", "reference.reward=latest"], r"config: reference\.reward: Input should be"),
    (["policy.adapter=a", "train.loss.name=nope"], r"config: train: loss\.name: unknown loss"),
    (["policy.adapter=a", "train.loss.alpha=3"], r"config: train: loss\.alpha: unknown key for loss dpo_nll"),
    (["policy.adapter=a", "prompts.languages=[en, xx]"], r"unknown language 'xx'"),
    (["policy.adapter=a", "train.data.chat_format=none"], r"train\.data\.chat_format"),
])
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(UserError, match=message) as info:
        load_icr_config(None, overrides)
    assert "\n" not in str(info.value)


def test_kto_and_capo_are_accepted_losses():
    assert load_icr_config(None, ["policy.adapter=a", "train.loss.name=kto", "train.training.batch_size=2"]).train["loss"]["name"] == "kto"
    assert load_icr_config(None, ["policy.adapter=a", "train.loss={name: capo, alpha: 2.0}"]).train["loss"]["name"] == "capo"
