"""Offline NLTK Punkt data for the IFEval checkers: real punkt_tab when installed, else an untrained Punkt.

lm-eval's `instructions_util` calls `nltk.download("punkt_tab")` at import time when the data is missing,
and nothing in xlpo may reach the network. `ensure_punkt_tab()` must therefore run before any lm-eval
IFEval module is imported: it leaves real NLTK data alone and otherwise creates, once, an empty Punkt
model under xlpo's cache (no abbreviation list, so "Mr. Smith" counts as two sentences).
"""

from __future__ import annotations

from pathlib import Path

from xlpo.fileio import write_text
from xlpo.models import cache_root

# The four files `nltk.tokenize.punkt.PunktTokenizer(lang)` reads; empty ones give an untrained model.
PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")
# English for lm-eval (sentence counts and `word_tokenize`), French for our French sentence counter.
PUNKT_LANGUAGES = ("english", "french")

REAL_PUNKT = "punkt_tab (NLTK data)"
UNTRAINED_PUNKT = "untrained punkt (no NLTK data found; install with python -m nltk.downloader punkt_tab)"


def fallback_root() -> Path:
    """The nltk_data folder xlpo creates when the user has no punkt_tab data."""
    return cache_root() / "nltk_data"


def ensure_punkt_tab() -> dict[str, str]:
    """Make `tokenizers/punkt_tab/<lang>` findable for every language we use; which splitter each gets.

    Returns {language: REAL_PUNKT | UNTRAINED_PUNKT}, to be recorded with the results.
    """
    import nltk  # ~3 s to import: only when M-IFEval runs

    root = fallback_root()
    missing = [lang for lang in PUNKT_LANGUAGES if _punkt_location(nltk, lang) is None]
    if missing:
        for lang in PUNKT_LANGUAGES:  # both, so that a later lookup never falls through to a download
            folder = root / "tokenizers" / "punkt_tab" / lang
            for name in PUNKT_FILES:
                if not (folder / name).is_file():
                    write_text(folder / name, "")
        if str(root) not in nltk.data.path:
            nltk.data.path.append(str(root))  # after the user's paths: real data keeps precedence
    splitters = {}
    for lang in PUNKT_LANGUAGES:
        found = _punkt_location(nltk, lang)
        if found is None:  # cannot happen after the fallback above; fail loudly rather than download
            raise RuntimeError(f"punkt_tab/{lang} still not found under {nltk.data.path}")
        splitters[lang] = UNTRAINED_PUNKT if _is_within(found, root) else REAL_PUNKT
    return splitters


def _punkt_location(nltk, lang: str) -> Path | None:
    try:
        return Path(str(nltk.data.find(f"tokenizers/punkt_tab/{lang}/")))
    except LookupError:
        return None


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False
