"""French M-IFEval checkers on hand-made responses that follow and that break each instruction."""

from __future__ import annotations

import pytest

from xlpo.bench.mifeval import checkers_fr as fr
from xlpo.bench.mifeval.checkers_common import ResponseLanguage

FRENCH = "Bonjour à tous, je suis très content de vous voir aujourd'hui dans cette belle ville."
ENGLISH = "Hello everyone, I am very happy to see all of you today in this beautiful city."


def test_sentences_use_french_abbreviations():
    text = "M. Dupont est arrivé. Il fait beau ! Vraiment ? Oui, etc. mais non."
    assert fr.count_sentences_fr(text) == 4  # "M." and "etc." end no sentence
    assert fr.NumberOfSentencesFr(num_sentences=5, relation="moins de")(text) is True
    assert fr.NumberOfSentencesFr(num_sentences=4, relation="moins de")(text) is False
    assert fr.NumberOfSentencesFr(num_sentences=4, relation="au moins")(text) is True
    assert fr.NumberOfSentencesFr(num_sentences=5, relation="au moins")(text) is False
    with pytest.raises(ValueError):
        fr.NumberOfSentencesFr(num_sentences=5, relation="less than")


def test_capital_letters_need_all_caps_and_french():
    assert fr.CapitalLettersFr()(FRENCH.upper()) is True
    assert fr.CapitalLettersFr()(FRENCH) is False
    assert fr.CapitalLettersFr()(ENGLISH.upper()) is False


def test_lowercase_letters_need_no_capital_and_french():
    assert fr.LowercaseLettersFr()(FRENCH.lower()) is True
    assert fr.LowercaseLettersFr()(FRENCH) is False
    assert fr.LowercaseLettersFr()(ENGLISH.lower()) is False


def test_informal_address_looks_for_tutoiement_words():
    check = fr.InformalAddressFr()
    assert check("Je pense que tu as raison.") is True
    assert check("Je t'aime bien.") is True
    assert check("Vous avez raison, votre tente est prête.") is False  # "te" inside "tente" is no word


def test_no_digits():
    assert fr.NoDigitsFr()("Deux pommes et trois poires.") is True
    assert fr.NoDigitsFr()("2 pommes.") is False


def test_forbidden_char_in_any_case():
    cedilla, ethel = fr.ForbiddenCharFr(forbidden_char="ç"), fr.ForbiddenCharFr(forbidden_char="œ")
    assert cedilla("Le garcon mange.") is True
    assert cedilla("Le garçon mange.") is False and cedilla("LE GARÇON") is False
    assert ethel("Le coeur bat.") is True
    assert ethel("Le cœur bat.") is False and ethel("CŒUR") is False


def test_no_accents_uses_upstreams_letters():
    check = fr.NoAccentsFr()
    assert check("Le cafe est pret.") is True
    assert check("Le café est prêt.") is False and check("ÉTÉ") is False
    assert check("Le cœur.") is True  # œ is a ligature, not an accented letter, upstream too


def test_accents_must_be_written_on_the_listed_words():
    check = fr.AccentsFr(word_to_accentuate={"ecole": "école", "tot": "tôt"})
    assert check("Je vais à l'école tôt.") is True
    assert check("Je vais à L'ÉCOLE TÔT.") is True  # compared lower-cased
    assert check("Je vais a l'ecole tot.") is False
    assert check("Je vais à l'école tot.") is False
    # As upstream, a key that is not the value without accents forbids the key and lets the value pass.
    odd = fr.AccentsFr(word_to_accentuate={"oranges": "orangées"})
    assert odd("des nuances orangées") is True and odd("des oranges") is False


def test_title_is_wrapped_in_double_hashes():
    assert fr.TitleFr()("##Hymne à la joie##\nLe texte.") is True
    assert fr.TitleFr()("<<Hymne à la joie>>\nLe texte.") is False
    assert fr.TitleFr()("## ##\nLe texte.") is False


def test_quotation_accepts_straight_quotes_and_guillemets():
    check = fr.QuotationFr()
    assert check('"Bonjour."') is True and check("'Bonjour.'") is True and check("« Bonjour. »") is True
    assert check("Bonjour.") is False and check("« Bonjour.") is False and check('"') is False


def test_constrained_response_options_are_french():
    assert fr.ConstrainedResponseFr()("Ma réponse est Oui.") is True
    assert fr.ConstrainedResponseFr()("Yes.") is False


def test_response_language_compares_the_base_code():
    assert ResponseLanguage(language="fr")(FRENCH) is True
    assert ResponseLanguage(language="fr")(ENGLISH) is False
    assert ResponseLanguage(language="zh")("我今天很高兴见到你们，这个城市非常美丽，我们一起去公园散步吧。") is True
    assert ResponseLanguage(language="fr")("12345 !!!") is True  # undecidable text counts as followed, as upstream
