"""`xlpo data stats`: per-language counts, lengths, tokens per character, BLEU/chrF and HTER."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xlpo.data.mtpe_stats import bleu_tokenizer, compute_stats, hter_distribution, write_stats
from xlpo.errors import UserError


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _row(lang, chosen, rejected, hter=None, i=0):
    return {"id": f"r{lang}{i}", "prompt": "p", "chosen": chosen, "rejected": rejected, "lang": lang, "hter": hter}


def test_bleu_and_chrf_on_hand_computable_pairs(tmp_path):
    rows = [
        # 13a: hypothesis 6 tokens, reference 7, every n-gram matches: BLEU = 100 * exp(1 - 7/6)
        _row("en", "the cat sat on the mat today", "the cat sat on the mat", 0.1),
        # chrF of "abc" against "abd": orders 1-3 have n-grams; P = R = (2/3 + 1/2 + 0) / 3 = 7/18
        _row("xx", "abd", "abc", 0.2),
    ]
    stats = compute_stats(_write(tmp_path / "p.jsonl", rows), tokenizer=None)["languages"]
    assert stats["en"]["bleu"] == pytest.approx(100 * math.exp(1 - 7 / 6), abs=1e-3)
    assert stats["xx"]["chrf"] < stats["en"]["chrf"] < 100
    assert stats["xx"]["chrf"] == pytest.approx(100 * 7 / 18, abs=1e-3)
    assert stats["en"]["bleu_tokenize"] == "13a"


def test_chinese_bleu_uses_the_zh_tokenizer(tmp_path):
    # tokenize="zh" splits every CJK character: 1- to 4-gram precisions 5/6, 4/5, 3/4, 2/3,
    # equal lengths, so BLEU = 100 * (1/3) ** (1/4). With 13a the sentence would be one token (BLEU 0).
    rows = [_row("zh", "我喜欢这只猫", "我喜欢这只狗", 0.2), _row("de", "我喜欢这只猫", "我喜欢这只狗", 0.2)]
    stats = compute_stats(_write(tmp_path / "zh.jsonl", rows), tokenizer=None)["languages"]
    assert bleu_tokenizer("zh") == stats["zh"]["bleu_tokenize"] == "zh"
    assert stats["zh"]["bleu"] == pytest.approx(100 * (1 / 3) ** 0.25, abs=1e-3)
    assert "tok:zh" in stats["zh"]["bleu_signature"]
    assert stats["de"]["bleu"] == pytest.approx(0.0, abs=1e-6)


def test_counts_lengths_tokens_and_hter(tmp_path, tokenizer):
    rows = [
        _row("de", "Das ist gut.", "Das ist schlecht.", 0.0, 1),
        _row("de", "Ein Haus.", "Ein Haus.", 0.5, 2),
        _row("de", "Hallo Welt!", "Hallo Erde!", 1.0, 3),
        _row("de", "Noch ein Satz.", "Noch ein Satz!", None, 4),
        _row("zh", "我喜欢这只猫", "我喜欢这只狗", 0.25, 5),
    ]
    path = _write(tmp_path / "train.jsonl", rows)
    stats, out = write_stats(path, tokenizer)
    assert out == tmp_path / "train.stats.json"
    assert json.loads(out.read_text(encoding="utf-8")) == stats
    de = stats["languages"]["de"]
    chosen = [r["chosen"] for r in rows[:4]]
    rejected = [r["rejected"] for r in rows[:4]]
    assert de["n"] == 4 and de["identical"] == 1
    assert de["chosen_chars_mean"] == pytest.approx(sum(map(len, chosen)) / 4, abs=1e-4)
    assert de["rejected_chars_mean"] == pytest.approx(sum(map(len, rejected)) / 4, abs=1e-4)
    n_tok = lambda texts: sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)  # noqa: E731
    assert de["chosen_tokens_mean"] == pytest.approx(n_tok(chosen) / 4, abs=1e-4)
    assert de["tokens_per_char"] == pytest.approx(
        (n_tok(chosen) + n_tok(rejected)) / (sum(map(len, chosen)) + sum(map(len, rejected))), abs=1e-6)
    # the tokenization-rate disparity: Chinese costs far more tokens per character than German
    assert stats["languages"]["zh"]["tokens_per_char"] > 2 * de["tokens_per_char"]
    h = de["hter"]
    assert (h["n"], h["missing"], h["mean"], h["median"], h["min"], h["max"], h["zero"]) == (3, 1, 0.5, 0.5, 0.0, 1.0, 1)
    assert h["p25"] == 0.25 and h["p75"] == 0.75
    assert h["histogram"]["counts"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert stats["tokenizer"] == tokenizer.name_or_path and stats["rows"] == 5


def test_hter_distribution_quartiles():
    d = hter_distribution([0.1, 0.2, 0.3, 0.4, 0.9, None])
    assert (d["n"], d["missing"], d["median"], d["p25"], d["p75"]) == (5, 1, 0.3, 0.2, 0.4)
    assert d["std"] == pytest.approx(math.sqrt(sum((v - 0.38) ** 2 for v in (0.1, 0.2, 0.3, 0.4, 0.9)) / 5), abs=1e-6)
    assert hter_distribution([None]) == {"n": 0, "missing": 1}


def test_bad_stats_input_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_row("de", "a", "b")) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"^{path}:2: invalid JSON"):
        compute_stats(path, tokenizer=None)
    path.write_text(json.dumps({"chosen": "a", "lang": "de"}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"^{path}:1: missing field 'rejected'"):
        compute_stats(path, tokenizer=None)
    with pytest.raises(UserError, match="file not found"):
        compute_stats(tmp_path / "absent.jsonl", tokenizer=None)


def _cli():
    from xlpo.cli import app
    from xlpo.cli import data  # noqa: F401

    return app


def test_cli_stats_prints_a_table_and_saves_json(tmp_path):
    rows = [_row("de", "Das ist gut.", "Das ist schlecht.", 0.3, 1), _row("zh", "我喜欢这只猫", "我喜欢这只狗", 0.2, 2)]
    path = _write(tmp_path / "evaluation.jsonl", rows)
    out = tmp_path / "s" / "stats.json"
    result = CliRunner().invoke(_cli(), ["data", "stats", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "zh" in result.output and "BLEU" in result.output and str(out) in result.output.replace("\n", "")
    stats = json.loads(out.read_text(encoding="utf-8"))
    assert set(stats["languages"]) == {"de", "zh"} and stats["tokenizer"] == "embedded"
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"chosen": "a", "rejected": "b"}\n\xff\n')
    result = CliRunner().invoke(_cli(), ["data", "stats", str(bad)])
    assert result.exit_code == 2
    assert result.stderr == f"xlpo: error: {bad}:2: not UTF-8 text (byte 1 of the line)\n"


def test_stats_on_the_real_training_split(shared_data, tmp_path, tokenizer):
    from xlpo.data.mtpe.build import make_mtpe

    _, paths = make_mtpe(tmp_path / "mtpe", divemt=shared_data / "divemt", mlqe_pe=shared_data / "mlqe-pe")
    stats = compute_stats(paths["train"], tokenizer)["languages"]
    assert set(stats) == {"ar", "it", "nl", "tr", "uk", "vi", "de", "zh"}
    assert stats["de"]["n"] == stats["zh"]["n"] == 100 and stats["ar"]["n"] == 9
    assert stats["zh"]["bleu_tokenize"] == "zh" and stats["de"]["bleu_tokenize"] == "13a"
    for lang, s in stats.items():
        assert 0 < s["bleu"] < 100 and 0 < s["chrf"] < 100 and s["identical"] == 0, lang
        assert 0 <= s["hter"]["min"] <= s["hter"]["median"] <= s["hter"]["max"] <= 1, lang
    # English-centric BPE: Chinese, Arabic, Ukrainian and Vietnamese cost more tokens per character
    for lang in ("zh", "ar", "uk", "vi"):
        assert stats[lang]["tokens_per_char"] > 1.5 * stats["de"]["tokens_per_char"], lang
