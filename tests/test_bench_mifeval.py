"""M-IFEval: loose variants, strict/loose scoring, aggregation, registry coverage, offline NLTK, end to end."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chat_fakes import FakeBackend
from xlpo.bench.mifeval import run_mifeval, table
from xlpo.bench.mifeval.instruction_accuracy import aggregate, loose_variants, score_response
from xlpo.bench.mifeval.registry import (
    EN_NAMES,
    REGISTRY,
    build_checker,
    lm_eval_instructions,
)
from xlpo.bench.mifeval.run import LANGUAGES, load_items
from xlpo.clients.chat import ChatReply
from xlpo.errors import UserError

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- scoring

def test_loose_variants_are_lm_evals_eight_in_order():
    response = "Sure!\n*Body* text\nBye"
    assert loose_variants(response) == [
        response,
        "Sure!\nBody text\nBye",
        "*Body* text\nBye",
        "Sure!\n*Body* text",
        "*Body* text",
        "Body text\nBye",
        "Sure!\nBody text",
        "Body text",
    ]


def test_strict_checks_the_response_as_is_and_loose_any_variant():
    starts_with_body = lambda text: text.startswith("*Body*")
    no_asterisk = lambda text: "*" not in text
    ends_with_bye = lambda text: text.endswith("Bye")
    strict, loose = score_response([starts_with_body, no_asterisk, ends_with_bye], "Sure!\n*Body* text\nBye")
    assert strict == [False, False, True]
    assert loose == [True, True, True]  # first line dropped; '*' removed; already true


def test_blank_text_never_follows_even_when_the_check_would_pass():
    always = lambda text: True
    assert score_response([always], "  \n ") == ([False], [False])
    # A one-line response: every line-removing variant is blank, so only the response itself can pass.
    assert score_response([lambda text: text == "x"], "x") == ([True], [True])


def test_aggregate_per_language_overall_and_per_instruction():
    rows = [
        {"language": "en", "instruction_id_list": ["en:a", "en:b"], "failed": False,
         "strict": [True, False], "loose": [True, True]},
        {"language": "en", "instruction_id_list": ["en:a"], "failed": False, "strict": [True], "loose": [True]},
        {"language": "en", "instruction_id_list": ["en:a"], "failed": True, "strict": None, "loose": None},
        {"language": "ja", "instruction_id_list": ["ja:c"], "failed": False, "strict": [False], "loose": [False]},
    ]
    results = aggregate(rows, ["en", "ja"])
    en, ja, overall = results["per_language"]["en"], results["per_language"]["ja"], results["all"]
    assert en == {"prompt_strict_acc": 0.5, "prompt_loose_acc": 1.0, "instruction_strict_acc": 2 / 3,
                  "instruction_loose_acc": 1.0, "n_prompts": 2, "n_instructions": 3, "n_failed": 1}
    assert ja["prompt_strict_acc"] == 0.0 and ja["n_failed"] == 0
    # Micro-average over the 3 scored prompts and their 4 instructions.
    assert overall == {"prompt_strict_acc": 1 / 3, "prompt_loose_acc": 2 / 3, "instruction_strict_acc": 2 / 4,
                       "instruction_loose_acc": 3 / 4, "n_prompts": 3, "n_instructions": 4, "n_failed": 1}
    assert results["per_instruction"]["en:a"] == {"n": 2, "strict_acc": 1.0, "loose_acc": 1.0}
    assert results["per_instruction"]["en:b"] == {"n": 1, "strict_acc": 0.0, "loose_acc": 1.0}


def test_aggregate_of_a_language_with_only_failures_has_no_accuracy():
    rows = [{"language": "fr", "instruction_id_list": ["fr:x"], "failed": True, "strict": None, "loose": None}]
    summary = aggregate(rows, ["fr"])["per_language"]["fr"]
    assert summary["prompt_strict_acc"] is None and summary["n_prompts"] == 0 and summary["n_failed"] == 1


def test_table_gives_percentages_per_language_and_all():
    rows = [{"language": "es", "instruction_id_list": ["es:a", "es:b"], "failed": False,
             "strict": [True, False], "loose": [True, True]},
            {"language": "es", "instruction_id_list": ["es:a"], "failed": True, "strict": None, "loose": None}]
    title, columns, table_rows = table(aggregate(rows, ["es"]))
    assert columns == ["language", "prompt strict", "prompt loose", "instr strict", "instr loose", "n", "failed"]
    assert table_rows == [["es", 0.0, 100.0, 50.0, 100.0, 1, 1], ["all", 0.0, 100.0, 50.0, 100.0, 1, 1]]
    assert "M-IFEval" in title


# ---------------------------------------------------------------- registry

def test_every_english_id_is_an_lm_eval_checker():
    assert len(EN_NAMES) == 25
    assert set(EN_NAMES) <= set(lm_eval_instructions())
    assert all(REGISTRY[f"en:{name}"].source == "lm-eval" for name in EN_NAMES)


def test_english_checks_through_lm_eval():
    no_comma = build_checker("en:punctuation:no_comma", {}, "p", "f:1")
    assert no_comma("no commas here") is True and no_comma("one, two") is False
    words = build_checker("en:length_constraints:number_words", {"relation": "at least", "num_words": 3}, "p", "f:1")
    assert words("one two three") is True and words("one two") is False


def test_french_relation_words_are_translated_for_lm_eval():
    fewer = build_checker("fr:keywords:frequency", {"keyword": "chat", "frequency": 2, "relation": "moins de"}, "p", "f:1")
    assert fewer("un chat") is True and fewer("chat et chat") is False
    more = build_checker("fr:keywords:frequency", {"keyword": "chat", "frequency": 2, "relation": "au moins"}, "p", "f:1")
    assert more("un chat") is False and more("chat et CHAT") is True


def test_spanish_at_most_is_less_than_one_more_in_lm_eval():
    at_most = build_checker("es:keywords:frequency", {"keyword": "gato", "frequency": 2, "relation": "como máximo"},
                            "p", "f:1")
    assert at_most("gato gato") is True and at_most("gato gato gato") is False
    letters = build_checker("es:keywords:letter_frequency",
                            {"letter": "a", "let_frequency": 3, "let_relation": "como máximo"}, "p", "f:1")
    assert letters("casa") is True and letters("casa sana") is False  # 2 a's vs 4 a's


def test_spanish_unread_relation_must_be_at_least():
    placeholders = build_checker("es:detectable_content:number_placeholders",
                                 {"num_placeholders": 2, "relation": "al menos"}, "p", "f:1")
    assert placeholders("[a] y [b]") is True and placeholders("[a]") is False
    with pytest.raises(UserError, match=r"f:7: bad kwargs for es:detectable_content:number_placeholders"):
        build_checker("es:detectable_content:number_placeholders",
                      {"num_placeholders": 2, "relation": "como máximo"}, "p", "f:7")


def test_unknown_id_and_bad_kwargs_are_user_errors():
    with pytest.raises(UserError, match=r"data.jsonl:3: unknown M-IFEval instruction id 'fr:made:up'"):
        build_checker("fr:made:up", {}, "p", "data.jsonl:3")
    with pytest.raises(UserError, match=r"x:1: bad kwargs for ja:letters:kanji"):
        build_checker("ja:letters:kanji", {"kanji_limit": 3, "relation": "at least"}, "p", "x:1")
    with pytest.raises(UserError, match=r"x:2: bad kwargs for en:keywords:existence"):
        build_checker("en:keywords:existence", {"keywords": ["a"], "colour": "red"}, "p", "x:2")


def test_lm_eval_random_fallback_is_seeded_and_leaves_global_random_alone():
    # lm-eval replaces a non-letter ("#") by a random letter: the choice must not depend on the global state.
    kwargs = {"letter": "#", "let_frequency": 1, "let_relation": "at least"}
    texts = [letter * 2 for letter in "abcdefghijklmnopqrstuvwxyz"]
    random.seed(123)
    first = [build_checker("en:keywords:letter_frequency", kwargs, "p", "f:1")(t) for t in texts]
    random.seed(456)
    expected_next = random.random()
    random.seed(456)
    second = [build_checker("en:keywords:letter_frequency", kwargs, "p", "f:1")(t) for t in texts]
    assert first == second and sum(first) == 1  # one fixed letter, whatever the global seed
    assert random.random() == expected_next  # the global sequence went on as if untouched


def test_load_items_reports_bad_rows_with_file_and_line(tmp_path):
    good = {"key": 1, "prompt": "Answer.", "instruction_id_list": ["fr:punctuation:no_comma"], "kwargs": [{}]}
    cases = [
        ({**good, "instruction_id_list": ["fr:made:up"]}, "fr_input_data.jsonl:2: unknown M-IFEval instruction id"),
        ({**good, "kwargs": []}, "fr_input_data.jsonl:2: field 'kwargs'"),
        ({**good, "key": "1"}, "fr_input_data.jsonl:2: field 'key'"),
        ({**good, "instruction_id_list": ["ja:punctuation:no_comma"]}, "fr_input_data.jsonl:2: instruction id"),
        (good, "fr_input_data.jsonl:2: key 1 already used at .*fr_input_data.jsonl:1"),
    ]
    for bad, message in cases:
        (tmp_path / "fr_input_data.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(UserError, match=message):
            load_items(tmp_path, "fr")
    assert len(load_items(tmp_path, "fr", limit=1)) == 1  # rows after the limit are not read


def test_every_real_instruction_id_has_a_checker_that_accepts_its_kwargs(shared_data):
    data_dir = shared_data / "m-ifeval" / "data"
    seen, expected_counts = set(), {"en": 25, "es": 30, "fr": 30, "ja": 33}
    samples = ["Hello, world. *This* is a test.\n\n* one\n- two", "「こんにちは。」\n第1章\n・一つ", "¿Qué? ¡Sí! P.D. nada", ""]
    for language in LANGUAGES:
        items = load_items(data_dir, language)  # builds every checker with the row's kwargs
        ids = {i for item in items for i in item.instruction_ids}
        assert len(ids) == expected_counts[language]
        seen |= ids
        for item in items:
            for sample in samples:
                strict, loose = score_response(item.checks, sample)  # no checker raises on odd text
                assert all(isinstance(v, bool) for v in strict + loose)
    assert seen == set(REGISTRY)  # and the registry holds no id the data lacks


# ---------------------------------------------------------------- offline NLTK

def _run_isolated(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLPO_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path / "home"),
           "NLTK_DATA": str(tmp_path / "nltk_data")}
    (tmp_path / "nltk_data").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=False, env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


_NO_DOWNLOAD = """
    import os, nltk
    nltk.data.path[:] = [os.environ["NLTK_DATA"]]  # only the test's folder: no machine-wide data
    def refuse(*args, **kwargs):
        raise RuntimeError("nltk.download was called")
    nltk.download = refuse
