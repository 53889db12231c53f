"""Japanese M-IFEval checkers about scripts and characters: kana, kanji, furigana, punctuation, endings.

Each matches the class of the same instruction in M-IFEval's instructions/ja_instructions.py
(lightblue-tech/M-IFEval), including its exact character ranges.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from xlpo.bench.mifeval.checkers_common import (
    JA_RELATIONS,
    compare,
    require_count,
    require_relation,
)

_KANJI = r"[\u4e00-\u9faf]"  # upstream's kanji range (CJK Unified Ideographs up to U+9FAF)
_QUOTED = re.compile(r"「.*?」|『.*?』")


def _is_hiragana(char: str) -> bool:
    return "ぁ" <= char <= "ゖ"


def _is_katakana(char: str) -> bool:
    return "ァ" <= char <= "ヺ" or "ｦ" <= char <= "ﾟ"  # full-width and half-width katakana


def _is_letter(char: str) -> bool:
    return unicodedata.category(char).startswith("L")


@dataclass(frozen=True)
class NoHiraganaJa:
    """letters:no_hiragana: no character in ぁ..ゖ."""

    def __call__(self, response: str) -> bool:
        return not any(_is_hiragana(c) for c in response)


@dataclass(frozen=True)
class NoKatakanaJa:
    """letters:no_katakana: no full-width (ァ..ヺ) or half-width (ｦ..ﾟ) katakana."""

    def __call__(self, response: str) -> bool:
        return not any(_is_katakana(c) for c in response)


@dataclass(frozen=True)
class HiraganaOnlyJa:
    """letters:hiragana_only: every letter (Unicode category L*) is in ぁ..ん or is ー."""

    def __call__(self, response: str) -> bool:
        return all("ぁ" <= c <= "ん" or c == "ー" or not _is_letter(c) for c in response)


@dataclass(frozen=True)
class KatakanaOnlyJa:
    """letters:katakana_only: every letter is in ァ..ン, is ー or ・, or is half-width katakana."""

    def __call__(self, response: str) -> bool:
        return all("ァ" <= c <= "ン" or c in "ー・" or "ｦ" <= c <= "ﾟ" or not _is_letter(c) for c in response)


@dataclass(frozen=True)
class KanjiLimitJa:
    """letters:kanji: the number of kanji characters 未満 / 以上 `kanji_limit`."""

    kanji_limit: int
    relation: str

    def __post_init__(self):
        require_count("kanji_limit", self.kanji_limit)
        require_relation(self.relation, JA_RELATIONS)

    def __call__(self, response: str) -> bool:
        return compare(len(re.findall(_KANJI, response)), self.relation, self.kanji_limit, JA_RELATIONS)


@dataclass(frozen=True)
class FuriganaJa:
    """letters:furigana: every run of kanji is directly followed by its hiragana reading in full-width （）."""

    def __call__(self, response: str) -> bool:
        runs = len(re.findall(_KANJI + "+", response))
        with_reading = len(re.findall(_KANJI + "+（[ぁ-ん]+）", response))
        return runs == with_reading


@dataclass(frozen=True)
class KansuujiJa:
    """letters:kansuuji: numbers are written in kanji, i.e. no decimal digit (\\d) at all."""

    def __call__(self, response: str) -> bool:
        return re.search(r"\d", response) is None


@dataclass(frozen=True)
class NoCommaJa:
    """punctuation:no_comma: no Japanese comma 、."""

    def __call__(self, response: str) -> bool:
        return "、" not in response


@dataclass(frozen=True)
class NoPeriodJa:
    """punctuation:no_period: no Japanese full stop 。."""

    def __call__(self, response: str) -> bool:
        return "。" not in response


@dataclass(frozen=True)
class NumberOfLettersJa:
    """length_constraints:number_letters: the response length in characters 未満 / 以上 `num_letters`."""

    num_letters: int
    relation: str

    def __post_init__(self):
        require_count("num_letters", self.num_letters)
        require_relation(self.relation, JA_RELATIONS)

    def __call__(self, response: str) -> bool:
        return compare(len(response), self.relation, self.num_letters, JA_RELATIONS)


@dataclass(frozen=True)
class LetterFrequencyJa:
    """keywords:letter_frequency: the hiragana `letter` plus its katakana twin (code point + 0x60),
    counted together, 未満 / 以上 `let_frequency`. Upstream swaps an invalid letter for a random
    hiragana; we reject it instead."""

    letter: str
    let_frequency: int
    let_relation: str

    def __post_init__(self):
        if not isinstance(self.letter, str) or len(self.letter) != 1 or not "ぁ" <= self.letter <= "ん":
            raise ValueError(f"letter must be one hiragana character, got {self.letter!r}")
        require_count("let_frequency", self.let_frequency)
        require_relation(self.let_relation, JA_RELATIONS)

    def __call__(self, response: str) -> bool:
        count = response.count(self.letter) + response.count(chr(ord(self.letter) + 0x60))
        return compare(count, self.let_relation, self.let_frequency, JA_RELATIONS)


@dataclass(frozen=True)
class SentenceEndingJa:
    """startend:sentence_unified_end: after removing 「...」 and 『...』, every non-empty piece between
    。！？ ends with `ending`. As upstream, pieces are not stripped: text after the last mark (even a
    newline) must end with `ending` too."""

    ending: str

    def __post_init__(self):
        if not isinstance(self.ending, str) or not self.ending:
            raise ValueError(f"ending must be text, got {self.ending!r}")

    def __call__(self, response: str) -> bool:
        pieces = re.split(r"[。！？]", _QUOTED.sub("", response))
        return all(piece.endswith(self.ending) for piece in pieces if piece)
