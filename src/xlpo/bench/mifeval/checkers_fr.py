"""French M-IFEval checkers that lm-eval's English IFEval code does not cover.

Each matches the class of the same instruction in M-IFEval's instructions/fr_instructions.py
(lightblue-tech/M-IFEval); French ids with language-independent meaning use lm-eval (see registry.py).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import ClassVar

from xlpo.bench.mifeval.checkers_common import (
    FR_RELATIONS,
    ConstrainedResponse,
    WrappedInQuotes,
    WrappedTitle,
    compare,
    detect_language,
    require_count,
    require_relation,
)
from xlpo.bench.mifeval.nltk_setup import ensure_punkt_tab

# Abbreviations whose final period does not end a French sentence: the ones M-IFEval adds to NLTK's
# French Punkt model (fr_instructions_util._ABBREVIATIONS), in Punkt's form (lower case, no final period).
FRENCH_ABBREVIATIONS = (
    "m", "mr", "mme", "mlle", "dr", "dre", "drs", "dres", "prof", "pr", "cap", "lt",
    "etc", "cf", "vs", "rép", "i.e", "c.-à-d", "ex", "e.g",
    "apr", "av", "j.c", "j.-c", "a.d", "env", "janv", "fév", "mar", "avr", "juil", "sept", "oct", "nov", "déc",
    "svp", "p.-v", "p.v", "tél", "tel", "adj", "q.v", "p", "resp", "v", "vol", "nb", "n.b",
    "p.s", "ps", "p.p.s", "p.-s", "p-s",
)

# The accented letters NoAccents forbids: exactly upstream's character class (no œ/æ, no capital Ÿ).
ACCENTED_LETTERS = frozenset("àáâãäåçèéêëìíîïñòóôõöùúûüýÿ" "ÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝ")


@functools.lru_cache(maxsize=1)
def french_sentence_tokenizer():
    """NLTK's French Punkt (real punkt_tab data, or the untrained fallback) plus the French abbreviations."""
    from nltk.tokenize.punkt import PunktTokenizer  # ~3 s to import: only when a French checker runs

    ensure_punkt_tab()
    tokenizer = PunktTokenizer("french")
    tokenizer._params.abbrev_types.update(FRENCH_ABBREVIATIONS)
    return tokenizer


def count_sentences_fr(text: str) -> int:
    return len(french_sentence_tokenizer().tokenize(text))


def strip_accents(text: str) -> str:
    """Letters without their combining marks ("leçon" -> "lecon"), as fr_instructions_util.remove_accents."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


@dataclass(frozen=True)
class NumberOfSentencesFr:
    """length_constraints:number_sentences: Punkt sentences (French model + abbreviations) vs the threshold."""

    num_sentences: int
    relation: str

    def __post_init__(self):
        require_count("num_sentences", self.num_sentences)
        require_relation(self.relation, FR_RELATIONS)

    def __call__(self, response: str) -> bool:
        return compare(count_sentences_fr(response), self.relation, self.num_sentences, FR_RELATIONS)


@dataclass(frozen=True)
class CapitalLettersFr:
    """change_case:french_capital: `str.isupper()` and langdetect says French on the lower-cased text
    (upstream lower-cases because langdetect takes capitalised French for German); undecidable passes."""

    def __call__(self, response: str) -> bool:
        if not response.isupper():
            return False
        detected = detect_language(response.lower())
        return detected is None or detected == "fr"


@dataclass(frozen=True)
class LowercaseLettersFr:
    """change_case:french_lowercase: `str.islower()` and langdetect says French; undecidable passes."""

    def __call__(self, response: str) -> bool:
        if not response.islower():
            return False
        detected = detect_language(response)
        return detected is None or detected == "fr"


@dataclass(frozen=True)
class InformalAddressFr:
    """detectable_content:informal_address: some "tutoiement" word (tu, te, t', toi, ton, ta, tes),
    case-insensitive with word boundaries; like upstream, only the ASCII apostrophe counts in t'."""

    PATTERN: ClassVar[re.Pattern] = re.compile(r"\b(?:tu|te|t'|toi|ton|ta|tes)\b", re.IGNORECASE)

    def __call__(self, response: str) -> bool:
        return self.PATTERN.search(response) is not None


@dataclass(frozen=True)
class NoDigitsFr:
    """detectable_content:no_digits: no decimal digit at all (Python's Unicode-aware \\d, as upstream)."""

    def __call__(self, response: str) -> bool:
        return re.search(r"\d", response) is None


@dataclass(frozen=True)
class ForbiddenCharFr:
    """special_character:ethel_or_cedilla: the character (ç or œ) appears in no case."""

    forbidden_char: str

    def __post_init__(self):
        if not isinstance(self.forbidden_char, str) or not self.forbidden_char:
            raise ValueError(f"forbidden_char must be a character, got {self.forbidden_char!r}")

    def __call__(self, response: str) -> bool:
        return re.search(re.escape(self.forbidden_char), response, flags=re.IGNORECASE) is None


@dataclass(frozen=True)
class NoAccentsFr:
    """special_character:no_accents: none of upstream's accented letters."""

    def __call__(self, response: str) -> bool:
        return not any(c in ACCENTED_LETTERS for c in response)


@dataclass(frozen=True)
class AccentsFr:
    """special_character:accents: every word whose accent-free form is a key must be written as its value.

    Words are `\\b\\w+\\b` runs of the lower-cased response. As upstream, a key that is not the accent-free
    form of its value (e.g. "oranges" -> "orangées") forbids the key and never checks the value.
    """

    word_to_accentuate: dict

    def __post_init__(self):
        if not isinstance(self.word_to_accentuate, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.word_to_accentuate.items()):
            raise ValueError(f"word_to_accentuate must map words to words, got {self.word_to_accentuate!r}")

    def __call__(self, response: str) -> bool:
        for word in re.findall(r"\b\w+\b", response.lower()):
            expected = self.word_to_accentuate.get(strip_accents(word))
            if expected is not None and word != expected:
                return False
        return True


class TitleFr(WrappedTitle):
    """detectable_format:title, French version: the title is wrapped in double hashes, ##hymne à la joie##."""

    OPEN = "##"
    CLOSE = "##"


class QuotationFr(WrappedInQuotes):
    """startend:quotation, French version: straight double or single quotes, or guillemets « »."""

    PAIRS = (('"', '"'), ("'", "'"), ("«", "»"))


class ConstrainedResponseFr(ConstrainedResponse):
    OPTIONS = ("Oui.", "Non.", "Peut-être.")
