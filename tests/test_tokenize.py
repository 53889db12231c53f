"""Tokenizing preference pairs: exact chat formatting, EOS exactly once, BOS never doubled or None,
explicit truncation with reasons, and the data fingerprint. Uses the real SmolLM2 tokenizer."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from xlpo.data.records import PreferenceRecord
from xlpo.data.tokenize import PairTokenizer, TokenizedPair, fingerprint
from xlpo.errors import UserError

EOS, BOS = 2, 1  # <|im_end|>, <|im_start|> in SmolLM2
DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"

# A Llama-style template that writes the BOS token itself and uses no <|im_start|> markers, so the
# only id 1 in a prompt is the BOS.
BOS_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def rec(prompt="Translate to German: Hello", chosen="Hallo", rejected="Hallo Welt", id="r0", lang="de"):
    return PreferenceRecord(id=id, prompt=prompt, chosen=chosen, rejected=rejected, lang=lang)


@pytest.fixture(scope="module")
def bos_tokenizer(tokenizer):
    """The real tokenizer, told to prepend BOS like Llama/Mistral tokenizers do."""
    tok2 = copy.deepcopy(tokenizer)
    tok2.add_bos_token = True
    return tok2


def with_template(tok, template):
    other = copy.deepcopy(tok)
    other.chat_template = template
    return other


def assert_all_ints(pair: TokenizedPair, vocab: int):
    for ids in (pair.prompt_ids, pair.chosen_ids, pair.rejected_ids):
        assert all(type(i) is int and 0 <= i < vocab for i in ids), ids


def assert_eos_once_at_end(pair: TokenizedPair):
    for ids in (pair.chosen_ids, pair.rejected_ids):
        assert ids[-1] == EOS, ids
        assert ids.count(EOS) == 1, ids


# --------------------------------------------------------------------------- the fixtures themselves


def test_real_tokenizer_facts(tokenizer, bos_tokenizer):
    assert len(tokenizer) == 49152
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", EOS)
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<|im_start|>", BOS)
    assert tokenizer("a").input_ids[:1] != [BOS]  # does not add BOS by itself
    assert bos_tokenizer("a").input_ids == [BOS] + tokenizer("a").input_ids  # the copy does
    assert tokenizer("a").input_ids[:1] != [BOS]  # and the original was not changed by the copy


# --------------------------------------------------------------------------- exact text per chat format


def test_tokenizer_format_exact_text(tokenizer):
    pt = PairTokenizer(tokenizer, "tokenizer")
    pair, reason, truncated = pt.encode(0, rec())
    assert reason is None and truncated is False
    prompt_text = DEFAULT_SYSTEM + "<|im_start|>user\nTranslate to German: Hello<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(pair.prompt_ids) == prompt_text
    assert tokenizer.decode(pair.chosen_ids) == "Hallo<|im_end|>"
    assert tokenizer.decode(pair.rejected_ids) == "Hallo Welt<|im_end|>"
    assert list(pair.prompt_ids) == tokenizer(prompt_text, add_special_tokens=False).input_ids
    assert list(pair.chosen_ids) == tokenizer("Hallo", add_special_tokens=False).input_ids + [EOS]
    # prompt + completion is exactly the template's rendering of the whole conversation (minus its final newline)
    full = tokenizer.apply_chat_template([{"role": "user", "content": "Translate to German: Hello"},
                                          {"role": "assistant", "content": "Hallo"}], tokenize=False)
    assert tokenizer.decode(pair.prompt_ids + pair.chosen_ids) == full.rstrip("\n")
    assert pair.prompt_ids[0] == BOS and pair.prompt_ids[1] != BOS  # <|im_start|>system, not doubled


def test_zephyr_format_exact_text(tokenizer):
    pair, _, _ = PairTokenizer(tokenizer, "zephyr").encode(0, rec())
    assert tokenizer.decode(pair.prompt_ids) == "<|user|>\nTranslate to German: Hello<|im_end|>\n<|assistant|>\n"
    assert tokenizer.decode(pair.chosen_ids) == "Hallo<|im_end|>"
    assert tokenizer.decode(pair.rejected_ids) == "Hallo Welt<|im_end|>"
    assert BOS not in pair.prompt_ids


def test_none_format_exact_text(tokenizer):
    pair, _, _ = PairTokenizer(tokenizer, "none").encode(0, rec(prompt="English: Hello\nGerman:", chosen=" Hallo"))
    assert tokenizer.decode(pair.prompt_ids) == "English: Hello\nGerman:"
    assert list(pair.prompt_ids) == tokenizer("English: Hello\nGerman:", add_special_tokens=False).input_ids
    assert tokenizer.decode(pair.chosen_ids) == " Hallo<|im_end|>"


def test_none_format_rejects_message_prompts(tokenizer):
    conv = [{"role": "user", "content": "Hello"}]
    with pytest.raises(UserError, match="chat_format 'none'"):
        PairTokenizer(tokenizer, "none").encode(0, rec(prompt=conv))


# --------------------------------------------------------------------------- conversational records


def test_conversational_prompt_and_assistant_completions_tokenizer_format(tokenizer):
    prompt = [{"role": "system", "content": "You translate."}, {"role": "user", "content": "Hello"}]
    record = rec(prompt=prompt, chosen=[{"role": "assistant", "content": "Hallo"}],
                 rejected=[{"role": "assistant", "content": "Tschüss"}])
    pair, _, _ = PairTokenizer(tokenizer, "tokenizer").encode(0, record)
    assert tokenizer.decode(pair.prompt_ids) == (
        "<|im_start|>system\nYou translate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(pair.chosen_ids) == "Hallo<|im_end|>"
    assert tokenizer.decode(pair.rejected_ids) == "Tschüss<|im_end|>"
    assert_eos_once_at_end(pair)


def test_conversational_prompt_zephyr_format(tokenizer):
    prompt = [{"role": "system", "content": "You translate."}, {"role": "user", "content": "Hello"}]
    record = rec(prompt=prompt, chosen=[{"role": "assistant", "content": "Hallo"}])
    pair, _, _ = PairTokenizer(tokenizer, "zephyr").encode(0, record)
    assert tokenizer.decode(pair.prompt_ids) == (
        "<|system|>\nYou translate.<|im_end|>\n<|user|>\nHello<|im_end|>\n<|assistant|>\n")
    assert tokenizer.decode(pair.chosen_ids) == "Hallo<|im_end|>"


def test_plain_and_message_records_tokenize_identically(tokenizer):
    pt = PairTokenizer(tokenizer, "tokenizer")
    plain, _, _ = pt.encode(0, rec())
    conv, _, _ = pt.encode(0, rec(prompt=[{"role": "user", "content": "Translate to German: Hello"}],
                                  chosen=[{"role": "assistant", "content": "Hallo"}],
                                  rejected=[{"role": "assistant", "content": "Hallo Welt"}]))
    assert (plain.prompt_ids, plain.chosen_ids, plain.rejected_ids) == (conv.prompt_ids, conv.chosen_ids,
                                                                        conv.rejected_ids)


# --------------------------------------------------------------------------- EOS exactly once


@pytest.mark.parametrize("fmt", ["tokenizer", "zephyr", "none"])
@pytest.mark.parametrize("completion", [
    "Hallo",
    "Hallo<|im_end|>",  # the user's data already ends with the end-of-turn token
    "Hallo<|im_end|>\n",
    "Hallo <|im_end|><|im_end|>",
    "Hallo<|endoftext|>",  # another special token at the end is not an EOS
    "",
])
def test_eos_exactly_once_at_end(tokenizer, fmt, completion):
    prompt = "Translate: Hello"
    pair, reason, _ = PairTokenizer(tokenizer, fmt).encode(0, rec(prompt=prompt, chosen=completion,
                                                                  rejected=[{"role": "assistant",
                                                                             "content": completion}]))
    assert reason is None
    assert_eos_once_at_end(pair)
    assert_all_ints(pair, len(tokenizer))
    assert pair.chosen_ids == pair.rejected_ids


def test_text_before_eos_is_kept(tokenizer):
    pair, _, _ = PairTokenizer(tokenizer, "zephyr").encode(0, rec(chosen="Hallo <|im_end|>\n", rejected="a<|im_end|>b"))
    assert tokenizer.decode(pair.chosen_ids) == "Hallo <|im_end|>"
    # an EOS inside the text (not at its end) is data, left alone; the completion still ends with EOS
    assert tokenizer.decode(pair.rejected_ids) == "a<|im_end|>b<|im_end|>"


def test_template_end_of_turn_other_than_eos_is_not_followed_by_eos(tokenizer):
    # A Gemma-like template that ends turns with a special token that is not EOS: that token ends the
    # answer and no EOS is added after it.
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    pair, _, _ = PairTokenizer(with_template(tokenizer, template), "tokenizer").encode(0, rec())
    assert tokenizer.decode(pair.chosen_ids) == "Hallo<|endoftext|>"
    assert EOS not in pair.chosen_ids


# --------------------------------------------------------------------------- BOS: exactly once, never None


@pytest.mark.parametrize("fmt", ["tokenizer", "zephyr", "none"])
def test_real_tokenizer_inserts_no_bos_and_no_none(tokenizer, fmt):
    pt = PairTokenizer(tokenizer, fmt)
    assert pt.bos_id is None
    pair, _, _ = pt.encode(0, rec(prompt="Hello"))
    assert_all_ints(pair, len(tokenizer))
    expected_prompt = {"tokenizer": DEFAULT_SYSTEM + "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
                       "zephyr": "<|user|>\nHello<|im_end|>\n<|assistant|>\n", "none": "Hello"}[fmt]
    assert tokenizer.decode(pair.prompt_ids) == expected_prompt


@pytest.mark.parametrize("fmt", ["zephyr", "none"])
def test_bos_added_once_when_tokenizer_adds_bos(bos_tokenizer, tokenizer, fmt):
    pt = PairTokenizer(bos_tokenizer, fmt)
    assert pt.bos_id == BOS
    pair, _, _ = pt.encode(0, rec(prompt="Hello"))
    plain, _, _ = PairTokenizer(tokenizer, fmt).encode(0, rec(prompt="Hello"))
    assert pair.prompt_ids == (BOS,) + plain.prompt_ids
    assert pair.prompt_ids.count(BOS) == 1
    assert BOS not in pair.chosen_ids and BOS not in pair.rejected_ids
    assert pair.chosen_ids == plain.chosen_ids
    assert_all_ints(pair, len(tokenizer))
    assert_eos_once_at_end(pair)


def test_bos_not_doubled_with_template_starting_with_bos_token(bos_tokenizer, tokenizer):
    # SmolLM2's template starts with <|im_start|> (= its BOS): nothing is added in front of it.
    pair, _, _ = PairTokenizer(bos_tokenizer, "tokenizer").encode(0, rec())
    plain, _, _ = PairTokenizer(tokenizer, "tokenizer").encode(0, rec())
    assert pair.prompt_ids == plain.prompt_ids
    assert pair.prompt_ids[:2] != (BOS, BOS)


@pytest.mark.parametrize("adds_bos", [True, False])
def test_bos_exactly_once_when_template_writes_bos_token(bos_tokenizer, tokenizer, adds_bos):
    tok = with_template(bos_tokenizer if adds_bos else tokenizer, BOS_TEMPLATE)
    pair, reason, _ = PairTokenizer(tok, "tokenizer").encode(0, rec(prompt="Hello"))
    assert reason is None
    assert tokenizer.decode(pair.prompt_ids) == "<|im_start|>user: Hello<|im_end|>\nassistant: "
    assert pair.prompt_ids.count(BOS) == 1 and pair.prompt_ids[0] == BOS
    assert BOS not in pair.chosen_ids and BOS not in pair.rejected_ids
    assert tokenizer.decode(pair.chosen_ids) == "Hallo<|im_end|>"
    assert_eos_once_at_end(pair)


def test_no_bos_token_means_no_none_id(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.add_bos_token = True
    tok.bos_token = None
    pt = PairTokenizer(tok, "zephyr")
    assert pt.bos_id is None
    pair, _, _ = pt.encode(0, rec())
    assert_all_ints(pair, len(tokenizer))


# --------------------------------------------------------------------------- templates that cannot be used


def test_template_not_prefix_consistent_is_a_user_error(tokenizer):
    # The generation prompt says "assistant" but a rendered answer says "bot": the prompt is not a prefix.
    template = ("{% for m in messages %}<|im_start|>{% if m['role'] == 'assistant' %}bot{% else %}{{ m['role'] }}"
                "{% endif %}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    pt = PairTokenizer(with_template(tokenizer, template), "tokenizer")
    with pytest.raises(UserError, match="chat template.*zephyr or none"):
        pt.encode(0, rec())
    # the same records work with a format that needs no template
    assert PairTokenizer(with_template(tokenizer, template), "zephyr").encode(0, rec())[0] is not None


def test_tokenizer_format_without_template_is_a_user_error(tokenizer):
    with pytest.raises(UserError, match="data.chat_format"):
        PairTokenizer(with_template(tokenizer, None), "tokenizer")


def test_tokenizer_without_eos_is_a_user_error(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.eos_token = None
    with pytest.raises(UserError, match="EOS"):
        PairTokenizer(tok, "zephyr")


# --------------------------------------------------------------------------- length limits, reported


def _lengths(tokenizer, fmt="none", **kw):
    pair, _, _ = PairTokenizer(tokenizer, fmt, max_length=10_000, max_prompt_length=5_000).encode(0, rec(**kw))
    return len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids)


def test_prompt_too_long_skipped_with_id_and_reason(tokenizer):
    long_prompt = "word " * 50
    p, c, r = _lengths(tokenizer, prompt=long_prompt)
    pt = PairTokenizer(tokenizer, "none", max_length=p + 100, max_prompt_length=p - 1)
    pairs, report = pt.encode_all([rec(id="short", prompt="hi"), rec(id="long", prompt=long_prompt)])
    assert [x.id for x in pairs] == ["short"]
    assert report.skipped == [{"id": "long", "reason": f"prompt too long ({p} > max_prompt_length {p - 1})"}]
    assert (report.total, report.kept) == (2, 1)
    # exactly at the limit is kept
    pairs, report = PairTokenizer(tokenizer, "none", max_length=p + 100, max_prompt_length=p).encode_all(
        [rec(id="long", prompt=long_prompt)])
    assert len(pairs) == 1 and report.skipped == []


def test_sequence_too_long_skipped_at_exact_boundary(tokenizer):
    long_answer = "Das ist eine sehr lange Antwort " * 5
    p, c, r = _lengths(tokenizer, chosen=long_answer)
    assert c > r
    fits = PairTokenizer(tokenizer, "none", max_length=p + c, max_prompt_length=p)
    (pair,), report = fits.encode_all([rec(chosen=long_answer)])
    assert pair.length == p + c and report.skipped == []
    too_short = PairTokenizer(tokenizer, "none", max_length=p + c - 1, max_prompt_length=p)
    pairs, report = too_short.encode_all([rec(id="x", chosen=long_answer)])
    assert pairs == []
    assert report.skipped == [{"id": "x", "reason": f"sequence too long ({p + c} > max_length {p + c - 1})"}]
    assert report.summary() == {"total": 1, "kept": 0, "truncated": 0, "identical_pairs": 0, "skipped": 1,
                                "skipped_by_reason": {"sequence too long": 1}}


def test_truncate_cuts_completions_and_counts_them(tokenizer):
    long_answer = "Das ist eine sehr lange Antwort " * 5
    p, c, r = _lengths(tokenizer, chosen=long_answer)
    max_length = p + r + 2  # rejected fits, chosen does not
    pt = PairTokenizer(tokenizer, "none", max_length=max_length, max_prompt_length=p, truncation="truncate")
    full, _, _ = PairTokenizer(tokenizer, "none", max_length=10_000, max_prompt_length=5_000).encode(
        0, rec(chosen=long_answer))
    pairs, report = pt.encode_all([rec(id="cut", chosen=long_answer), rec(id="ok", chosen="Hallo")])
    assert [x.id for x in pairs] == ["cut", "ok"]
    assert report.truncated == 1 and report.skipped == []
    cut = pairs[0]
    assert len(cut.prompt_ids) + len(cut.chosen_ids) == max_length
    assert cut.chosen_ids == full.chosen_ids[:max_length - p]  # a prefix of the full completion
    assert cut.rejected_ids == full.rejected_ids  # it fit, so it is untouched
    assert cut.length == max_length
    assert report.summary()["truncated"] == 1


def test_truncate_still_skips_a_prompt_too_long(tokenizer):
    long_prompt = "word " * 50
    p, _, _ = _lengths(tokenizer, prompt=long_prompt)
    pt = PairTokenizer(tokenizer, "none", max_length=p + 1, max_prompt_length=p - 1, truncation="truncate")
    pairs, report = pt.encode_all([rec(id="p", prompt=long_prompt)])
    assert pairs == [] and report.skipped[0]["reason"].startswith("prompt too long")
    assert report.truncated == 0


def test_truncate_with_no_room_left_skips(tokenizer):
    p, _, _ = _lengths(tokenizer)
    pt = PairTokenizer(tokenizer, "none", max_length=p, max_prompt_length=p, truncation="truncate")
    pairs, report = pt.encode_all([rec(id="full")])
    assert pairs == [] and report.skipped[0]["id"] == "full"
    assert report.skipped[0]["reason"].startswith("sequence too long")


def test_identical_pairs_counted_and_indices_are_record_positions(tokenizer):
    pt = PairTokenizer(tokenizer, "zephyr", max_length=64, max_prompt_length=32)
    records = [rec(id="same", chosen="Hallo", rejected="Hallo"), rec(id="too-long", prompt="x " * 100),
               rec(id="diff"), rec(id="same-msg", chosen="Hallo", rejected=[{"role": "assistant", "content": "Hallo"}])]
    pairs, report = pt.encode_all(records)
    assert report.identical_pairs == 2
    assert [(x.index, x.id, x.lang) for x in pairs] == [(0, "same", "de"), (2, "diff", "de"), (3, "same-msg", "de")]
    assert report.summary()["skipped_by_reason"] == {"prompt too long": 1}


def test_pair_length_is_prompt_plus_longer_completion():
    pair = TokenizedPair(index=0, id="a", lang=None, prompt_ids=(5, 6, 7), chosen_ids=(8, 2), rejected_ids=(9, 9, 9, 2))
    assert pair.length == 7


# --------------------------------------------------------------------------- fingerprint and settings


def test_fingerprint_stable_and_sensitive(tokenizer):
    records = [rec(id=f"r{i}", chosen=f"Antwort {i}") for i in range(4)]
    pairs, _ = PairTokenizer(tokenizer, "tokenizer").encode_all(records)
    again, _ = PairTokenizer(tokenizer, "tokenizer").encode_all(list(records))
    fp = fingerprint(pairs)
    assert fp == fingerprint(again) and len(fp) == 64
    changed = list(pairs)
    ids = list(changed[2].chosen_ids)
    ids[0] += 1
    changed[2] = dataclasses.replace(changed[2], chosen_ids=tuple(ids))
    assert fingerprint(changed) != fp
    assert fingerprint([dataclasses.replace(pairs[0], lang="fr")] + pairs[1:]) != fp
    assert fingerprint([dataclasses.replace(pairs[0], id="other")] + pairs[1:]) != fp
    assert fingerprint(pairs[::-1]) != fp
    assert fingerprint(pairs[:3]) != fp
    # moving one token from the prompt to the completion changes it too
    p0 = pairs[0]
    moved = dataclasses.replace(p0, prompt_ids=p0.prompt_ids[:-1], chosen_ids=p0.prompt_ids[-1:] + p0.chosen_ids)
    assert fingerprint([moved] + pairs[1:]) != fp


def test_fingerprint_differs_between_chat_formats(tokenizer):
    records = [rec()]
    fps = {fingerprint(PairTokenizer(tokenizer, f).encode_all(records)[0]) for f in ("tokenizer", "zephyr", "none")}
    assert len(fps) == 3


def test_settings_name_everything_that_changes_ids(tokenizer):
    base = PairTokenizer(tokenizer, "tokenizer", max_length=256, max_prompt_length=128).settings()
    assert base["chat_format"] == "tokenizer" and base["max_length"] == 256 and base["max_prompt_length"] == 128
    assert base["truncation"] == "skip" and base["vocab"] == 49152
    other = PairTokenizer(with_template(tokenizer, BOS_TEMPLATE), "tokenizer", max_length=256,
                          max_prompt_length=128).settings()
    assert other["chat_template_sha"] != base["chat_template_sha"]
