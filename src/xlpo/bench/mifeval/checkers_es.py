"""Spanish M-IFEval checkers that lm-eval's English IFEval code does not cover.

Each matches the class of the same instruction in M-IFEval's instructions/es_instructions.py
(lightblue-tech/M-IFEval), with one substitution: upstream tokenizes words and sentences with the spaCy
models es_core_news_sm / xx_sent_ud_sm, which cannot be installed offline; `words_es` and
`count_sentences_es` are rule-based stand-ins (documented below, recorded as approximations).
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from typing import ClassVar

from xlpo.bench.mifeval.checkers_common import (
    ES_RELATIONS,
    ConstrainedResponse,
    compare,
    detect_language,
    markdown_paragraphs_first_word_check,
    require_count,
    require_relation,
)

# A word-character run (numbers keep their inner "1.000,5" separators) or any other single visible character.
_TOKEN = re.compile(r"\w+(?:[.,]\d+)*|[^\w\s]")
# List markers that upstream removes before counting words and sentences ("- ", "* ", "12. ").
_LIST_MARKER = re.compile(r"(^\s*[\d]+\.\s*)|(^\s*[-*]\s*)", flags=re.MULTILINE)
# A sentence ends after . ! ? or … (and any closing quotes or brackets) when whitespace or the end follows.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'»”’)\]]*(?=\s|$)")
# Period-final words that do not end a Spanish sentence.
_ES_ABBREVIATIONS = frozenset({"sr", "sra", "srta", "sres", "dr", "dra", "ud", "uds", "vd", "vds", "lic", "ing",
                               "prof", "profa", "arq", "av", "avda", "núm", "pág", "págs", "tel", "aprox",
                               "ej", "cía", "dpto", "depto", "vol", "cap", "art"})
_TILDE_VOWELS = frozenset("áéíóúÁÉÍÓÚ")


def words_es(text: str) -> list[str]:
    """Stand-in for spaCy's Spanish tokens that are not punctuation (upstream `tokenize_words`).

    Like spaCy, punctuation is split off, hyphenated words split at the hyphen, numbers stay whole and
    symbols such as "$" or an emoji count as words; multi-period abbreviations ("EE.UU.") do not stay whole.
    """
    return [t for t in _TOKEN.findall(text) if not all(unicodedata.category(c).startswith("P") for c in t)]


def count_sentences_es(text: str) -> int:
    """Stand-in for spaCy's sentence segmentation: lines, split after sentence-final punctuation.

    A period after a known abbreviation or a single letter (an initial) does not end a sentence, nor does
    punctuation followed by a lower-case word; segments without any word character are not sentences.
    """
    count = 0
    for line in text.splitlines():
        start = 0
        for match in _SENTENCE_END.finditer(line):
            before, after = line[start:match.start()], line[match.end():].lstrip()
            last_word = before.split()[-1].lower() if before.split() else ""
            if match.group().startswith(".") and (last_word in _ES_ABBREVIATIONS or re.fullmatch(r"\w", last_word)):
                continue
            if after[:1].islower():
                continue
            count += bool(re.search(r"\w", line[start:match.end()]))
            start = match.end()
        count += bool(re.search(r"\w", line[start:]))
    return count


def _without_list_markers(text: str) -> str:
    return _LIST_MARKER.sub("", text)


@dataclass(frozen=True)
class _CountRelation:
    """A count of something in the response compared with `threshold` by a Spanish relation."""

    def _check(self, count: int, relation: str, threshold: int) -> bool:
        return compare(count, relation, threshold, ES_RELATIONS)


@dataclass(frozen=True)
class NumberOfWordsEs(_CountRelation):
    """length_constraints:number_words: words (list markers removed) at least / at most `num_words`."""

    num_words: int
    relation: str

    def __post_init__(self):
        require_count("num_words", self.num_words)
        require_relation(self.relation, ES_RELATIONS)

    def __call__(self, response: str) -> bool:
        text = _without_list_markers(response).replace("\n", " ")
        return self._check(len(words_es(text)), self.relation, self.num_words)


@dataclass(frozen=True)
class NumberOfSentencesEs(_CountRelation):
    """length_constraints:number_sentences: sentences (list markers removed) at least / at most the threshold."""

    num_sentences: int
    relation: str

    def __post_init__(self):
        require_count("num_sentences", self.num_sentences)
        require_relation(self.relation, ES_RELATIONS)

    def __call__(self, response: str) -> bool:
        return self._check(count_sentences_es(_without_list_markers(response)), self.relation, self.num_sentences)


@dataclass(frozen=True)
class CapitalWordFrequencyEs(_CountRelation):
    """change_case:capital_word_frequency: words with `str.isupper()` at least / at most `capital_frequency`."""

    capital_frequency: int
    capital_relation: str

    def __post_init__(self):
        require_count("capital_frequency", self.capital_frequency)
        require_relation(self.capital_relation, ES_RELATIONS)

    def __call__(self, response: str) -> bool:
        count = sum(1 for word in words_es(response) if word.isupper())
        return self._check(count, self.capital_relation, self.capital_frequency)


@dataclass(frozen=True)
class TildesEs(_CountRelation):
    """special_character:tildes: words holding an acute-accented vowel, at least / at most `num_words`."""

    num_words: int
    relation: str

    def __post_init__(self):
        require_count("num_words", self.num_words)
        require_relation(self.relation, ES_RELATIONS)

    def __call__(self, response: str) -> bool:
        count = sum(1 for word in words_es(response) if any(c in _TILDE_VOWELS for c in word))
        return self._check(count, self.relation, self.num_words)


@dataclass(frozen=True)
class _WordsWithLetter:
    """Exactly `let_frequency` words contain LETTER (case-insensitive)."""

    LETTER: ClassVar[str] = ""
    let_frequency: int

    def __post_init__(self):
        require_count("let_frequency", self.let_frequency)

    def __call__(self, response: str) -> bool:
        return sum(1 for word in words_es(response) if self.LETTER in word.lower()) == self.let_frequency


class EnieEs(_WordsWithLetter):
    """special_character:enie: exactly `let_frequency` words with ñ."""

    LETTER = "ñ"


class DieresisEs(_WordsWithLetter):
    """special_character:dieresis: exactly `let_frequency` words with ü."""

    LETTER = "ü"


@dataclass(frozen=True)
class CapitalLettersEs:
    """change_case:spanish_capital: every letter upper case once accents are split off (NFKD), and
    langdetect says Spanish on the lower-cased text; undecidable text passes, as upstream."""

    def __call__(self, response: str) -> bool:
        letters = [c for c in unicodedata.normalize("NFKD", response) if not unicodedata.combining(c)]
        if not all(c.isupper() or not c.isalpha() for c in letters):
            return False
        detected = detect_language(response.lower())
        return detected is None or detected == "es"


@dataclass(frozen=True)
class LowercaseLettersEs:
    """change_case:spanish_lowercase: `str.islower()` and langdetect says Spanish; undecidable passes."""

    def __call__(self, response: str) -> bool:
        if not response.islower():
            return False
        detected = detect_language(response)
        return detected is None or detected == "es"


@dataclass(frozen=True)
class PostscriptEs:
    """detectable_content:postscript: a line (lower-cased) holds the marker: "p.d." with an optional space
    after the first period for P.D., else the lower-cased marker read as a regular expression (as upstream)."""

    postscript_marker: str

    def __post_init__(self):
        if not isinstance(self.postscript_marker, str) or not self.postscript_marker.strip():
            raise ValueError(f"postscript_marker must be text, got {self.postscript_marker!r}")

    def __call__(self, response: str) -> bool:
        marker = self.postscript_marker.strip()
        pattern = r"\s*p\.\s?d\..*$" if marker == "P.D." else r"\s*" + marker.lower() + r".*$"
        return bool(re.findall(pattern, response.lower(), flags=re.MULTILINE))


@dataclass(frozen=True)
class BulletListEs:
    """detectable_format:number_bullet_lists: exactly `num_bullets` lines start with "*" (not "**");
    unlike English IFEval, "-" lines are not bullets."""

    num_bullets: int

    def __post_init__(self):
        require_count("num_bullets", self.num_bullets)

    def __call__(self, response: str) -> bool:
        return len(re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE)) == self.num_bullets


@dataclass(frozen=True)
class NthParagraphFirstWordEs:
    """length_constraints:nth_paragraph_first_word: as IFEval, but `first_word` may be several words; the
    paragraph's first words, without ASCII punctuation and lower-cased, must equal them."""

    num_paragraphs: int
    nth_paragraph: int
    first_word: str

    def __post_init__(self):
        require_count("num_paragraphs", self.num_paragraphs)
        if not isinstance(self.nth_paragraph, int) or not 1 <= self.nth_paragraph <= self.num_paragraphs:
            raise ValueError(f"nth_paragraph must be in 1..num_paragraphs, got {self.nth_paragraph!r}")
        if not isinstance(self.first_word, str) or not self.first_word.split():
            raise ValueError(f"first_word must be text, got {self.first_word!r}")

    def __call__(self, response: str) -> bool:
        paragraph = markdown_paragraphs_first_word_check(response, self.num_paragraphs, self.nth_paragraph)
        if paragraph is None:
            return False
        expected = self.first_word.lower().split()
        words = ["".join(c for c in word if c not in string.punctuation).lower() for word in paragraph.split()]
        return words[:len(expected)] == expected


