"""X-AlpacaEval: data and answer files, the judge prompt and its parsing, orders, results and resuming."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from xlpo.bench import lc_winrate
from xlpo.bench.xalpacaeval import (Instruction, judge_messages, load_instructions, plan_judgments,
                                    preference_for_second, read_answers, run_xalpacaeval, table)
from xlpo.bench.xalpacaeval import lc_files
from xlpo.bench.xalpacaeval.judge import SYSTEM_PROMPT, USER_TEMPLATE
from xlpo.clients.chat import ChatReply
from xlpo.errors import UserError


GAMED_FILE = Path(__file__).parent / "fixtures" / "alpacaeval_lc" / "df_gamed.csv"  # a stand-in (its README)


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """No test here reaches the Hugging Face Hub for AlpacaEval's gamed annotations."""
    monkeypatch.setattr(lc_files, "_from_hub", lambda download, echo: (None, {"source": None, "why": "no Hub in tests"}))


def write_data(folder: Path, rows_by_lang: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for lang, rows in rows_by_lang.items():
        (folder / f"{lang}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return folder


DATA = {"en": [{"id": 1, "dataset": "a", "instruction": "Name a colour."},
               {"id": 2, "dataset": "b", "instruction": "Say hi."},
               {"id": 3, "dataset": "a", "instruction": "Count to three."}],
        "de": [{"id": 1, "dataset": "a", "instruction": "Nenne eine Farbe."},
               {"id": 2, "dataset": "b", "instruction": "Sag hallo."},
               {"id": 3, "dataset": "a", "instruction": "Zähle bis drei."}]}


class Answerer:
    """A candidate or baseline: answers each instruction with a text of a chosen length."""

    def __init__(self, name, length_of):
        self.name, self.length_of, self.calls = name, length_of, 0

    def complete_many(self, requests, progress=None):
        self.calls += 1
        return [ChatReply(text=(self.name + " ") * self.length_of(r.messages[-1]["content"])) for r in requests]

    def describe(self):
        return {"kind": "fake", "model": self.name}


class LengthJudge:
    """Prefers the longer output, with top log-probs like an OpenAI endpoint."""

    def __init__(self, model="length-judge", logprobs=True):
        self.model, self.logprobs, self.requests = model, logprobs, []

    def complete_many(self, requests, progress=None):
        self.requests.extend(requests)
        out = []
        for r in requests:
            user = r.messages[1]["content"]
            first = user.split('"output": """')[1].split('"""')[0]
            second = user.split('"output": """')[2].split('"""')[0]
            winner = "M" if len(second) > len(first) else "m"
            loser = "m" if winner == "M" else "M"
            out.append(ChatReply(text=winner, top_logprobs=[{"token": winner, "logprob": math.log(0.8)},
                                                           {"token": loser, "logprob": math.log(0.2)}]
                                 if self.logprobs else None))
        return out

    def describe(self):
        return {"kind": "fake", "model": self.model}


# --- data --------------------------------------------------------------------------------------------

def test_real_data_has_805_aligned_instructions(shared_data):
    folder = shared_data / "icr" / "x-alpacaeval"
    en = load_instructions(folder, ["en", "de"])  # the upstream folder or its data/
    assert len(en) == 1610 and en[0].key == "en/1" and en[805].key == "de/1"
    assert en[0].text.startswith("What are the names of some famous actors")
    assert [i.id for i in en[:805]] == [i.id for i in en[805:]]


@pytest.mark.parametrize("rows, message", [
    ([{"id": 1, "instruction": ""}], "field 'instruction'"),
    ([{"id": "x", "instruction": "a"}], "field 'id'"),
    ([{"id": 1, "instruction": "a"}, {"id": 1, "instruction": "b"}], "appears twice"),
    ({"id": 1}, "JSON array"),
])
def test_malformed_instructions_are_user_errors(tmp_path, rows, message):
    (tmp_path / "en.json").write_text(json.dumps(rows))
    with pytest.raises(UserError, match=message):
        load_instructions(tmp_path, ["en"])


def test_unknown_language_lists_the_available_ones(tmp_path):
    write_data(tmp_path, DATA)
    with pytest.raises(UserError, match="languages available in .*: de, en"):
        load_instructions(tmp_path, ["xx"])


def test_limit_keeps_the_first_instructions(tmp_path):
    assert [i.key for i in load_instructions(write_data(tmp_path, DATA), ["en"], limit=2)] == ["en/1", "en/2"]


# --- answer files ----------------------------------------------------------------------------------

def test_alpacaeval_and_icr_formats_match_by_id_or_text(tmp_path):
    instructions = load_instructions(write_data(tmp_path / "data", DATA), ["en", "de"])
    base = tmp_path / "base"
    (base / "de").mkdir(parents=True)
    (base / "en.json").write_text(json.dumps([  # AlpacaEval's outputs: string ids, by text for one row
        {"id": "2", "instruction": "Say hi.", "output": "hi", "generator": "gpt"},
        {"id": "1", "instruction": "Name a colour.", "output": "red"},
        {"instruction": "Count to three.", "output": "1 2 3"}]))
    (base / "de" / "model_outputs.json").write_text(json.dumps(
        [{"id": i, "output": f"a{i}"} for i in (1, 2, 3)]))
    answers = read_answers(base, instructions)
    assert answers["en/1"] == "red" and answers["en/3"] == "1 2 3" and answers["de/2"] == "a2"
    (base / "de" / "model_outputs.json").unlink()
    (base / "de.jsonl").write_text("".join(json.dumps({"id": i, "prompt": DATA["de"][i - 1]["instruction"],
                                                       "response": f"r{i}"}) + "\n" for i in (1, 2, 3)))
    assert read_answers(base, instructions)["de/3"] == "r3"  # the ICR repository's results/ layout


def test_answer_file_problems_are_user_errors(tmp_path):
    instructions = load_instructions(write_data(tmp_path / "data", DATA), ["en"])
    base = tmp_path / "base"
    base.mkdir()
    with pytest.raises(UserError, match="no answers for language en"):
        read_answers(base, instructions)
    (base / "en.json").write_text(json.dumps([{"id": 1, "output": "x"}]))
    with pytest.raises(UserError, match="no answer for en instruction id 2"):
        read_answers(base, instructions)
    (base / "en.json").write_text(json.dumps([{"id": i, "output": "x", "instruction": "Other?"} for i in (1, 2, 3)]))
    with pytest.raises(UserError, match="answers another instruction text"):
        read_answers(base, instructions)
    (base / "en.json").write_text(json.dumps([{"id": 1, "output": None}]))
    with pytest.raises(UserError, match="field 'output'"):
        read_answers(base, instructions)


# --- judge prompt and parsing ------------------------------------------------------------------------

def test_judge_prompt_is_alpacaevals_multilingual_classifier():
    messages = judge_messages("Nenne eine Farbe.", "Rot.", "Blau, weil {output_2}.")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPT and SYSTEM_PROMPT.startswith("You are a highly efficient assistant")
    user = messages[1]["content"]
    assert user.startswith("I require a leaderboard for various large language models.")
    assert '"instruction": """Nenne eine Farbe.""",' in user
    assert '"model_identifier": "m",\n        "output": """Rot."""' in user
    assert '"model_identifier": "M",\n        "output": """Blau, weil {output_2}."""' in user  # not substituted again
    assert "A good output should be in the same language as the instruction, except when" in user
    assert user.endswith("m or M.\n\n## Best Model Identifier")
    assert USER_TEMPLATE.count("{output_1}") == USER_TEMPLATE.count("{output_2}") == 1


@pytest.mark.parametrize("reply, expected", [
    (ChatReply("M", top_logprobs=[{"token": "M", "logprob": math.log(0.6)}, {"token": "m", "logprob": math.log(0.2)},
                                  {"token": "The", "logprob": math.log(0.1)}]), (0.75, "logprobs")),
    (ChatReply("m", top_logprobs=[{"token": "m", "logprob": -0.1}, {"token": "x", "logprob": -3}]), (0.0, "logprobs")),
    (ChatReply("M", top_logprobs=[{"token": "The", "logprob": -0.1}]), (1.0, "text")),  # neither among the top tokens
    (ChatReply(" M\n"), (1.0, "text")),
    (ChatReply("m"), (0.0, "text")),
])
def test_preference_from_logprobs_or_text(reply, expected):
    value, source = preference_for_second(reply)
    assert value == pytest.approx(expected[0]) and source == expected[1]


@pytest.mark.parametrize("text", ["Model M", "M.", "mM", "", "answer: m"])
def test_other_replies_are_unparseable(text):
    value, why = preference_for_second(ChatReply(text))
    assert value is None and "unrecognised" in why


def test_orders_are_seeded_balanced_and_identical_answers_are_ties():
    instructions = [Instruction("en", i, "", f"q{i}") for i in range(200)]
    cand = {i.key: "a" for i in instructions}
    base = {i.key: "b" for i in instructions}
    base["en/0"], cand["en/1"] = "a", None
    plan = plan_judgments(instructions, cand, base, "random", seed=0)
    assert plan[0] == {"key": "en/0", "position": None} and all(p["key"] != "en/1" for p in plan)
    firsts = sum(p["position"] == "1" for p in plan[1:])
    assert 70 < firsts < 128 and plan == plan_judgments(instructions, cand, base, "random", seed=0)
    assert plan != plan_judgments(instructions, cand, base, "random", seed=1)
    both = plan_judgments(instructions, cand, base, "both", seed=0)
    assert [p["position"] for p in both[1:3]] == ["1", "2"] and len(both) == 1 + 2 * 198


# --- the whole benchmark with fake backends ----------------------------------------------------------

def lengths(text):
    return {"Name a colour.": 9, "Say hi.": 2, "Count to three.": 7, "Nenne eine Farbe.": 8, "Sag hallo.": 1,
            "Zähle bis drei.": 6}[text]


def test_end_to_end_maps_orders_back_and_reports_per_language(tmp_path):
    data = write_data(tmp_path / "data", DATA)
    candidate = Answerer("cand", lengths)
    baseline = Answerer("base", lambda t: 4)  # the candidate is longer on 4 of 6 instructions
    judge = LengthJudge()
    out = tmp_path / "run"
    res = run_xalpacaeval(data, out, candidate, baseline=baseline, judge=judge, languages=["en", "de"],
                          orders="both", n_boot=200, echo=None)
    en = res["results"]["languages"]["en"]
    # en: longer on ids 1 and 3 (0.8 for the candidate), shorter on 2 (0.2); both orders agree.
    assert en["win_rate"] == pytest.approx(100 * (0.8 + 0.2 + 0.8) / 3)
    assert (en["wins"], en["losses"], en["annotations"], en["sources"]) == (4, 2, 6, {"logprobs": 6})
    assert en["candidate_chars"] == pytest.approx(sum(len("cand " * lengths(i["instruction"])) for i in DATA["en"]) / 3)
    assert en["baseline_chars"] == pytest.approx(len("base " * 4))
    assert en["win_rate_ci"] and en["lc_win_rate_ci"] and set(en["glm"]) == {"model", "length"}
    # No gamed-annotation file (no Hub here): the LC is the labelled substitute, never plain "LC".
    assert en["lc_method"] == "length_controlled_minimal" and res["results"]["average"]["lc_method"] == en["lc_method"]
    assert res["results"]["lc"]["comparable_with_alpacaeval_leaderboard"] is False
    assert "not comparable with the AlpacaEval leaderboard" in res["results"]["lc"]["label"]
    assert res["config"]["lc"]["gamed_annotations"] == {"source": None, "why": "no Hub in tests"}
    rows = [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]
    first = [r for r in rows if r["key"] == "en/1"]
    assert [r["candidate_position"] for r in first] == ["1", "2"] and all(r["preference"] == pytest.approx(0.8)
                                                                         for r in first)
    avg = res["results"]["average"]
    assert avg["win_rate"] == pytest.approx((en["win_rate"] + res["results"]["languages"]["de"]["win_rate"]) / 2)
    title, columns, table_rows = table(res)
    assert columns[:5] == ["language", "WR %", "WR 95% CI", "LC-minimal %", "LC-minimal 95% CI"]
    assert table_rows[-1][0] == "Avg" and "LC-minimal: LC without difficulty term" in title
    config = res["config"]
    assert config["orders"] == "both" and config["judge"]["model"] == "length-judge"
    assert config["generation"] == {"temperature": 0.6, "top_p": 0.9, "max_tokens": 2048,
                                    "item_seeds": config["generation"]["item_seeds"]}
    request = json.loads((out / "answers.jsonl").read_text().splitlines()[0])["request"]
    assert request["top_p"] == 0.9 and request["temperature"] == 0.6 and request["max_tokens"] == 2048
    judged = json.loads((out / "judge_requests.jsonl").read_text().splitlines()[0])["request"]
    assert judged["top_logprobs"] == 5 and judged["max_tokens"] == 1 and judged["temperature"] == 0.0

    # A rerun reuses every answer and judgment; another judge on the same folder is asked again.
    again_c, again_b, again_j = Answerer("cand", lengths), Answerer("base", lambda t: 4), LengthJudge()
    rerun = run_xalpacaeval(data, out, again_c, baseline=again_b, judge=again_j, languages=["en", "de"],
                            orders="both", n_boot=200, echo=None)
    assert (again_c.calls, again_b.calls, len(again_j.requests)) == (0, 0, 0)
    assert rerun["results"] == res["results"]
    other = LengthJudge(model="another-judge")
    run_xalpacaeval(data, out, again_c, baseline=again_b, judge=other, languages=["en", "de"], orders="both",
                    n_boot=200, echo=None)
    assert len(other.requests) == 12


def test_alpacaevals_lc_with_the_gamed_annotations_file(tmp_path):
    """With df_gamed.csv (here the fixture's stand-in), LC is AlpacaEval 2.0's: X-AlpacaEval id k takes
    AlpacaEval row k-1's difficulty, the gamed rows join the fit; the table says plain LC."""
    data = write_data(tmp_path / "data", DATA)
    res = run_xalpacaeval(data, tmp_path / "run", Answerer("cand", lengths), baseline=Answerer("base", lambda t: 4),
                          judge=LengthJudge(), languages=["en", "de"], n_boot=20, lc_files=GAMED_FILE.parent, echo=None)
    en = res["results"]["languages"]["en"]
    assert en["lc_method"] == "length_controlled_v1" and set(en["glm"]) == {"model", "length", "difficulty"}
    assert res["results"]["lc"]["comparable_with_alpacaeval_leaderboard"] is True
    source = res["config"]["lc"]["gamed_annotations"]
    assert source["source"] == "given path" and source["path"] == str(GAMED_FILE) and len(source["sha256"]) == 64
    # By hand: the same fit on the same rows, difficulties of AlpacaEval rows 0-2.
    gamed, difficulty = lc_files.read_gamed(GAMED_FILE)
    rows = [json.loads(line) for line in (tmp_path / "run" / "annotations.jsonl").read_text().splitlines()]
    mine = [r for r in rows if r["lang"] == "en"]
    ann = lc_winrate.Annotations(np.array([r["preference"] for r in mine]),
                                 np.array([r["candidate_chars"] - r["baseline_chars"] for r in mine], dtype=float),
                                 [str(r["id"]) for r in mine], difficulty[[r["id"] - 1 for r in mine]])
    assert en["lc_win_rate"] == pytest.approx(lc_winrate.summarize(ann, None, gamed)["lc_win_rate"], abs=1e-12)
    title, columns, _ = table(res)
    assert columns[3:5] == ["LC %", "LC 95% CI"] and "AlpacaEval 2.0's length-controlled win rate" in title


def test_baseline_folder_from_an_earlier_run_and_text_only_judge(tmp_path):
    data = write_data(tmp_path / "data", DATA)
    base_run = tmp_path / "base"
    generated = run_xalpacaeval(data, base_run, Answerer("base", lambda t: 4), languages=["en"], echo=None)
    assert generated["config"]["judged"] is False
    assert table(generated)[2][0][:3] == ["en", 3, 0]
    judge = LengthJudge(logprobs=False)
    res = run_xalpacaeval(data, tmp_path / "cand", Answerer("cand", lengths), baseline_dir=base_run, judge=judge,
                          languages=["en"], n_boot=0, echo=None)
    en = res["results"]["languages"]["en"]
    assert en["sources"] == {"text": 3} and en["win_rate"] == pytest.approx(100 * 2 / 3)
    assert en["win_rate_ci"] is None and res["config"]["baseline_answers"] == str(base_run)
    assert len(judge.requests) == 3 and judge.requests[0].top_logprobs == 5


def test_failed_and_unparseable_judgments_are_counted_apart(tmp_path):
    data = write_data(tmp_path / "data", {"en": DATA["en"]})

    class Flaky(LengthJudge):
        def complete_many(self, requests, progress=None):
            return [ChatReply(None, error="HTTP 503") if "colour" in r.messages[1]["content"] else ChatReply("Both")
                    for r in requests]

    failing = Answerer("cand", lengths)
    res = run_xalpacaeval(data, tmp_path / "run", failing, baseline=Answerer("base", lambda t: 4), judge=Flaky(),
                          languages=["en"], n_boot=50, echo=None)
    en = res["results"]["languages"]["en"]
    assert (en["failed"], en["unparseable"], en["annotations"], en["win_rate"]) == (1, 2, 0, None)
    assert res["results"]["average"]["win_rate"] is None


def test_baseline_must_be_given_once(tmp_path):
    data = write_data(tmp_path / "data", DATA)
    with pytest.raises(UserError, match="either as a folder"):
        run_xalpacaeval(data, tmp_path / "x", Answerer("c", lengths), judge=LengthJudge(), languages=["en"], echo=None)


def test_cli_refuses_conflicting_options_in_one_line(tmp_path):
    from xlpo.cli import _register, app

    _register()
    data = write_data(tmp_path / "data", DATA)
    result = CliRunner().invoke(app, ["bench", "xalpacaeval", "--data", str(data), "--out", str(tmp_path / "o"),
                                      "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "j",
                                      "--judge-adapter", str(tmp_path)])
    assert result.exit_code == 2 and "--judge-adapter applies to a local judge" in result.output
    help_text = CliRunner().invoke(app, ["bench", "xalpacaeval", "--help"], terminal_width=200).output
    for option in ("--baseline", "--baseline-model", "--judge-model", "--judge-adapter", "--orders", "--top-p",
                   "--lc-files"):
        assert option in help_text
