"""XL-Sum: loading and sampling (folder and Hub), prompts, ROUGE-L tokenization and scores, the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chat_fakes import FakeBackend
from xlpo.bench.xlsum import (RougeTokenizer, article_from_prompt, item_seed, language_code, load_xlsum,
                              read_summaries, rouge_l, run_xlsum, summary_prompt, table, truncate_text)
from xlpo.clients.chat import ChatReply
from xlpo.errors import UserError
from xlpo.fileio import iter_jsonl

FIXTURES = Path(__file__).parent / "fixtures" / "xlsum"


def fixture_rows(name):
    return [row for _, row in iter_jsonl(FIXTURES / name)]


def write_rows(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


# --- loading -------------------------------------------------------------------------------------

def test_loader_reads_name_and_code_files_and_keeps_ids():
    items = load_xlsum(FIXTURES, ["en", "zh", "vi"], 2, seed=0)
    assert [item.language for item in items] == ["en", "en", "zh", "zh", "vi", "vi"]
    en_ids = {row["id"] for row in fixture_rows("english_test.jsonl")}
    zh_rows = {row["id"]: row for row in fixture_rows("zh_test.jsonl")}
    assert {item.id for item in items[:2]} <= en_ids
    for item in items[2:4]:  # zh comes from the code-named file, unchanged
        assert item.text == zh_rows[item.id]["text"] and item.summary == zh_rows[item.id]["summary"]
        assert item.key == f"zh/{item.id}" and "zh_test.jsonl:" in item.where


def test_language_names_and_codes_are_equivalent():
    assert language_code("chinese_simplified") == language_code("zh-CN") == language_code("ZH") == "zh"
    assert language_code("serbian_latin") == language_code("sr_Latn") == "sr-latn"
    assert language_code("chinese_traditional") == "zh-tw"
    by_code = load_xlsum(FIXTURES, ["en", "zh"], 3, seed=5)
    by_name = load_xlsum(FIXTURES, ["english", "chinese_simplified"], 3, seed=5)
    assert by_code == by_name
    with pytest.raises(UserError, match="unknown XL-Sum language 'klingon'"):
        language_code("klingon")


def ids(items):
    return [item.id for item in items]


def test_sampling_is_seeded_nested_and_per_language():
    first = ids(load_xlsum(FIXTURES, ["en"], 3, seed=1))
    assert first == ids(load_xlsum(FIXTURES, ["en"], 3, seed=1))
    assert ids(load_xlsum(FIXTURES, ["en"], 2, seed=1)) == first[:2]  # a smaller sample is a prefix
    everything = ids(load_xlsum(FIXTURES, ["en"], None, seed=1))
    assert sorted(everything) == sorted(row["id"] for row in fixture_rows("english_test.jsonl"))
    assert ids(load_xlsum(FIXTURES, ["en"], 50, seed=1)) == everything  # more than there are: all of them
    assert len({tuple(ids(load_xlsum(FIXTURES, ["en"], 3, seed=s))) for s in range(10)}) > 1
    # the English sample does not depend on which other languages are asked for
    assert ids(load_xlsum(FIXTURES, ["zh", "en"], 3, seed=1))[3:] == first


@pytest.mark.parametrize("bad_line, message", [
    ({"id": "x2", "text": "Some text."}, r"english_test.jsonl:2: field 'summary' missing"),
    ({"id": "x2", "text": "  ", "summary": "S."}, r"english_test.jsonl:2: field 'text' missing or empty"),
    ({"id": "x2", "text": "T.", "summary": None}, r"english_test.jsonl:2: field 'summary'"),
    ({"text": "T.", "summary": "S."}, r"english_test.jsonl:2: field 'id'"),
    ({"id": "x1", "text": "T.", "summary": "S."}, r"english_test.jsonl:2: duplicate id 'x1'"),
    (["not", "an", "object"], r"english_test.jsonl:2: expected a JSON object"),
    ("{not json", r"english_test.jsonl:2: invalid JSON"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, bad_line, message):
    good = {"id": "x1", "text": "A text.", "summary": "A summary."}
    write_rows(tmp_path / "english_test.jsonl", [good, bad_line, {**good, "id": "x3"}])
    with pytest.raises(UserError, match=message):
        load_xlsum(tmp_path, ["en"], 1, seed=0)


def test_missing_ambiguous_and_bad_sources(tmp_path):
    row = {"id": "a", "text": "T.", "summary": "S."}
    with pytest.raises(UserError, match="no XL-Sum file for 'en': expected english_test.jsonl or en_test.jsonl"):
        load_xlsum(tmp_path, ["en"], 1, seed=0)
    write_rows(tmp_path / "english_test.jsonl", [row])
    write_rows(tmp_path / "en_test.jsonl", [row])
    with pytest.raises(UserError, match="both english_test.jsonl and en_test.jsonl exist"):
        load_xlsum(tmp_path, ["en"], 1, seed=0)
    with pytest.raises(UserError, match="no such folder, and not a Hub id"):
        load_xlsum(tmp_path / "nowhere" / "deeper", ["en"], 1, seed=0)
    with pytest.raises(UserError, match="is a file; expected a folder"):
        load_xlsum(tmp_path / "en_test.jsonl", ["en"], 1, seed=0)
    with pytest.raises(UserError, match="distinct"):
        load_xlsum(tmp_path, ["en", "english"], 1, seed=0)
    (tmp_path / "en_test.jsonl").unlink()
    assert len(load_xlsum(tmp_path, ["en"], 1, seed=0, split="test")) == 1
    with pytest.raises(UserError, match="english_validation.jsonl"):
        load_xlsum(tmp_path, ["en"], 1, seed=0, split="validation")


# --- the Hub path, never the network -------------------------------------------------------------

def test_hub_path_uses_load_dataset_with_xlsum_config_names(monkeypatch):
    import datasets

    calls = []
    files = {"english": "english_test.jsonl", "chinese_simplified": "zh_test.jsonl"}

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return fixture_rows(files[name])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    from_hub = load_xlsum("csebuetnlp/xlsum", ["zh", "en"], 2, seed=3)
    assert calls == [("csebuetnlp/xlsum", "chinese_simplified", "test"), ("csebuetnlp/xlsum", "english", "test")]
    local = load_xlsum(FIXTURES, ["zh", "en"], 2, seed=3)
    assert [(i.key, i.text, i.summary) for i in from_hub] == [(i.key, i.text, i.summary) for i in local]
    assert from_hub[0].where.startswith("csebuetnlp/xlsum[chinese_simplified/test] row ")


def test_hub_bad_row_and_failure_are_user_errors(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset",
                        lambda path, name, split: [{"id": "a", "text": "T", "summary": "S"}, {"id": "b", "text": "T"}])
    with pytest.raises(UserError, match=r"csebuetnlp/xlsum\[english/test\] row 2: field 'summary'"):
        load_xlsum("csebuetnlp/xlsum", ["en"], 1, seed=0)

    def offline(path, name, split):
        raise ConnectionError("no route to host\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match=r"config english, split test\): could not load .*ConnectionError: no route "
                                        r"to host; download"):
        load_xlsum("csebuetnlp/xlsum", ["en"], 1, seed=0)


def test_existing_local_folder_wins_over_hub_lookalike(monkeypatch, tmp_path):
    import datasets

    def never(*args, **kwargs):
        raise AssertionError("the Hub must not be used for an existing folder")

    monkeypatch.setattr(datasets, "load_dataset", never)
    write_rows(tmp_path / "owner" / "name" / "en_test.jsonl", [{"id": "a", "text": "T.", "summary": "S."}])
    monkeypatch.chdir(tmp_path)
    assert [item.id for item in load_xlsum("owner/name", ["en"], 1, seed=0)] == ["a"]


# --- prompts, truncation, seeds ------------------------------------------------------------------

def test_summary_prompt_is_the_papers_instruction():
    assert summary_prompt("zh", "正文") == "Generate a one sentence summary of the text below in Chinese.\n\n正文"
    assert summary_prompt("es", "Texto.") == "Generate a one sentence summary of the text below in Spanish.\n\nTexto."
    assert article_from_prompt("zh", summary_prompt("zh", "正文\n\n第二段")) == "正文\n\n第二段"
    assert article_from_prompt("ja", summary_prompt("zh", "正文")) is None


def test_truncate_text_by_characters():
    assert truncate_text("short", 100) == ("short", False)
    assert truncate_text("x" * 500, None) == ("x" * 500, False)
    # a space within the last tenth: cut there, keeping whole words
    assert truncate_text("a" * 95 + " " + "b" * 10, 100) == ("a" * 95, True)
    # the only space is far back: a hard cut at 100 characters
    assert truncate_text("a" * 50 + " " + "b" * 60, 100) == ("a" * 50 + " " + "b" * 49, True)
    assert truncate_text("中" * 10, 4) == ("中中中中", True)


def test_item_seed_is_stable_and_per_item():
    assert item_seed(0, "en/a") == item_seed(0, "en/a")
    assert len({item_seed(0, "en/a"), item_seed(1, "en/a"), item_seed(0, "en/b")}) == 3
    assert all(0 <= item_seed(s, "zh/x") < 2 ** 31 for s in range(20))


# --- ROUGE-L -------------------------------------------------------------------------------------

def test_tokenizer_words_and_characters():
    words, chars = RougeTokenizer(per_character=False), RougeTokenizer(per_character=True)
    assert words.tokenize("The Cat's mat, 2024!") == ["the", "cat", "s", "mat", "2024"]
    assert words.tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # combining vowel signs stay in the word
    assert words.tokenize("Tiếng Việt") == ["tiếng", "việt"]
    assert words.tokenize("cafe\u0301") == words.tokenize("café") == ["café"]  # NFC first
    assert chars.tokenize("我爱北京。GDP 2") == ["我", "爱", "北", "京", "g", "d", "p", "2"]
    assert chars.tokenize("กับ ไทย") == ["กั", "บ", "ไ", "ท", "ย"]  # Thai vowel sign rides on its consonant


def test_rouge_l_english_by_hand():
    # reference: the cat sat on the mat (6); prediction: a cat on mats (4); LCS = cat, on = 2
    score = rouge_l("The cat sat on the mat.", "A cat on mats", "en")
    assert score["precision"] == pytest.approx(2 / 4)
    assert score["recall"] == pytest.approx(2 / 6)
    assert score["f1"] == pytest.approx(2 * 2 / (4 + 6))
    assert rouge_l("The Cat.", "the cat", "en")["f1"] == pytest.approx(1.0)


def test_rouge_l_chinese_by_hand_and_default_tokenizer_fails():
    # reference 我爱北京天安门 (7 characters); prediction 我们爱北京 (5, the full stop dropped); LCS 我爱北京 = 4
    score = rouge_l("我爱北京天安门", "我们爱北京。", "zh")
    assert (score["precision"], score["recall"]) == (pytest.approx(4 / 5), pytest.approx(4 / 7))
    assert score["f1"] == pytest.approx(2 * 4 / (5 + 7))
    from rouge_score import rouge_scorer  # why we bring our own tokenizer: the default scores Chinese 0

    assert rouge_scorer.RougeScorer(["rougeL"]).score("我爱北京天安门", "我爱北京天安门")["rougeL"].fmeasure == 0


# --- the whole run -------------------------------------------------------------------------------

ZH_REPLIES = {"zh-001": "城市公园将在明年扩建一个新的儿童游乐区。", "zh-003": "新地铁线路", "zh-004": "完全无关"}


def reply_by_item(request):
    """Echoes English references in capitals, canned Chinese answers, and fails zh-002."""
    prompt = request.messages[-1]["content"]
    for name in ("english_test.jsonl", "zh_test.jsonl"):
        for row in fixture_rows(name):
            if prompt.endswith(row["text"]):
                if row["id"] == "zh-002":
                    return ChatReply(text=None, error="HTTP 500")
                return ChatReply(text=ZH_REPLIES.get(row["id"], row["summary"].upper() + " "))
    raise AssertionError("unknown article")


def test_run_xlsum_scores_records_and_resumes(tmp_path):
    backend = FakeBackend(reply_by_item)
    result = run_xlsum(FIXTURES, ["en", "zh"], None, tmp_path, backend, seed=7, echo=None)
    res = result["results"]
    assert res["languages"]["en"] == {"rougeL": pytest.approx(100.0), "n": 6, "failed": 0, "sampled": 6,
                                      "truncated": 0}
    # zh: 1.0 (exact), zh-002 failed, 新地铁线路 vs 新地铁线路本周开始试运行 (12 characters): 2*5/(5+12), 0
    zh_f1 = [1.0, 10 / 17, 0.0]
    assert res["languages"]["zh"]["rougeL"] == pytest.approx(100 * sum(zh_f1) / 3)
    assert (res["languages"]["zh"]["n"], res["languages"]["zh"]["failed"]) == (3, 1)
    assert res["all"]["rougeL"] == pytest.approx(100 * (6 + sum(zh_f1)) / 9)
    assert res["all"]["n"] == 9 and res["all"]["failed"] == 1

    request = backend.requests[0]
    assert (request.temperature, request.max_tokens) == (0.7, 128)
    zh_requests = [r for r in backend.requests if "in Chinese." in r.messages[0]["content"]]
    assert len(zh_requests) == 4 and len(backend.requests) == 10
    config = result["config"]
    assert config["seed"] == 7 and config["max_text_chars"] == 4000 and config["temperature"] == 0.7
    rows = {row["key"]: row for _, row in iter_jsonl(tmp_path / "summaries.jsonl")}
    assert config["sample"]["zh"] == [key[3:] for key in rows if key.startswith("zh/")]
    assert sorted(config["sample"]["zh"]) == ["zh-001", "zh-002", "zh-003", "zh-004"]
    assert rows["en/en-001"]["request"]["seed"] == item_seed(7, "en/en-001")
    scores = {row["key"]: row for _, row in iter_jsonl(tmp_path / "scores.jsonl")}
    assert scores["zh/zh-002"]["rougeL"] is None and scores["zh/zh-002"]["error"] == "HTTP 500"
    assert scores["zh/zh-003"]["rougeL"]["f1"] == pytest.approx(10 / 17)
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8")) == result

    # rerun: everything answered is reused; only the failed item is asked again
    calls = len(backend.requests)
    run_xlsum(FIXTURES, ["en", "zh"], None, tmp_path, backend, seed=7, echo=None)
    assert [r.messages[0]["content"] for r in backend.requests[calls:]] == \
        [summary_prompt("zh", fixture_rows("zh_test.jsonl")[1]["text"])]

    title, columns, table_rows = table(result)
    assert columns == ["language", "ROUGE-L", "n", "failed", "truncated"]
    assert [row[0] for row in table_rows] == ["en", "zh", "all"] and table_rows[1][2:] == [3, 1, 0]
    assert "XL-Sum" in title


def test_run_xlsum_truncates_and_reuses_all_answers(tmp_path):
    backend = FakeBackend(lambda request: ChatReply(text="Une phrase."))
    first = run_xlsum(FIXTURES, ["vi"], 2, tmp_path, backend, seed=0, max_text_chars=40, temperature=0.0,
                      max_tokens=64, echo=None)
    assert first["results"]["languages"]["vi"]["truncated"] == 2
    for request in backend.requests:
        article = article_from_prompt("vi", request.messages[0]["content"])
        assert len(article) <= 40 and request.max_tokens == 64 and request.temperature == 0.0
    assert [s.article for s in read_summaries(tmp_path)] == \
        [article_from_prompt("vi", r.messages[0]["content"]) for r in backend.requests]
    calls = backend.calls
    again = run_xlsum(FIXTURES, ["vi"], 2, tmp_path, backend, seed=0, max_text_chars=40, temperature=0.0,
                      max_tokens=64, echo=None)
    assert backend.calls == calls and again["results"] == first["results"]


def test_read_summaries_rejects_foreign_files(tmp_path):
    path = write_rows(tmp_path / "summaries.jsonl", [{"key": "en/a", "request": {"messages": [
        {"role": "user", "content": "Summarise this."}]}, "text": "x"}])
    with pytest.raises(UserError, match=r"summaries.jsonl:1: field 'request' is not an XL-Sum summary request"):
        read_summaries(path)
    write_rows(path, [{"key": "a", "text": "x"}])
    with pytest.raises(UserError, match=r"summaries.jsonl:1: field 'key' must be '<language>/<id>'"):
        read_summaries(path)