@dataclass(frozen=True)
class EndCheckerEs:
    """startend:end_checker: as IFEval (strip, strip '"', lower-case), but one final period is ignored."""

    end_phrase: str

    def __post_init__(self):
        if not isinstance(self.end_phrase, str) or not self.end_phrase.strip():
            raise ValueError(f"end_phrase must be text, got {self.end_phrase!r}")

    def __call__(self, response: str) -> bool:
        text = response.strip().strip('"').lower()
        text = text.removesuffix(".")
        return text.endswith(self.end_phrase.strip().lower())


@dataclass(frozen=True)
class _InvertedMarks:
    """Some OPEN...CLOSE span (no CLOSE inside) with non-blank text between the marks."""

    OPEN: ClassVar[str] = ""
    CLOSE: ClassVar[str] = ""

    def __call__(self, response: str) -> bool:
        spans = re.findall(re.escape(self.OPEN) + "[^" + re.escape(self.CLOSE) + "]*" + re.escape(self.CLOSE), response)
        return any(span.lstrip(self.OPEN).rstrip(self.CLOSE).strip() for span in spans)


class QuestionMarksEs(_InvertedMarks):
    """punctuation:question_marks: a question written ¿...?."""

    OPEN, CLOSE = "¿", "?"


class ExclamationMarksEs(_InvertedMarks):
    """punctuation:exclamation_marks: an exclamation written ¡...!."""

    OPEN, CLOSE = "¡", "!"


class ConstrainedResponseEs(ConstrainedResponse):
    OPTIONS = ("Sí.", "No.", "Quizás.")
