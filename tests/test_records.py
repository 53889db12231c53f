"""Reading preference records: formats, column mapping, generated ids, and one-line errors naming file:line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xlpo.data.records import PreferenceRecord, load_preferences, record_from_row
from xlpo.errors import UserError

FIXTURE = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"

PLAIN = {"prompt": "Translate: Hello", "chosen": "Hallo", "rejected": "Hallo Welt"}
CONV = {
    "prompt": [{"role": "system", "content": "You translate."}, {"role": "user", "content": "Hello"}],
    "chosen": [{"role": "assistant", "content": "Hallo"}],
    "rejected": [{"role": "assistant", "content": "Tschüss"}],
}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture
def no_hub(monkeypatch):
    """Any attempt to reach the Hub fails the test (and records the call)."""
    import datasets

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("network disabled in tests")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    return calls


# --------------------------------------------------------------------------- JSONL


def test_real_fixture_loads_with_ids_and_langs():
    records = load_preferences(FIXTURE)
    lines = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(records) == len(lines) == 12
    assert [r.id for r in records] == [row["id"] for row in lines]
    assert [r.lang for r in records] == [row["lang"] for row in lines]
    assert records[0] == PreferenceRecord(id="ex-00", prompt=lines[0]["prompt"], chosen=lines[0]["chosen"],
                                          rejected=lines[0]["rejected"], lang="de")
    assert {r.lang for r in records} >= {"de", "zh"}


def test_plain_and_conversational_rows(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [PLAIN, CONV])
    plain, conv = load_preferences(path)
    assert (plain.prompt, plain.chosen, plain.rejected) == (PLAIN["prompt"], PLAIN["chosen"], PLAIN["rejected"])
    assert plain.lang is None
    assert conv.prompt == CONV["prompt"]
    assert conv.chosen == [{"role": "assistant", "content": "Hallo"}]
    assert conv.rejected == [{"role": "assistant", "content": "Tschüss"}]


def test_extra_message_keys_are_dropped(tmp_path):
    row = dict(CONV, chosen=[{"role": "assistant", "content": "Hallo", "weight": 1}])
    (rec,) = load_preferences(write_jsonl(tmp_path / "x.jsonl", [row]))
    assert rec.chosen == [{"role": "assistant", "content": "Hallo"}]


def test_generated_ids_are_stem_and_line(tmp_path):
    # Blank lines are skipped but still counted, so the id points at the real line of the file.
    path = write_jsonl(tmp_path / "pairs.jsonl", [PLAIN, "", dict(PLAIN, id="given"), PLAIN])
    assert [r.id for r in load_preferences(path)] == ["pairs:1", "given", "pairs:4"]


def test_numeric_id_becomes_string(tmp_path):
    (rec,) = load_preferences(write_jsonl(tmp_path / "x.jsonl", [dict(PLAIN, id=7)]))
    assert rec.id == "7"


def test_duplicate_ids_rejected(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [dict(PLAIN, id="a"), dict(PLAIN, id="b"), dict(PLAIN, id="a")])
    with pytest.raises(UserError, match=r"duplicate id 'a'"):
        load_preferences(path)


def test_generated_id_colliding_with_given_id_rejected(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [PLAIN, dict(PLAIN, id="p:1")])
    with pytest.raises(UserError, match=r"duplicate id 'p:1'"):
        load_preferences(path)


def test_column_mapping_icr_reject(tmp_path):
    row = {"prompt": "Translate: Hi", "chosen": "Hallo", "reject": "Tschüss", "language": "de"}
    path = write_jsonl(tmp_path / "icr.jsonl", [row])
    (rec,) = load_preferences(path, columns={"rejected": "reject", "lang": "language"})
    assert rec.rejected == "Tschüss"
    assert rec.lang == "de"
    # Without the mapping the file is missing `rejected`, and the error says where and what.
    with pytest.raises(UserError) as info:
        load_preferences(path)
    assert f"{path}:1" in str(info.value) and "'rejected'" in str(info.value)


def test_mapped_field_missing_names_the_file_column(tmp_path):
    path = write_jsonl(tmp_path / "icr.jsonl", [PLAIN])  # has `rejected`, not `reject`
    with pytest.raises(UserError) as info:
        load_preferences(path, columns={"rejected": "reject"})
    msg = str(info.value)
    assert f"{path}:1" in msg and "'reject'" in msg and "mapped from" in msg


def test_unknown_column_mapping_key_rejected(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [PLAIN])
    with pytest.raises(UserError, match=r"data\.columns.*rejeted"):
        load_preferences(path, columns={"rejeted": "reject"})


@pytest.mark.parametrize("field", ["prompt", "chosen", "rejected"])
def test_missing_field_names_file_line_and_field(tmp_path, field):
    bad = {k: v for k, v in PLAIN.items() if k != field}
    path = write_jsonl(tmp_path / "m.jsonl", [PLAIN, PLAIN, bad])
    with pytest.raises(UserError) as info:
        load_preferences(path)
    msg = str(info.value)
    assert f"{path}:3" in msg and f"'{field}'" in msg
    assert "\n" not in msg


def test_null_field_counts_as_missing(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [dict(PLAIN, chosen=None)])
    with pytest.raises(UserError, match=r"n\.jsonl:1: missing field 'chosen'"):
        load_preferences(path)


@pytest.mark.parametrize("field,value,kind", [
    ("chosen", 3, "int"),
    ("prompt", {"text": "x"}, "dict"),
    ("rejected", [], "list"),
    ("rejected", [{"role": "assistant"}], "list"),  # message without content
    ("prompt", ["just a string in a list"], "list"),
])
def test_wrong_type_names_file_line_and_field(tmp_path, field, value, kind):
    path = write_jsonl(tmp_path / "t.jsonl", [PLAIN, dict(PLAIN, **{field: value})])
    with pytest.raises(UserError) as info:
        load_preferences(path)
    msg = str(info.value)
    assert f"{path}:2" in msg and f"field '{field}'" in msg and kind in msg


def test_conversational_completion_must_be_assistant(tmp_path):
    row = dict(CONV, rejected=[{"role": "user", "content": "sneaky"}])
    path = write_jsonl(tmp_path / "c.jsonl", [row])
    with pytest.raises(UserError, match=r"c\.jsonl:1: field 'rejected': .*assistant"):
        load_preferences(path)


def test_lang_must_be_string(tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", [dict(PLAIN, lang=5)])
    with pytest.raises(UserError, match=r"l\.jsonl:1: field 'lang'"):
        load_preferences(path)


def test_invalid_json_reports_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [PLAIN, '{"prompt": "x", "chosen": ', PLAIN])
    with pytest.raises(UserError) as info:
        load_preferences(path)
    assert f"{path}:2: invalid JSON" in str(info.value)


def test_row_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "arr.jsonl", [PLAIN, "[1, 2]"])
    with pytest.raises(UserError, match=r"arr\.jsonl:2: expected a JSON object, got list"):
        load_preferences(path)


def test_non_utf8_reports_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(PLAIN).encode()
    bad = '{"prompt": "Gr\u00fc\u00dfe", "chosen": "a", "rejected": "b"}'.encode("latin-1")
    path.write_bytes(good + b"\n" + good.replace(b'"Hallo"', b'"Hallo2"') + b"\n" + bad + b"\n")
    with pytest.raises(UserError) as info:
        load_preferences(path)
    msg = str(info.value)
    assert f"{path}:3" in msg and "UTF-8" in msg


def test_non_utf8_far_into_a_big_file_reports_its_line(tmp_path):
    # Past the first read buffer: the reported position must still be the right line.
    path = tmp_path / "big.jsonl"
    lines = [json.dumps(dict(PLAIN, id=f"r{i}")).encode() for i in range(3000)]
    lines[2500] = lines[2500].replace(b"Hallo", b"Hall\xf6")
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(UserError, match=r"big\.jsonl:2501: not UTF-8"):
        load_preferences(path)


def test_utf8_bom_is_tolerated(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(PLAIN).encode() + b"\n")
    assert load_preferences(path)[0].prompt == PLAIN["prompt"]


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(UserError, match="no preference records"):
        load_preferences(path)


def test_json_array_file(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text(json.dumps([PLAIN, dict(PLAIN, id="x")], indent=2), encoding="utf-8")
    records = load_preferences(path)
    assert [r.id for r in records] == ["arr:0", "x"]


def test_json_lines_with_json_suffix(tmp_path):
    path = write_jsonl(tmp_path / "lines.json", [PLAIN, PLAIN])
    assert [r.id for r in load_preferences(path)] == ["lines:1", "lines:2"]


# --------------------------------------------------------------------------- Parquet and HF datasets


def test_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # (pyarrow infers the schema from the first row, so it names `id` too, as null.)
    rows = [dict(PLAIN, id=None, lang="de"), dict(PLAIN, id="given", lang="zh", chosen="Hallo!")]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "prefs.parquet")
    records = load_preferences(tmp_path / "prefs.parquet")
    # Generated ids are `stem:row`, independent of where the file lives (the data fingerprint includes ids).
    assert [r.id for r in records] == ["prefs:0", "given"]
    assert [r.lang for r in records] == ["de", "zh"]
    assert records[1].chosen == "Hallo!"


def test_parquet_conversational_and_mapping(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = {"prompt": CONV["prompt"], "chosen": CONV["chosen"], "reject": CONV["rejected"]}
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "conv.parquet")
    (rec,) = load_preferences(tmp_path / "conv.parquet", columns={"rejected": "reject"})
    assert rec.prompt == CONV["prompt"] and rec.rejected == CONV["rejected"]


def test_parquet_missing_field_names_row_and_field(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([PLAIN, {"prompt": "p", "chosen": "c", "rejected": None}]),
                   tmp_path / "m.parquet")
    with pytest.raises(UserError) as info:
        load_preferences(tmp_path / "m.parquet")
    assert "m.parquet: row 1" in str(info.value) and "'rejected'" in str(info.value)


def test_corrupt_parquet_is_a_user_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match=r"broken\.parquet: cannot read as Parquet"):
        load_preferences(path)


def test_saved_dataset_directory(tmp_path, no_hub):
    import datasets

    datasets.Dataset.from_list([dict(PLAIN, lang="de"), dict(PLAIN, chosen="Hallo!")]).save_to_disk(tmp_path / "ds")
    records = load_preferences(tmp_path / "ds")
    assert [r.chosen for r in records] == ["Hallo", "Hallo!"]
    assert [r.id for r in records] == ["ds:0", "ds:1"]
    assert records[0].lang == "de" and records[1].lang is None
    assert no_hub == []


def test_saved_dataset_dict_with_split(tmp_path, no_hub):
    import datasets

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([CONV]),
        "test": datasets.Dataset.from_list([CONV, CONV]),
    })
    dd.save_to_disk(tmp_path / "dd")
    (rec,) = load_preferences(tmp_path / "dd")  # default split "train"
    assert rec.prompt == CONV["prompt"] and rec.chosen == CONV["chosen"]
    assert len(load_preferences(tmp_path / "dd", split="test")) == 2
    with pytest.raises(UserError, match=r"no split 'validation' \(has train, test\)"):
        load_preferences(tmp_path / "dd", split="validation")
    assert no_hub == []


def test_directory_without_data_is_a_user_error(tmp_path, no_hub):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UserError, match="nothing"):
        load_preferences(tmp_path / "nothing")


# --------------------------------------------------------------------------- sources that are not there


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "prefs.csv"
    path.write_text("prompt,chosen,rejected\na,b,c\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"unsupported file type '\.csv'"):
        load_preferences(path)


@pytest.mark.parametrize("source", ["no_such_file.jsonl", "./data/train.jsonl", "a/b/c.jsonl",
                                    "data/train.jsonl", "data/train.parquet"])
def test_missing_local_path_never_calls_the_hub(no_hub, source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no such file or directory"):
        load_preferences(source)
    assert no_hub == []


def test_hub_like_id_failure_is_one_line(no_hub):
    with pytest.raises(UserError) as info:
        load_preferences("someone/some-dataset")
    assert no_hub == [("someone/some-dataset",)]
    msg = str(info.value)
    assert "someone/some-dataset" in msg and "network disabled" in msg and "\n" not in msg


# --------------------------------------------------------------------------- record_from_row directly


def test_record_from_row_uses_default_id_and_empty_lang_is_none():
    rec = record_from_row(dict(PLAIN, lang=""), "here:1", "dflt")
    assert rec.id == "dflt" and rec.lang is None


def test_record_from_row_rejects_non_mapping():
    with pytest.raises(UserError, match="here:9: expected a JSON object, got str"):
        record_from_row("text", "here:9", "x")
