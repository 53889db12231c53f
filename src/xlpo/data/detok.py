"""Detokenize MLQE-PE's tokenized text with one method per language, the same for MT and post-edit.

MLQE-PE distributes its source, MT and post-edit Moses-tokenized ("However , a ..."), and its
Chinese side word-segmented. A preference pair whose chosen and rejected were restored by
different methods would differ in formatting as well as in quality, so every text of a language
goes through `detokenize(text, lang)` and nothing else:

- European languages (and English sources): sacremoses' `MosesDetokenizer`, the maintained
  Python port of the Moses detokenizer the data was tokenized with.
- Chinese (and Japanese): `join_cjk_segments`. MLQE-PE's segmenter joined its tokens with one
  space and kept each original space as a token of its own, so an original space shows as a run
  of three spaces and a segment boundary as a single space. Undoing that: a single space is a
  segment boundary and goes; a run is an original space and stays, except next to a wide (CJK)
  character or full-width punctuation mark, where Chinese puts no space. That last rule matters:
  the raw MT has spaces such as "意义 ， 但" that post-editors often removed without changing a
  word (HTER 0), and keeping them would make chosen and rejected differ in spacing alone. On the
  staged data the result equals the direct-assessment TSVs' untokenized MT on 9000 of 9000 rows
  once spaces next to CJK characters are removed from both. Text whose runs were collapsed
  elsewhere (`runs_preserved=False`) cannot be inverted exactly: there single spaces are kept
  between two Latin letters or digits and removed elsewhere.

Every result is whitespace-normalised (ends stripped, inner runs collapsed to one space); DivEMT,
which is untokenized, goes through `normalize_space` only.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from sacremoses import MosesDetokenizer

CJK_LANGS = frozenset({"zh", "ja"})

_SPACE_RUN = re.compile(r" +")


def normalize_space(text: str) -> str:
    """Strip the ends and collapse every run of whitespace to one space."""
    return " ".join(text.split())


@functools.lru_cache(maxsize=None)
def _moses(lang: str):
    return MosesDetokenizer(lang=lang)


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _narrow_alnum(ch: str) -> bool:
    return ch.isalnum() and not _wide(ch)


def join_cjk_segments(text: str, runs_preserved: bool = True) -> str:
    """Undo MLQE-PE's Chinese word segmentation (see the module docstring)."""
    text = text.replace("\t", " ").strip(" ")

    def repl(m: re.Match) -> str:
        before, after = text[m.start() - 1], text[m.end()]
        if _wide(before) or _wide(after):
            return ""
        if len(m.group()) > 1:
            return " "
        if not runs_preserved and _narrow_alnum(before) and _narrow_alnum(after):
            return " "
        return ""

    return normalize_space(_SPACE_RUN.sub(repl, text))


def remove_cjk_spaces(text: str) -> str:
    """Remove every space next to a wide (CJK) character: how `join_cjk_segments` treats them."""
    text = normalize_space(text)
    return _SPACE_RUN.sub(lambda m: "" if _wide(text[m.start() - 1]) or _wide(text[m.end()]) else " ", text)


def moses_detokenize(text: str, lang: str) -> str:
    """sacremoses' Moses detokenizer for `lang`; XML entities are left as they are."""
    return normalize_space(_moses(lang).detokenize(text.split(), unescape=False))


def detokenize(text: str, lang: str, runs_preserved: bool = True) -> str:
    """The one detokenizer for `lang` (ISO 639-1): CJK segment joining for zh/ja, Moses otherwise."""
    if lang in CJK_LANGS:
        return join_cjk_segments(text, runs_preserved)
    return moses_detokenize(text, lang)


def has_segmentation_runs(texts) -> bool:
    """Whether segmented CJK text still marks original spaces as runs of three spaces."""
    return any("   " in t for t in texts)
