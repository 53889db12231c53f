"""Which checker scores each M-IFEval instruction id: lm-eval's IFEval code or one of our own.

lm-eval 0.4.13 (`lm_eval.tasks.ifeval`, Google's IFEval checkers) scores every English id and every
French, Spanish or Japanese id whose upstream M-IFEval class does the same thing, after translating the
language's relation words; the rest use the language-specific checkers in checkers_{fr,es,ja}*.py.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from xlpo.bench.mifeval import checkers_es as es
from xlpo.bench.mifeval import checkers_fr as fr
from xlpo.bench.mifeval import checkers_ja as ja
from xlpo.bench.mifeval import checkers_ja_script as ja_script
from xlpo.bench.mifeval.checkers_common import ResponseLanguage, seed_langdetect
from xlpo.bench.mifeval.nltk_setup import ensure_punkt_tab
from xlpo.errors import UserError

Check = Callable[[str], bool]

# lm-eval's IFEval checkers fall back to `random` for some invalid kwargs (English letter_frequency rows
# ask for "!" or "#": lm-eval then counts a random letter). We seed that choice so scores are reproducible.
CHECKER_SEED = 0


@functools.lru_cache(maxsize=1)
def lm_eval_instructions() -> Mapping[str, type]:
    """lm-eval's IFEval registry, imported only after the NLTK data is in place (its import downloads otherwise)."""
    ensure_punkt_tab()
    seed_langdetect()  # lm-eval's language checks call langdetect, which samples at random unless seeded
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT  # only now: see the docstring

    return INSTRUCTION_DICT


@dataclass(frozen=True)
class LmEval:
    """An lm-eval IFEval class; `relations` maps this language's relation word to (lm-eval word, offset).

    The offset turns Spanish "como máximo n" (<= n) into lm-eval's "less than n + 1" (counts are integers).
    `fixed` lists kwargs upstream accepts but never reads, with the only value whose meaning we honour.
    """

    name: str
    relation_kwarg: tuple[str, str] | None = None  # (relation kwarg, threshold kwarg)
    relations: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    fixed: Mapping[str, str] = field(default_factory=dict)
    source: str = "lm-eval"
    approximation: str | None = None

    def build(self, instruction_id: str, kwargs: dict, prompt: str) -> Check:
        kwargs = dict(kwargs)
        for key, value in self.fixed.items():
            if kwargs.pop(key, value) != value:
                raise ValueError(f"{key} must be {value!r} (the only value M-IFEval scores as asked)")
        if self.relation_kwarg is not None:
            relation_key, threshold_key = self.relation_kwarg
            if kwargs.get(relation_key) not in self.relations:
                raise ValueError(f"{relation_key} must be one of {list(self.relations)}, got {kwargs.get(relation_key)!r}")
            word, offset = self.relations[kwargs[relation_key]]
            kwargs[relation_key] = word
            if offset:
                kwargs[threshold_key] = kwargs[threshold_key] + offset
        checker = lm_eval_instructions()[self.name](instruction_id)
        state = random.getstate()
        random.seed(CHECKER_SEED)
        try:
            checker.build_description(**kwargs)
            args = checker.get_instruction_args()
            if args and "prompt" in args:  # as lm-eval's utils.py: checkers that need the prompt get it
                checker.build_description(prompt=prompt)
        finally:
            random.setstate(state)
        return checker.check_following


@dataclass(frozen=True)
class Own:
    """One of our checker classes, built from the row's kwargs."""

    cls: type
    source: str = "xlpo"
    approximation: str | None = None

    def build(self, instruction_id: str, kwargs: dict, prompt: str) -> Check:
        return self.cls(**kwargs)


_FR = {"moins de": ("less than", 0), "au moins": ("at least", 0)}
_ES = {"al menos": ("at least", 0), "como máximo": ("less than", 1)}
_SPACY = "rule-based stand-in for the spaCy es_core_news_sm tokenizer/sentence splitter"
_JANOME = "substring match (as IFEval's keyword checks) instead of one janome token"

# The 25 English IFEval ids: all scored by lm-eval as is.
EN_NAMES = (
    "keywords:existence", "keywords:frequency", "keywords:forbidden_words", "keywords:letter_frequency",
    "language:response_language", "length_constraints:number_sentences", "length_constraints:number_paragraphs",
    "length_constraints:number_words", "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders", "detectable_content:postscript",
    "detectable_format:number_bullet_lists", "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections", "detectable_format:multiple_sections",
    "detectable_format:json_format", "detectable_format:title", "combination:two_responses",
    "combination:repeat_prompt", "startend:end_checker", "change_case:capital_word_frequency",
    "change_case:english_capital", "change_case:english_lowercase", "punctuation:no_comma", "startend:quotation",
)

