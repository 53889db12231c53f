"""`xlpo data mtpe`: CAPO's MTPE preference pairs (DivEMT + MLQE-PE), on fixtures and on the staged data."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from divemt_rows import HEADER, ROWS, write_divemt_fixture
from typer.testing import CliRunner

from xlpo.data.detok import detokenize, join_cjk_segments, remove_cjk_spaces
from xlpo.data.mtpe import common as mtpe
from xlpo.data.mtpe.build import build_mtpe, make_mtpe
from xlpo.data.mtpe.common import PROMPT_TEMPLATE, SPLITS, make_prompt
from xlpo.data.mtpe.divemt import divemt_rows_to_triples
from xlpo.data.mtpe.mlqe_pe import mlqe_da_path, mlqe_pe_paths, mlqe_pe_rows_to_triples
from xlpo.errors import UserError

ID_RE = re.compile(r"^mtpe-(divemt|mlqe-pe)-en-(ar|it|nl|tr|uk|vi|de|zh)-[0-9a-f]{12}$")


@pytest.fixture(scope="session")
def fix_mlqe(shared_data, tmp_path_factory) -> Path:
    """The MLQE-PE rows the fixture tests need, cut from the real data (tests/mlqe_subset.py)."""
    from mlqe_subset import build_mlqe_subset

    return build_mlqe_subset(shared_data / "mlqe-pe", tmp_path_factory.mktemp("mlqe-pe"))


@pytest.fixture(scope="session")
def fix_divemt(tmp_path_factory) -> Path:
    """A `divemt/` folder holding the hand-written rows of tests/divemt_rows.py as `warmup.tsv`."""
    return write_divemt_fixture(tmp_path_factory.mktemp("data") / "divemt")


def _fixture_build(mlqe: Path, divemt: Path, **kwargs):
    kwargs.setdefault("directions", "en-it,en-tr,en-de,en-zh")
    kwargs.setdefault("per_split", 2)
    return build_mtpe(kwargs.pop("directions"), divemt=divemt, mlqe_pe=mlqe, **kwargs)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _assert_sources_disjoint(splits: dict[str, list[dict]]) -> None:
    seen: dict[str, str] = {}
    for split, rows in splits.items():
        for row in rows:
            other = seen.setdefault(row["source_id"], split)
            assert other == split, f"source {row['source']!r} is in {other} and {split}"
            # source_id is a function of the English sentence, so equal ids mean equal sentences
            assert row["source_id"] == mtpe.source_id(row["source"])


# ---------------------------------------------------------------------------------------------
# The prompt


def test_prompt_is_the_papers_template_literally():
    assert PROMPT_TEMPLATE == "Translate this text from {src_lang} to {tgt_lang}:\n{src_lang}: {src_sent}\n{tgt_lang}:"
    assert make_prompt("He also begins an affair.", "de") == (
        "Translate this text from English to German:\nEnglish: He also begins an affair.\nGerman:"
    )
    assert make_prompt("x", "zh").endswith("\nChinese:")  # no trailing space or newline
    names = {d: make_prompt("s", d.split("-")[1]).splitlines()[-1] for d in mtpe.DIRECTIONS}
    assert names == {"en-ar": "Arabic:", "en-it": "Italian:", "en-nl": "Dutch:", "en-tr": "Turkish:",
                     "en-uk": "Ukrainian:", "en-vi": "Vietnamese:", "en-de": "German:", "en-zh": "Chinese:"}


# ---------------------------------------------------------------------------------------------
# Detokenization (strings from the staged MLQE-PE files)


def test_detokenize_real_german_row_before_and_after():
    # en-de train line 3: MT and post-edit go through the same Moses detokenizer.
    mt = 'In seinem Tagebuch , Chase schrieb , dass die Veröffentlichung von Mason und Slidell " war wie Galle und Wermut für mich .'
    pe = 'In seinem Tagebuch , schrieb Chase , dass die Veröffentlichung von Mason und Slidell " ... für mich wie Galle und Wermut war .'
    assert detokenize(mt, "de") == (
        'In seinem Tagebuch, Chase schrieb, dass die Veröffentlichung von Mason und Slidell "war wie Galle und Wermut für mich.')
    assert detokenize(pe, "de") == (
        'In seinem Tagebuch, schrieb Chase, dass die Veröffentlichung von Mason und Slidell "... für mich wie Galle und Wermut war.')
    src = "Alpha Phi Alpha also participates in the March of Dimes ' WalkAmerica and raised over $ 181,000 in 2006 ."
    assert detokenize(src, "en") == "Alpha Phi Alpha also participates in the March of Dimes' WalkAmerica and raised over $181,000 in 2006."


def test_detokenize_real_chinese_rows_before_and_after():
    # en-zh train line 3: runs of three spaces are original spaces, single spaces segment boundaries.
    mt = "Alpha   Phi   Alpha   还 参加 了   Dimes   ' WalkAmerica   的   3   月 活动   ，   并 在   2006   年 筹集 了   181   000   美元 。"
    pe = "Alpha   Phi   Alpha   在   2006   年 还 参加 了 March   of   Dimes '   WalkAmerica ， 并 筹集 了   181000   美元 。"
    assert detokenize(mt, "zh") == "Alpha Phi Alpha还参加了Dimes 'WalkAmerica的3月活动，并在2006年筹集了181 000美元。"
    assert detokenize(pe, "zh") == "Alpha Phi Alpha在2006年还参加了March of Dimes' WalkAmerica，并筹集了181000美元。"
    # en-zh dev line 732 (HTER 0): the post-editor only removed spaces after "，"; after the one
    # detokenizer chosen == rejected, so the pair is not a formatting-only preference.
    mt = "虽然 他 反思 了 生活 的 简陋 和 毫无意义   ，   但 他 仍 在 等待 英国人   ，   并 为 邓 西南 辩护 。"
    pe = "虽然 他 反思 了 生活 的 简陋 和 毫无意义   ， 但 他 仍 在 等待 英国人   ， 并 为 邓 西南 辩护 。"
    assert mt != pe
    assert detokenize(mt, "zh") == detokenize(pe, "zh") == "虽然他反思了生活的简陋和毫无意义，但他仍在等待英国人，并为邓西南辩护。"


def test_join_cjk_segments_rules():
    assert join_cjk_segments("最后 的 征服者 骑着 他 的 剑 继续前进 .") == "最后的征服者骑着他的剑继续前进."
    assert join_cjk_segments("那场 对抗 演变成 了 一场 被 称为 “ O . K 枪战 ” 。") == "那场对抗演变成了一场被称为“O.K枪战”。"
    assert join_cjk_segments("Petar   Preradovi ć   写 了") == "Petar Preradović写了"  # a segment boundary inside a word
    # two original spaces (a run of five) become one
    assert join_cjk_segments("House     of   Hard 核心") == "House of Hard核心"
    # runs collapsed elsewhere (e.g. a Hub copy): Latin words are kept apart
    assert join_cjk_segments("Parallax 击败 了 Silver Surfer 。", runs_preserved=False) == "Parallax击败了Silver Surfer。"
    assert remove_cjk_spaces("2016 年 9 月 ， Matt Hardy 手中") == "2016年9月，Matt Hardy手中"


# ---------------------------------------------------------------------------------------------
# Construction on the fixtures


def test_fixture_counts_drops_and_shortfalls(fix_mlqe, fix_divemt):
    build = _fixture_build(fix_mlqe, fix_divemt)
    m = build.manifest
    assert m["counts"] == {
        "train": {"en-it": 2, "en-tr": 1, "en-de": 2, "en-zh": 2},
        "validation": {"en-it": 1, "en-tr": 1, "en-de": 2, "en-zh": 2},
        "evaluation": {"en-it": 1, "en-tr": 1, "en-de": 2, "en-zh": 2},
    }
    assert m["dropped"]["en-it"] == {"translated_from_scratch": 1, "source_too_short": 1, "identical_mt_pe": 1,
                                     "duplicate_pair": 1}
    assert m["dropped"]["en-tr"]["translated_from_scratch"] == 1
    assert m["dropped"]["en-de"]["identical_mt_pe"] == 4
    # en-zh: dev line 732 of the staged data (spacing-only edit) counts as identical
    assert m["dropped"]["en-zh"]["identical_mt_pe"] == 2
    assert m["available"]["en-it"] == {"rows_read": 8, "usable_pairs": 4, "usable_sources": 3}
    short = {(s["direction"], s["split"]): s["written"] for s in m["shortfalls"]}
    assert short == {("en-it", "validation"): 1, ("en-it", "evaluation"): 1, ("en-tr", "train"): 1,
                     ("en-tr", "validation"): 1, ("en-tr", "evaluation"): 1}
    # never padded: a direction's splits together hold at most its usable pairs, each once
    for d in m["config"]["directions"]:
        assert sum(m["counts"][s][d] for s in SPLITS) <= m["available"][d]["usable_pairs"]
    ids = [r["id"] for s in SPLITS for r in build.splits[s]]
    assert len(ids) == len(set(ids))
    _assert_sources_disjoint(build.splits)
    # the summary says so too
    assert any(line.startswith("en-tr train: 1 of 2 pairs") for line in build.summary_lines())


def test_fixture_rows_format_and_fields(fix_mlqe, fix_divemt):
    build = _fixture_build(fix_mlqe, fix_divemt)
    rows = [r for s in SPLITS for r in build.splits[s]]
    for r in rows:
        assert list(r)[:5] == ["id", "prompt", "chosen", "rejected", "lang"]
        assert ID_RE.match(r["id"]), r["id"]
        assert r["prompt"] == make_prompt(r["source"], r["lang"])
        assert r["direction"] == f"en-{r['lang']}"
        assert len(r["source"]) > 50
        assert r["chosen"] != r["rejected"]
        assert r["hter"] is None or 0.0 <= r["hter"] <= 1.0
        assert r["dataset"] == mtpe.DIRECTIONS[r["direction"]]
    by_origin = {r["origin"]: r for r in rows}
    # DivEMT's hter is on a 0-100 scale upstream and stored on MLQE-PE's 0-1 scale
    row = by_origin["fixture-ita-1-pe1-1"]
    assert row["hter"] == 0.235
    assert row["rejected"] == "Il vecchio faro sulla scogliera nord è stato riparato dopo la tempesta lo scorso inverno."
    # pandas-style quoting in the TSV is undone
    quoted = by_origin["fixture-ita-1-pe1-2"]
    assert quoted["source"] == 'The guide said "stay on the marked path" before the group entered the dense forest.'
    # shared sources: the same sentence is in the same split for it and tr
    it_tr = {}
    for split in SPLITS:
        for r in build.splits[split]:
            if r["dataset"] == "divemt":
                it_tr.setdefault(r["source_id"], set()).add(split)
    assert len(it_tr) == 3 and all(len(v) == 1 for v in it_tr.values())
    # MLQE-PE sources come from the DA TSV when it matches, else are detokenized (en-zh test20 has no TSV)
    assert build.manifest["source_text"]["en-zh"] == {"detokenized": 3, "direct_assessment_tsv": 7}


def test_keep_identical_keeps_them_but_never_duplicates(fix_mlqe, fix_divemt):
    build = _fixture_build(fix_mlqe, fix_divemt, keep_identical=True, directions="en-it", per_split=10)
    m = build.manifest
    assert m["dropped"]["en-it"]["identical_mt_pe"] == 0
    assert m["dropped"]["en-it"]["duplicate_pair"] == 1
    rows = [r for s in SPLITS for r in build.splits[s]]
    assert sum(r["chosen"] == r["rejected"] for r in rows) == 1
    assert len(rows) == 5 and len({r["id"] for r in rows}) == 5
    assert m["config"]["keep_identical"] is True


def test_seed_changes_assignment_but_not_the_guarantees(fix_mlqe, fix_divemt):
    a = _fixture_build(fix_mlqe, fix_divemt, directions="en-de,en-zh", per_split=1, seed=1)
    b = _fixture_build(fix_mlqe, fix_divemt, directions="en-de,en-zh", per_split=1, seed=2)
    ids = lambda build: {s: [r["id"] for r in build.splits[s]] for s in SPLITS}  # noqa: E731
    assert ids(a) != ids(b)
    for build in (a, b):
        _assert_sources_disjoint(build.splits)
        assert build.manifest["counts"]["train"] == {"en-de": 1, "en-zh": 1}


def test_rerun_is_byte_identical_and_manifest_is_complete(tmp_path, fix_mlqe, fix_divemt):
    _, first = make_mtpe(tmp_path / "a", "en-it,en-tr,en-de,en-zh", divemt=fix_divemt, mlqe_pe=fix_mlqe, per_split=2)
    _, second = make_mtpe(tmp_path / "b", "en-it,en-tr,en-de,en-zh", divemt=fix_divemt, mlqe_pe=fix_mlqe, per_split=2)
    for name in ("train", "validation", "evaluation", "manifest"):
        assert first[name].read_bytes() == second[name].read_bytes(), name
    manifest = json.loads(first["manifest"].read_text(encoding="utf-8"))
    for split in SPLITS:
        rows = _read_jsonl(first[split])
        assert manifest["files"][split]["rows"] == len(rows) == manifest["totals"][split]
        assert manifest["files"][split]["sha256"] == hashlib.sha256(first[split].read_bytes()).hexdigest()
        for d, n in manifest["counts"][split].items():
            assert sum(r["direction"] == d for r in rows) == n
    hashes = {i["file"]: i["sha256"] for i in manifest["inputs"]}
    assert hashes["warmup.tsv"] == hashlib.sha256((fix_divemt / "warmup.tsv").read_bytes()).hexdigest()
    pe = "post-editing/train/en-de-train/train.pe"
    assert hashes[pe] == hashlib.sha256((fix_mlqe / pe).read_bytes()).hexdigest()
    assert manifest["config"]["seed"] == 42 and manifest["prompt_template"] == PROMPT_TEMPLATE
    assert set(manifest["dropped_total"]) == set(mtpe.DROP_REASONS)


def test_directions_select_datasets_only_as_needed(tmp_path, fix_mlqe):
    # only MLQE-PE directions: no DivEMT folder is needed at all
    build = build_mtpe("en-zh", divemt=tmp_path / "absent", mlqe_pe=fix_mlqe, per_split=1)
    assert build.manifest["config"]["directions"] == ["en-zh"]
    assert {r["lang"] for s in SPLITS for r in build.splits[s]} == {"zh"}
    assert build.manifest["config"]["mlqe-pe"]["splits"] == ["train", "dev", "test20"]
    only_train = build_mtpe("en-de", mlqe_pe=fix_mlqe, per_split=1, mlqe_splits="train")
    assert {r["origin"].split(":")[0] for s in SPLITS for r in only_train.splits[s]} == {"train"}


# ---------------------------------------------------------------------------------------------
# The Hub code path, on in-memory rows (no network here)


def _fake_divemt_rows():
    long_src = "The old lighthouse on the northern cliff was repaired after the storm last winter."
    return [
        {"unit_id": "u1", "lang_id": "ita", "task_type": "pe1", "translation_type": "pe", "hter": 23.5,
         "src_text": long_src, "mt_text": "Il faro fu riparato.", "tgt_text": "Il faro è stato riparato."},
        {"unit_id": "u2", "lang_id": "ita", "task_type": "ht", "translation_type": "ht", "hter": None,
         "src_text": long_src, "mt_text": None, "tgt_text": "Il vecchio faro venne riparato."},
        {"unit_id": "u3", "lang_id": "vie", "task_type": "pe2", "translation_type": "pe", "hter": 0.0,
         "src_text": long_src, "mt_text": "Ngọn hải đăng.", "tgt_text": "Ngọn hải đăng cũ."},
    ]


def _fake_mlqe_rows():
    return [
        {"translation": {"en": "He also begins an affair with Veronica Harrington , who bails him out .",
                         "zh": "他 还 开始 和   Veronica   Harrington   发生 了 关系   ， 她 救 了 他 。"},
         "pe": "他 还 和   Veronica   Harrington   有 了 私情   ， 她 把 他 救 了 出来 。", "hter": 0.5,
         "src_tags": [], "mt_tags": [], "alignments": []},
    ]


def test_hub_row_conversion_divemt():
    loaded = divemt_rows_to_triples(((f"row {i + 1}", r) for i, r in enumerate(_fake_divemt_rows())),
                                    ["en-it", "en-vi"])
    assert [(t.direction, t.origin, t.hter) for t in loaded.triples] == [("en-it", "u1", 0.235), ("en-vi", "u3", 0.0)]
    assert loaded.skipped == {("en-it", "translated_from_scratch"): 1}
    only_vi = divemt_rows_to_triples(((f"row {i + 1}", r) for i, r in enumerate(_fake_divemt_rows())), ["en-vi"])
    assert [t.direction for t in only_vi.triples] == ["en-vi"]


def test_hub_row_conversion_mlqe_pe():
    loaded = mlqe_pe_rows_to_triples(_fake_mlqe_rows(), "en-zh", "dev")
    (t,) = loaded.triples
    assert t.source == "He also begins an affair with Veronica Harrington, who bails him out."
    assert t.mt == "他还开始和Veronica Harrington发生了关系，她救了他。"
    assert t.pe == "他还和Veronica Harrington有了私情，她把他救了出来。"
    assert (t.origin, t.hter) == ("dev:1", 0.5)
    assert loaded.source_text["en-zh"] == {"detokenized": 1}
    with pytest.raises(UserError, match=r"row 1: empty or missing pe"):
        mlqe_pe_rows_to_triples([{"translation": {"en": "a", "zh": "b"}, "pe": "", "hter": 0.1}], "en-zh", "train")


def test_hub_build_end_to_end_with_a_fake_loader(monkeypatch):
    calls = []

    def fake_load(repo, config, split):
        calls.append((repo, config, split))
        return _fake_divemt_rows() if repo == mtpe.DIVEMT_HUB else _fake_mlqe_rows()

    monkeypatch.setattr(mtpe, "load_hub_split", fake_load)
    build = build_mtpe("en-it,en-zh", divemt="hub", mlqe_pe="hub", per_split=1)
    assert calls[0] == ("GroNLP/divemt", "main", "train")
    assert ("wmt/wmt20_mlqe_task2", "en-zh", "validation") in calls and len(calls) == 4
    assert build.manifest["config"]["divemt"] == {"from": "hub", "repo": "GroNLP/divemt", "config": "main"}
    assert {i.get("hub") for i in build.manifest["inputs"]} == {"GroNLP/divemt", "wmt/wmt20_mlqe_task2"}
    # the same Hub row seen in three MLQE-PE splits is one pair: later copies are duplicates
    assert build.manifest["dropped"]["en-zh"]["duplicate_pair"] == 2
    assert build.manifest["totals"] == {"train": 2, "validation": 0, "evaluation": 0}


# ---------------------------------------------------------------------------------------------
# Bad input: one-line errors naming the file and line


@pytest.fixture()
def mlqe_copy(tmp_path, fix_mlqe) -> Path:
    target = tmp_path / "mlqe-pe"
    shutil.copytree(fix_mlqe, target)
    return target


TRAIN_DE = Path("post-editing/train/en-de-train")


def _error(**kwargs) -> str:
    kwargs.setdefault("per_split", 1)
    with pytest.raises(UserError) as info:
        build_mtpe(kwargs.pop("directions", "en-de"), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file_is_named(mlqe_copy):
    (mlqe_copy / TRAIN_DE / "train.pe").unlink()
    message = _error(mlqe_pe=mlqe_copy)
    assert message.startswith(str(mlqe_copy / TRAIN_DE / "train.pe")) and "file not found" in message


def test_misaligned_line_counts(mlqe_copy):
    path = mlqe_copy / TRAIN_DE / "train.mt"
    path.write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8")
    message = _error(mlqe_pe=mlqe_copy)
    assert message.startswith(f"{path}:6: 5 lines, but train.src has 6")


def test_empty_line(mlqe_copy):
    path = mlqe_copy / TRAIN_DE / "train.pe"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = "  "
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert _error(mlqe_pe=mlqe_copy) == f"{path}:2: empty line"


def test_undecodable_bytes(mlqe_copy):
    path = mlqe_copy / TRAIN_DE / "train.src"
    data = path.read_bytes().split(b"\n")
    data[2] = data[2][:10] + b"\xff\xfe" + data[2][10:]
    path.write_bytes(b"\n".join(data))
    assert _error(mlqe_pe=mlqe_copy) == f"{path}:3: not valid UTF-8 (byte 0xff at byte 11 of the line)"


def test_bad_hter_value(mlqe_copy):
    path = mlqe_copy / TRAIN_DE / "train.hter"
    path.write_text("0.1\n0.2\nabc\n0.4\n0.5\n0.6\n", encoding="utf-8")
    assert _error(mlqe_pe=mlqe_copy) == f"{path}:3: expected an HTER number, got 'abc'"


def test_misaligned_direct_assessment_tsv(mlqe_copy):
    path = mlqe_copy / "direct-assessments/train/en-de-train/train.ende.df.short.tsv"
    path.write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8")
    assert _error(mlqe_pe=mlqe_copy).startswith(f"{path}:7: 5 rows, but the post-editing files have 6 lines")


def test_unknown_direction_and_split(fix_mlqe):
    assert _error(directions="en-de,en-fr") == (
        "unknown direction 'en-fr': expected one of en-ar, en-it, en-nl, en-tr, en-uk, en-vi, en-de, en-zh")
    assert "unknown MLQE-PE split 'test21'" in _error(mlqe_pe=fix_mlqe, mlqe_splits="train,test21")


def _divemt_copy(tmp_path, edit) -> Path:
    rows = [list(HEADER), *(list(row) for row in ROWS)]
    edit(rows)
    return write_divemt_fixture(tmp_path / "divemt", rows)


def test_divemt_bad_rows(tmp_path):
    def unknown_lang(rows):
        rows[3][4] = "fra"

    folder = _divemt_copy(tmp_path / "a", unknown_lang)
    assert _error(directions="en-it", divemt=folder) == (
        f"{folder / 'warmup.tsv'}:4: unknown lang_id 'fra'; expected one of ara, ita, nld, tur, ukr, vie")

    def empty_mt(rows):
        rows[5][9] = ""

    folder = _divemt_copy(tmp_path / "b", empty_mt)
    assert _error(directions="en-it", divemt=folder) == f"{folder / 'warmup.tsv'}:6: empty mt_text in a post-editing row"

    def short_row(rows):
        rows[2] = rows[2][:5]

    folder = _divemt_copy(tmp_path / "c", short_row)
    assert _error(directions="en-it", divemt=folder) == (
        f"{folder / 'warmup.tsv'}:3: 5 tab-separated fields, the header has 12")

    def no_column(rows):
        rows[0][10] = "target"

    folder = _divemt_copy(tmp_path / "d", no_column)
    assert _error(directions="en-it", divemt=folder) == f"{folder / 'warmup.tsv'}:1: missing column(s) tgt_text in the header"


def test_default_data_location(tmp_path, monkeypatch, fix_divemt):
    monkeypatch.delenv("XLPO_SHARED_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    message = _error(directions="en-de")
    assert message.startswith("no mlqe-pe data found: pass --mlqe-pe DIR")
    monkeypatch.setenv("XLPO_SHARED_DATA", str(tmp_path / "data"))
    assert _error(directions="en-it") == (
        f"{tmp_path / 'data' / 'divemt'}: no such directory (divemt data); pass --divemt DIR or --divemt hub")
    monkeypatch.setenv("XLPO_SHARED_DATA", str(fix_divemt.parent))
    assert build_mtpe("en-it", per_split=1).manifest["totals"]["train"] >= 1


# ---------------------------------------------------------------------------------------------
# The command


def _cli():
    from xlpo.cli import app
    from xlpo.cli import data  # noqa: F401  (attaches `xlpo data`)

    return app


def test_cli_mtpe_writes_and_summarises(tmp_path, fix_mlqe, fix_divemt):
    out = tmp_path / "out"
    result = CliRunner().invoke(_cli(), ["data", "mtpe", "--out", str(out), "--divemt", str(fix_divemt),
                                         "--mlqe-pe", str(fix_mlqe), "--per-split", "2",
                                         "--directions", "en-it,en-tr,en-de,en-zh"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["evaluation.jsonl", "manifest.json", "train.jsonl",
                                                     "validation.jsonl"]
    assert "Shortfall" in result.output and "en-tr: train 1/2" in result.output
    assert str(out / "manifest.json") in result.output.replace("\n", "")


@pytest.mark.parametrize("args, expected", [
    (["--directions", "en-xx"], "xlpo: error: unknown direction 'en-xx'"),
    (["--directions", "en-de", "--mlqe-pe", "/nonexistent/mlqe"], "xlpo: error: /nonexistent/mlqe: no such directory"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, expected):
    result = CliRunner().invoke(_cli(), ["data", "mtpe", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_cli_bad_file_line_exits_2(mlqe_copy, tmp_path):
    path = mlqe_copy / TRAIN_DE / "train.src"
    path.write_bytes(path.read_bytes().replace(b"Husserl", b"Husserl\xc3"))
    result = CliRunner().invoke(_cli(), ["data", "mtpe", "--out", str(tmp_path / "o"), "--directions", "en-de",
                                         "--mlqe-pe", str(mlqe_copy)])
    assert result.exit_code == 2
    assert result.stderr == f"xlpo: error: {path}:1: not valid UTF-8 (byte 0xc3 at byte 38 of the line)\n"


# ---------------------------------------------------------------------------------------------
# The staged data (../shared/data)


@pytest.fixture(scope="module")
def real_build(shared_data):
    return build_mtpe(divemt=shared_data / "divemt", mlqe_pe=shared_data / "mlqe-pe")


def test_real_default_build_counts(real_build):
    m = real_build.manifest
    # The largest balanced set the staged data allows (seed 42): MLQE-PE fills 100 per split; the
    # DivEMT warmup split has 9-10 usable long sources per language, shared out by source.
    assert m["counts"] == {
        "train": {"en-ar": 9, "en-it": 9, "en-nl": 9, "en-tr": 9, "en-uk": 9, "en-vi": 9, "en-de": 100, "en-zh": 100},
        "validation": {"en-ar": 11, "en-it": 9, "en-nl": 7, "en-tr": 9, "en-uk": 12, "en-vi": 12, "en-de": 100,
                       "en-zh": 100},
        "evaluation": {"en-ar": 9, "en-it": 9, "en-nl": 9, "en-tr": 9, "en-uk": 9, "en-vi": 9, "en-de": 100,
                       "en-zh": 100},
    }
    assert m["totals"] == {"train": 254, "validation": 260, "evaluation": 254}
    assert {d: v["usable_sources"] for d, v in m["available"].items() if v["usable_sources"] < 100} == {
        "en-ar": 10, "en-it": 10, "en-nl": 9, "en-tr": 10, "en-uk": 10, "en-vi": 10}
    # every DivEMT pair with a long source and MT != PE is used, none twice (README: 29 29 25 27 30 30,
    # less two en-it post-edits that two translators made identically)
    for d, usable in {"en-ar": 29, "en-it": 27, "en-nl": 25, "en-tr": 27, "en-uk": 30, "en-vi": 30}.items():
        assert m["available"][d]["usable_pairs"] == usable == sum(m["counts"][s][d] for s in SPLITS)
    assert m["dropped_total"] == {"translated_from_scratch": 162, "source_too_short": 266,
                                  "identical_mt_pe": 3846, "duplicate_pair": 2}
    assert len(m["shortfalls"]) == 18 and {s["direction"] for s in m["shortfalls"]} == {
        "en-ar", "en-it", "en-nl", "en-tr", "en-uk", "en-vi"}
    assert m["source_text"] == {"en-de": {"direct_assessment_tsv": 9000}, "en-zh": {"direct_assessment_tsv": 9000}}


def test_real_rows_respect_the_construction(real_build):
    rows = [r for s in SPLITS for r in real_build.splits[s]]
    assert len({r["id"] for r in rows}) == len(rows)
    _assert_sources_disjoint(real_build.splits)
    for r in rows:
        assert ID_RE.match(r["id"]) and len(r["source"]) > 50 and r["chosen"] != r["rejected"]
        assert r["prompt"] == make_prompt(r["source"], r["lang"])
        if r["dataset"] == "mlqe-pe":
            # detokenized: no Moses-style space before a comma in German, no segmented Chinese
            if r["lang"] == "de":
                assert " ," not in r["chosen"] and " ," not in r["rejected"]
            else:
                assert not re.search(r"[\u4e00-\u9fff] [\u4e00-\u9fff]", r["chosen"] + r["rejected"])


def test_real_detokenizer_reproduces_the_untokenized_mt(shared_data):
    # The DA TSVs hold the untokenized MT: the one detokenizer gets it back (zh up to spaces next
    # to CJK, which it removes by design; de up to the TSV's own edits of quotes and slashes).
    root = shared_data / "mlqe-pe"
    for direction, lang, minimum in (("en-zh", "zh", 1000), ("en-de", "de", 991)):
        da = mlqe_da_path(root, direction, "test20")
        mt = mlqe_pe_paths(root, direction, "test20")["mt"].read_text(encoding="utf-8").splitlines()
        with open(da, encoding="utf-8", newline="") as f:
            table = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        same = sum(detokenize(t, lang) == remove_cjk_spaces(row[2]) if lang == "zh"
                   else detokenize(t, lang) == " ".join(row[2].split()) for t, row in zip(mt, table))
        assert len(mt) == len(table) == 1000 and same >= minimum, (direction, same)


def test_real_rerun_is_byte_identical(shared_data, tmp_path, real_build):
    _, paths = make_mtpe(tmp_path / "again", divemt=shared_data / "divemt", mlqe_pe=shared_data / "mlqe-pe")
    for split in SPLITS:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in real_build.splits[split])
        assert paths[split].read_bytes() == text.encode("utf-8")
    manifest = json.loads(paths["manifest"].read_text(encoding="utf-8"))
    warmup = next(i for i in manifest["inputs"] if i["file"] == "warmup.tsv")
    assert warmup["sha256"] == hashlib.sha256((shared_data / "divemt" / "warmup.tsv").read_bytes()).hexdigest()
    assert len(manifest["inputs"]) == 1 + 2 * 3 * 5  # warmup.tsv; src/mt/pe/hter + DA TSV per direction and split
