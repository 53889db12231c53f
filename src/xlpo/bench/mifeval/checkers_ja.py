"""Japanese M-IFEval checkers for structure, keywords and sentences (scripts are in checkers_ja_script.py).

Each matches the class of the same instruction in M-IFEval's instructions/ja_instructions.py
(lightblue-tech/M-IFEval). Japanese has no spaces, so keyword, sentence and first-word checks cannot use
IFEval's English code. Words come from janome (IPADIC), as upstream: forbidden words must be whole words
and nominal endings need janome's noun tag. Required keywords are matched as substrings, as IFEval's
own existence/frequency checks do and as the shisa-ai/M-IFEval fork does (upstream wants one janome
token, which fails on compounds that janome splits, such as 創造性 = 創造 + 性).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import ClassVar

from janome.tokenizer import Tokenizer

from xlpo.bench.mifeval.checkers_common import (
    JA_RELATIONS,
    ConstrainedResponse,
    WrappedInQuotes,
    WrappedTitle,
    compare,
    markdown_paragraphs_first_word_check,
    require_count,
    require_relation,
)

# Full-width ASCII (！ ？ （ ） ０-９ Ａ-Ｚ ...) to ASCII and half-width ｡｢｣ to 。「」: the part of the
# neologd normalisation (ja_sentence_segmenter) that changes where sentences end.
_NORMALIZE = str.maketrans({**{chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)},
                            "｡": "。", "｢": "「", "｣": "」"})
_SENTENCE_END = frozenset("。!?")
_PROTECTED = re.compile(r"「[^「」]*」|\([^()]*\)")  # punctuation inside these does not end a sentence
_QUOTED = re.compile(r"「.*?」|『.*?』")
_TEXT_ONLY = re.compile(r"[^\s]")


def count_sentences_ja(text: str) -> int:
    """Sentences as upstream's ja_sentence_segmenter pipeline counts them.

    Normalise, split into lines, join a line ending in の to the next, then end a sentence after each
    。 ! ? (full-width ！？ included) outside 「...」 and (...). Blank segments are not sentences.
    """
    lines = text.strip().translate(_NORMALIZE).splitlines()
    units: list[str] = []
    for line in lines:
        if units and len(units[-1]) > 1 and units[-1].endswith("の"):
            units[-1] += line
        else:
            units.append(line)
    return sum(_count_unit_sentences(unit) for unit in units)


def _count_unit_sentences(unit: str) -> int:
    protected = {i for m in _PROTECTED.finditer(unit) for i in range(m.start(), m.end())}
    count, start = 0, 0
    for i, char in enumerate(unit):
        if char in _SENTENCE_END and i not in protected:
            count += bool(_TEXT_ONLY.search(unit[start:i + 1]))
            start = i + 1
    return count + bool(_TEXT_ONLY.search(unit[start:]))


@dataclass(frozen=True)
class NumberOfSentencesJa:
    """length_constraints:number_sentences: segmented sentences 未満 (<) / 以上 (>=) `num_sentences`."""

    num_sentences: int
    relation: str

    def __post_init__(self):
        require_count("num_sentences", self.num_sentences)
        require_relation(self.relation, JA_RELATIONS)

    def __call__(self, response: str) -> bool:
        return compare(count_sentences_ja(response), self.relation, self.num_sentences, JA_RELATIONS)


def _require_words(name: str, words: object) -> None:
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
        raise ValueError(f"{name} must be a non-empty list of words, got {words!r}")


def _require_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be non-blank text, got {value!r}")


@dataclass(frozen=True)
class KeywordExistenceJa:
    """keywords:existence: every keyword occurs (case-sensitive substring, as IFEval; upstream: a janome token)."""

    keywords: list

    def __post_init__(self):
        _require_words("keywords", self.keywords)

    def __call__(self, response: str) -> bool:
        return all(keyword in response for keyword in self.keywords)


@functools.lru_cache(maxsize=1)
def janome_tokenizer() -> Tokenizer:
    """One janome tokenizer for the process (loading its dictionary takes a moment)."""
    return Tokenizer()


def word_boundaries(text: str) -> set[int]:
    """Character offsets where a word starts or ends: janome token edges, except inside prefix + word
    (大 + 聖堂) and word + suffix (創造 + 性, 三 + 人), which are one word."""
    boundaries, offset, previous = {0, len(text)}, 0, ""
    for token in janome_tokenizer().tokenize(text):
        joined = previous.startswith("接頭詞") or token.part_of_speech.startswith("名詞,接尾")
        if not joined:
            boundaries.add(offset)
        offset += len(token.surface)
        previous = token.part_of_speech
    return boundaries


def contains_word(text: str, word: str, boundaries: set[int]) -> bool:
    """Whether `word` occurs in `text` starting and ending on word boundaries (IFEval's \\bword\\b)."""
    start = text.find(word)
    while start != -1:
        if start in boundaries and start + len(word) in boundaries:
            return True
        start = text.find(word, start + 1)
    return False


@dataclass(frozen=True)
class ForbiddenWordsJa:
    """keywords:forbidden_words: no forbidden word occurs as a whole word (栄養 is not in 栄養素, 森 not in
    森林), as IFEval matches \\bword\\b; a word janome splits (大聖堂 = 大 + 聖堂) is still found."""

    forbidden_words: list

    def __post_init__(self):
        _require_words("forbidden_words", self.forbidden_words)

    def __call__(self, response: str) -> bool:
        boundaries = word_boundaries(response)
        return not any(contains_word(response, word, boundaries) for word in self.forbidden_words)


@dataclass(frozen=True)
class KeywordFrequencyJa:
    """keywords:frequency: non-overlapping occurrences of the keyword 未満 / 以上 `frequency`."""

    keyword: str
    frequency: int
    relation: str

    def __post_init__(self):
        _require_text("keyword", self.keyword)
        require_count("frequency", self.frequency)
        require_relation(self.relation, JA_RELATIONS)

    def __call__(self, response: str) -> bool:
        return compare(response.count(self.keyword.strip()), self.relation, self.frequency, JA_RELATIONS)


@dataclass(frozen=True)
class NominalEndingJa:
    """detectable_format:nominal_ending (体言止め): at least `count` janome tokens 。！？ directly follow a token
    tagged 名詞 (noun), as upstream. Quoted 「...」 and 『...』 spans are removed first, as upstream."""

    count: int

    def __post_init__(self):
        require_count("count", self.count)

    def __call__(self, response: str) -> bool:
        tokens = list(janome_tokenizer().tokenize(_QUOTED.sub("", response)))
        nominal = sum(1 for before, token in zip(tokens, tokens[1:])
                      if token.surface in "。！？" and before.part_of_speech.startswith("名詞"))
        return nominal >= self.count


@dataclass(frozen=True)
class NthParagraphFirstWordJa:
    """length_constraints:nth_paragraph_first_word: IFEval's paragraph count, and the nth paragraph,
    stripped of leading 「 and 『, starts with `first_word` (a prefix: Japanese has no spaces)."""

    num_paragraphs: int
    nth_paragraph: int
    first_word: str

    def __post_init__(self):
        require_count("num_paragraphs", self.num_paragraphs)
        if not isinstance(self.nth_paragraph, int) or not 1 <= self.nth_paragraph <= self.num_paragraphs:
            raise ValueError(f"nth_paragraph must be in 1..num_paragraphs, got {self.nth_paragraph!r}")
        _require_text("first_word", self.first_word)

    def __call__(self, response: str) -> bool:
        paragraph = markdown_paragraphs_first_word_check(response, self.num_paragraphs, self.nth_paragraph)
        if paragraph is None:
            return False
        return paragraph.lstrip("「").lstrip("『").startswith(self.first_word.lower())


@dataclass(frozen=True)
class SectionsJa:
    """detectable_format:multiple_sections: at least `num_sections` headers 第<digits><spliter> (章/節/項),
    ASCII or full-width digits."""

    section_spliter: str
    num_sections: int

    def __post_init__(self):
        _require_text("section_spliter", self.section_spliter)
        require_count("num_sections", self.num_sections)

    def __call__(self, response: str) -> bool:
        pattern = r"\s?第[\d\uFF10-\uFF19]+" + re.escape(self.section_spliter.strip()) + r"\s?"
        return len(re.split(pattern, response)) - 1 >= self.num_sections


@dataclass(frozen=True)
class _CountLines:
    """Counts the lines that match PATTERN (multi-line mode)."""

    PATTERN: ClassVar[str] = ""

    def _count(self, response: str) -> int:
        return len(re.findall(self.PATTERN, response, flags=re.MULTILINE))


@dataclass(frozen=True)
class BulletListJa(_CountLines):
    """detectable_format:number_bullet_lists: exactly `num_bullets` lines start with ・ (not ・・)."""

    PATTERN: ClassVar[str] = r"^\s*・[^・].*$"
    num_bullets: int

    def __post_init__(self):
        require_count("num_bullets", self.num_bullets)

    def __call__(self, response: str) -> bool:
        return self._count(response) == self.num_bullets


@dataclass(frozen=True)
class NumberedListJa(_CountLines):
    """detectable_format:number_numbered_lists: exactly `num_items` lines start with "<digits>. "."""

    PATTERN: ClassVar[str] = r"^\s*\d+\.\s.*$"
    num_items: int

    def __post_init__(self):
        require_count("num_items", self.num_items)

    def __call__(self, response: str) -> bool:
        return self._count(response) == self.num_items


@dataclass(frozen=True)
class HighlightsJa:
    """detectable_format:number_highlighted_sections: at least `num_highlights` non-blank 《...》 on one line."""

    num_highlights: int

    def __post_init__(self):
        require_count("num_highlights", self.num_highlights)

    def __call__(self, response: str) -> bool:
        found = [h for h in re.findall(r"《[^\n《》]*》", response) if h.strip("《》").strip()]
        return len(found) >= self.num_highlights


@dataclass(frozen=True)
class PostscriptJa:
    """detectable_content:postscript: a line holds the marker, case-insensitive; P.S. and P.P.S allow a
    space after inner periods, any other marker (追伸, P.P.S.) is matched literally."""

    postscript_marker: str

    def __post_init__(self):
        _require_text("postscript_marker", self.postscript_marker)

    def __call__(self, response: str) -> bool:
        marker = self.postscript_marker.strip()
        special = {"P.P.S": r"\s*p\.\s?p\.\s?s.*$", "P.S.": r"\s*p\.\s?s\..*$"}
        pattern = special.get(marker, r"\s*" + re.escape(marker) + r".*$")
        return bool(re.findall(pattern, response, flags=re.IGNORECASE | re.MULTILINE))


@dataclass(frozen=True)
class RepeatPromptJa:
    """combination:repeat_prompt: the stripped response starts with the stripped prompt (case-sensitive,
    unlike English IFEval, which lower-cases both)."""

    prompt_to_repeat: str

    def __post_init__(self):
        _require_text("prompt_to_repeat", self.prompt_to_repeat)

    def __call__(self, response: str) -> bool:
        return response.strip().startswith(self.prompt_to_repeat.strip())


@dataclass(frozen=True)
class EndCheckerJa:
    """startend:end_checker: the stripped response, without closing 」』, ends with the phrase (also without)."""

    end_phrase: str

    def __post_init__(self):
        _require_text("end_phrase", self.end_phrase)

    def __call__(self, response: str) -> bool:
        return response.strip().strip("」』").endswith(self.end_phrase.strip().strip("」』"))


class TitleJa(WrappedTitle):
    """detectable_format:title, Japanese version: the title is wrapped in 『...』."""

    OPEN = "『"
    CLOSE = "』"


class QuotationJa(WrappedInQuotes):
    """startend:quotation, Japanese version: the whole response is wrapped in 「...」."""

    PAIRS = (("「", "」"),)


class ConstrainedResponseJa(ConstrainedResponse):
    OPTIONS = ("はい、そうです。", "いいえ、違います。", "どちらとも言えません。")
