"""Pieces shared by our French, Spanish and Japanese M-IFEval checkers: relations and marker-based checks.

Every checker is a frozen dataclass built from one row's kwargs (a wrong or missing kwarg raises
TypeError/ValueError at build time, which the registry reports with the file:line) and called on a
response: `checker(response) -> bool`. Behaviour follows the M-IFEval authors' instruction classes
(lightblue-tech/M-IFEval, instructions/{fr,es,ja}_instructions.py); each class names what it matches.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import langdetect

# The comparison words of each language's data files and the comparison they mean upstream.
# French and Japanese are "less than" / "at least" like IFEval; Spanish is "at least" / "at most".
FR_RELATIONS: Mapping[str, Callable[[int, int], bool]] = {"moins de": operator.lt, "au moins": operator.ge}
ES_RELATIONS: Mapping[str, Callable[[int, int], bool]] = {"al menos": operator.ge, "como máximo": operator.le}
JA_RELATIONS: Mapping[str, Callable[[int, int], bool]] = {"未満": operator.lt, "以上": operator.ge}


def require_relation(relation: str, allowed: Mapping[str, Callable]) -> None:
    if relation not in allowed:
        raise ValueError(f"relation must be one of {list(allowed)}, got {relation!r}")


def require_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def compare(count: int, relation: str, threshold: int, allowed: Mapping[str, Callable[[int, int], bool]]) -> bool:
    return allowed[relation](count, threshold)


LANGDETECT_SEED = 0


def seed_langdetect() -> None:
    """langdetect samples at random unless seeded: with a fixed seed the same text always gets the same code."""
    langdetect.DetectorFactory.seed = LANGDETECT_SEED


def detect_language(text: str) -> str | None:
    """langdetect's code for `text`; None if undecidable (no letters)."""
    seed_langdetect()
    try:
        return langdetect.detect(text)
    except langdetect.LangDetectException:
        return None


@dataclass(frozen=True)
class ResponseLanguage:
    """language:response_language, as in every M-IFEval language: langdetect's answer equals the code.

    Undecidable text counts as followed, as upstream. One deliberate fix: langdetect names Chinese
    "zh-cn"/"zh-tw", never "zh", so upstream can never pass the French "zh" rows; we compare the base code.
    """

    language: str

    def __post_init__(self):
        if not isinstance(self.language, str) or not self.language:
            raise ValueError(f"language must be an ISO 639-1 code, got {self.language!r}")

    def __call__(self, response: str) -> bool:
        detected = detect_language(response)
        if detected is None:
            return True
        return detected == self.language or detected.split("-")[0] == self.language


@dataclass(frozen=True)
class ConstrainedResponse:
    """detectable_format:constrained_response: the stripped response contains one of the language's options."""

    OPTIONS: ClassVar[tuple[str, ...]] = ()

    def __call__(self, response: str) -> bool:
        text = response.strip()
        return any(option in text for option in self.OPTIONS)


@dataclass(frozen=True)
class WrappedTitle:
    """detectable_format:title: some line holds OPEN...CLOSE with non-blank text once the marks are stripped."""

    OPEN: ClassVar[str] = ""
    CLOSE: ClassVar[str] = ""

    def __call__(self, response: str) -> bool:
        pattern = re.escape(self.OPEN) + r"[^\n]+" + re.escape(self.CLOSE)
        for title in re.findall(pattern, response):
            if title.lstrip(self.OPEN).rstrip(self.CLOSE).strip():
                return True
        return False


@dataclass(frozen=True)
class WrappedInQuotes:
    """startend:quotation: the stripped response (2+ characters) starts and ends with one of the pairs."""

    PAIRS: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __call__(self, response: str) -> bool:
        text = response.strip()
        return len(text) > 1 and any(text.startswith(a) and text.endswith(b) for a, b in self.PAIRS)


def markdown_paragraphs_first_word_check(response: str, num_paragraphs: int, nth_paragraph: int) -> str | None:
    """The nth "\\n\\n"-separated paragraph, stripped, if the paragraph count matches and it exists; else None.

    Shared by the Spanish and Japanese nth_paragraph_first_word checks, which differ only in how the
    first word is compared. As upstream, blank paragraphs are not counted but still take an index.
    """
    paragraphs = re.split(r"\n\n", response)
    count = sum(1 for paragraph in paragraphs if paragraph.strip())
    if nth_paragraph > count:
        return None
    paragraph = paragraphs[nth_paragraph - 1].strip()
    if not paragraph or count != num_paragraphs:
        return None
    return paragraph