"""


@pytest.mark.slow  # several seconds: make test-all
def test_importing_lm_eval_checkers_without_nltk_data_never_downloads(tmp_path):
    result = _run_isolated(_NO_DOWNLOAD + """
    from xlpo.bench.mifeval.nltk_setup import UNTRAINED_PUNKT, ensure_punkt_tab
    from xlpo.bench.mifeval.registry import build_checker
    check = build_checker("en:length_constraints:number_sentences", {"relation": "at least", "num_sentences": 2},
                          "p", "f:1")
    assert check("Mr. Smith left.") is True  # untrained Punkt: no abbreviations, so two sentences
    assert build_checker("fr:length_constraints:number_sentences", {"relation": "au moins", "num_sentences": 2},
                         "p", "f:1")("M. Dupont est parti.") is False  # French abbreviations are still known
    assert ensure_punkt_tab() == {"english": UNTRAINED_PUNKT, "french": UNTRAINED_PUNKT}
    print("OK")
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert (tmp_path / "cache" / "nltk_data" / "tokenizers" / "punkt_tab" / "english" / "abbrev_types.txt").is_file()


@pytest.mark.slow  # several seconds: make test-all
def test_real_punkt_tab_data_is_used_when_present(tmp_path):
    for lang in ("english", "french"):
        folder = tmp_path / "nltk_data" / "tokenizers" / "punkt_tab" / lang
        folder.mkdir(parents=True)
        for name in ("collocations.tab", "sent_starters.txt", "ortho_context.tab"):
            (folder / name).write_text("")
        (folder / "abbrev_types.txt").write_text("mr\n")
    result = _run_isolated(_NO_DOWNLOAD + """
    from xlpo.bench.mifeval.nltk_setup import REAL_PUNKT, ensure_punkt_tab
    from xlpo.bench.mifeval.registry import build_checker
    check = build_checker("en:length_constraints:number_sentences", {"relation": "less than", "num_sentences": 2},
                          "p", "f:1")
    assert check("Mr. Smith left.") is True  # the data's abbreviation list is used: one sentence
    assert ensure_punkt_tab() == {"english": REAL_PUNKT, "french": REAL_PUNKT}
    print("OK")
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "cache" / "nltk_data").exists()


# ---------------------------------------------------------------- end to end

def test_run_mifeval_on_two_real_prompts_per_language(shared_data, tmp_path):
    data_dir = shared_data / "m-ifeval" / "data"
    prompts = {lang: [item.prompt for item in load_items(data_dir, lang, limit=2)] for lang in LANGUAGES}
    canned = {
        # en 1000 asks for 300+ words without commas: the generation fails and is not scored.
        prompts["en"][0]: ChatReply(text=None, error="HTTP 500"),
        prompts["en"][1]: ChatReply(text="To Japan we sail\nKyoto shall greet us"),  # no comma: passes
        prompts["es"][0]: ChatReply(text="<<Café>>\nPrimero molemos el grano."),  # title: passes
        prompts["es"][1]: ChatReply(text="La contaminación daña el ecosistema."),  # both keywords: passes
        prompts["fr"][0]: ChatReply(text="LE ROBOT AIME LA VIE ET RIT DE TOUT CE QUI BRILLE"),  # 12 >= 11 capitals
        prompts["fr"][1]: ChatReply(text="Le printemps arrive."),  # needs 5 capital words: fails
        prompts["ja"][0]: ChatReply(text="L'atmosphère terrestre est composée de plusieurs couches qui "
                                         "protègent la vie sur notre planète."),  # asked for French: passes
        prompts["ja"][1]: ChatReply(text="Thank you very much for all your help with the project this week."),  # not Thai
    }
    backend = FakeBackend(lambda request: canned[request.messages[-1]["content"]])
    results = run_mifeval(data_dir=data_dir, out_dir=tmp_path, candidate=backend, limit=2, echo=None)

    assert len(backend.requests) == 8
    request = backend.requests[0]
    assert request.messages == [{"role": "user", "content": prompts["en"][0]}]
    assert (request.temperature, request.max_tokens, request.seed) == (0.0, 1024, 0)
    per = results["per_language"]
    assert per["en"]["n_prompts"] == 1 and per["en"]["n_failed"] == 1 and per["en"]["prompt_strict_acc"] == 1.0
    assert per["es"]["prompt_strict_acc"] == 1.0
    assert per["fr"]["prompt_strict_acc"] == 0.5 and per["ja"]["prompt_strict_acc"] == 0.5
    assert results["all"]["prompt_strict_acc"] == pytest.approx(5 / 7)
    assert results["all"]["prompt_loose_acc"] == pytest.approx(5 / 7)

    written = json.loads((tmp_path / "results.json").read_text())
    assert written["benchmark"] == "m-ifeval" and written["results"] == results
    config = written["config"]
    assert config["limit"] == 2 and config["generation"]["max_tokens"] == 1024
    assert set(config["scoring"]["sentence_splitter"]) == {"english", "french"}
    assert config["scoring"]["sources"]["fr:detectable_format:title"] == "xlpo"
    assert config["scoring"]["ja_tokenizer"]["name"] == "janome" and config["scoring"]["ja_tokenizer"]["version"] == "0.5.0"
    assert "ja:keywords:forbidden_words" not in config["scoring"]["approximations"]
    assert "ja:keywords:existence" in config["scoring"]["approximations"]
    scores = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [(s["language"], s["failed"]) for s in scores][:2] == [("en", True), ("en", False)]
    assert scores[0]["strict"] is None and scores[1]["strict"] == [True]

    # A rerun reuses every answered item and retries only the failed one.
    backend.requests.clear()
    run_mifeval(data_dir=data_dir, out_dir=tmp_path, candidate=backend, limit=2, echo=None)
    assert [r.messages[0]["content"] for r in backend.requests] == [prompts["en"][0]]


def test_run_mifeval_rejects_unknown_languages_and_bad_limits(tmp_path):
    backend = FakeBackend(lambda request: "")
    with pytest.raises(UserError, match="languages"):
        run_mifeval(data_dir=tmp_path, out_dir=tmp_path, candidate=backend, languages=["de"])
    with pytest.raises(UserError, match="limit"):
        run_mifeval(data_dir=tmp_path, out_dir=tmp_path, candidate=backend, limit=0)