# Ids whose upstream class in each language is IFEval's, word for word.
_SAME_AS_IFEVAL = {
    "fr": ("combination:repeat_prompt", "combination:two_responses", "detectable_content:number_placeholders",
           "detectable_content:postscript", "detectable_format:json_format", "detectable_format:multiple_sections",
           "detectable_format:number_bullet_lists", "detectable_format:number_highlighted_sections",
           "keywords:existence", "keywords:forbidden_words", "length_constraints:nth_paragraph_first_word",
           "length_constraints:number_paragraphs", "punctuation:no_comma", "startend:end_checker"),
    "es": ("combination:repeat_prompt", "combination:two_responses", "detectable_format:json_format",
           "detectable_format:title", "keywords:existence", "keywords:forbidden_words",
           "length_constraints:number_paragraphs", "punctuation:no_comma", "startend:quotation"),
    "ja": ("combination:two_responses", "detectable_content:number_placeholders", "detectable_format:json_format",
           "length_constraints:number_paragraphs"),
}

REGISTRY: dict[str, LmEval | Own] = {
    **{f"en:{name}": LmEval(name) for name in EN_NAMES},
    **{f"{lang}:{name}": LmEval(name) for lang, names in _SAME_AS_IFEVAL.items() for name in names},
    # French: IFEval code with French relation words, then the French-specific classes.
    "fr:change_case:capital_word_frequency": LmEval("change_case:capital_word_frequency",
                                                    ("capital_relation", "capital_frequency"), _FR),
    "fr:keywords:frequency": LmEval("keywords:frequency", ("relation", "frequency"), _FR),
    "fr:keywords:letter_frequency": LmEval("keywords:letter_frequency", ("let_relation", "let_frequency"), _FR),
    "fr:length_constraints:number_words": LmEval("length_constraints:number_words", ("relation", "num_words"), _FR),
    "fr:length_constraints:number_sentences": Own(fr.NumberOfSentencesFr),
    "fr:change_case:french_capital": Own(fr.CapitalLettersFr),
    "fr:change_case:french_lowercase": Own(fr.LowercaseLettersFr),
    "fr:detectable_content:informal_address": Own(fr.InformalAddressFr),
    "fr:detectable_content:no_digits": Own(fr.NoDigitsFr),
    "fr:detectable_format:constrained_response": Own(fr.ConstrainedResponseFr),
    "fr:detectable_format:title": Own(fr.TitleFr),
    "fr:language:response_language": Own(ResponseLanguage),
    "fr:special_character:accents": Own(fr.AccentsFr),
    "fr:special_character:ethel_or_cedilla": Own(fr.ForbiddenCharFr),
    "fr:special_character:no_accents": Own(fr.NoAccentsFr),
    "fr:startend:quotation": Own(fr.QuotationFr),
    # Spanish: IFEval code with Spanish relation words or an unread "relation", then Spanish classes.
    "es:keywords:frequency": LmEval("keywords:frequency", ("relation", "frequency"), _ES),
    "es:keywords:letter_frequency": LmEval("keywords:letter_frequency", ("let_relation", "let_frequency"), _ES),
    "es:detectable_content:number_placeholders": LmEval("detectable_content:number_placeholders",
                                                        fixed={"relation": "al menos"}),
    "es:detectable_format:multiple_sections": LmEval("detectable_format:multiple_sections",
                                                     fixed={"relation": "al menos"}),
    "es:detectable_format:number_highlighted_sections": LmEval("detectable_format:number_highlighted_sections",
                                                               fixed={"relation": "al menos"}),
    "es:change_case:capital_word_frequency": Own(es.CapitalWordFrequencyEs, approximation=_SPACY),
    "es:change_case:spanish_capital": Own(es.CapitalLettersEs),
    "es:change_case:spanish_lowercase": Own(es.LowercaseLettersEs),
    "es:detectable_content:postscript": Own(es.PostscriptEs),
    "es:detectable_format:constrained_response": Own(es.ConstrainedResponseEs),
    "es:detectable_format:number_bullet_lists": Own(es.BulletListEs),
    "es:language:response_language": Own(ResponseLanguage),
    "es:length_constraints:nth_paragraph_first_word": Own(es.NthParagraphFirstWordEs),
    "es:length_constraints:number_sentences": Own(es.NumberOfSentencesEs, approximation=_SPACY),
    "es:length_constraints:number_words": Own(es.NumberOfWordsEs, approximation=_SPACY),
    "es:punctuation:exclamation_marks": Own(es.ExclamationMarksEs),
    "es:punctuation:question_marks": Own(es.QuestionMarksEs),
    "es:special_character:dieresis": Own(es.DieresisEs, approximation=_SPACY),
    "es:special_character:enie": Own(es.EnieEs, approximation=_SPACY),
    "es:special_character:tildes": Own(es.TildesEs, approximation=_SPACY),
    "es:startend:end_checker": Own(es.EndCheckerEs),
    # Japanese.
    "ja:combination:repeat_prompt": Own(ja.RepeatPromptJa),
    "ja:detectable_content:postscript": Own(ja.PostscriptJa),
    "ja:detectable_format:constrained_response": Own(ja.ConstrainedResponseJa),
    "ja:detectable_format:multiple_sections": Own(ja.SectionsJa),
    "ja:detectable_format:nominal_ending": Own(ja.NominalEndingJa),
    "ja:detectable_format:number_bullet_lists": Own(ja.BulletListJa),
    "ja:detectable_format:number_highlighted_sections": Own(ja.HighlightsJa),
    "ja:detectable_format:number_numbered_lists": Own(ja.NumberedListJa),
    "ja:detectable_format:title": Own(ja.TitleJa),
    "ja:keywords:existence": Own(ja.KeywordExistenceJa, approximation=_JANOME),
    "ja:keywords:forbidden_words": Own(ja.ForbiddenWordsJa),
    "ja:keywords:frequency": Own(ja.KeywordFrequencyJa, approximation=_JANOME),
    "ja:keywords:letter_frequency": Own(ja_script.LetterFrequencyJa),
    "ja:language:response_language": Own(ResponseLanguage),
    "ja:length_constraints:nth_paragraph_first_word": Own(ja.NthParagraphFirstWordJa),
    "ja:length_constraints:number_letters": Own(ja_script.NumberOfLettersJa),
    "ja:length_constraints:number_sentences": Own(ja.NumberOfSentencesJa),
    "ja:letters:furigana": Own(ja_script.FuriganaJa),
    "ja:letters:hiragana_only": Own(ja_script.HiraganaOnlyJa),
    "ja:letters:kanji": Own(ja_script.KanjiLimitJa),
    "ja:letters:kansuuji": Own(ja_script.KansuujiJa),
    "ja:letters:katakana_only": Own(ja_script.KatakanaOnlyJa),
    "ja:letters:no_hiragana": Own(ja_script.NoHiraganaJa),
    "ja:letters:no_katakana": Own(ja_script.NoKatakanaJa),
    "ja:punctuation:no_comma": Own(ja_script.NoCommaJa),
    "ja:punctuation:no_period": Own(ja_script.NoPeriodJa),
    "ja:startend:end_checker": Own(ja.EndCheckerJa),
    "ja:startend:quotation": Own(ja.QuotationJa),
    "ja:startend:sentence_unified_end": Own(ja_script.SentenceEndingJa),
}


def build_checker(instruction_id: str, kwargs: object, prompt: str, where: str) -> Check:
    """The check for one instruction of one row; a UserError naming `where` for an unknown id or bad kwargs."""
    spec = REGISTRY.get(instruction_id)
    if spec is None:
        raise UserError(f"{where}: unknown M-IFEval instruction id {instruction_id!r}")
    if not isinstance(kwargs, dict):
        raise UserError(f"{where}: kwargs of {instruction_id} must be an object, got {type(kwargs).__name__}")
    kwargs = {key: value for key, value in kwargs.items() if value is not None}  # None means "not set" upstream
    try:
        return spec.build(instruction_id, kwargs, prompt)
    except (TypeError, ValueError, KeyError) as exc:
        raise UserError(f"{where}: bad kwargs for {instruction_id}: {exc}") from None


def describe_checkers() -> dict:
    """For results.json: which implementation scores each id, and where ours only approximate upstream."""
    return {
        "sources": {instruction_id: spec.source for instruction_id, spec in sorted(REGISTRY.items())},
        "approximations": {instruction_id: spec.approximation for instruction_id, spec in sorted(REGISTRY.items())
                           if spec.approximation},
        "lm_eval_checker_seed": CHECKER_SEED,
    }
