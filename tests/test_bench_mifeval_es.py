"""Spanish M-IFEval checkers on hand-made responses that follow and that break each instruction."""

from __future__ import annotations

import pytest

from xlpo.bench.mifeval import checkers_es as es

SPANISH = "Hola a todos, estoy muy contento de estar aquí con ustedes en esta hermosa ciudad hoy."
ENGLISH = "Hello everyone, I am very happy to see all of you today in this beautiful city."


def test_words_split_punctuation_and_hyphens_and_keep_numbers_and_symbols():
    assert es.words_es("El Sr. García pagó $1.000,50 por bien-estar, ¿no?") == [
        "El", "Sr", "García", "pagó", "$", "1.000,50", "por", "bien", "estar", "no"]


@pytest.mark.parametrize("text, expected", [
    ("Hola, Sr. García. ¿Cómo está? ¡Bien!", 3),  # "Sr." ends no sentence
    ("Primero.\nSegundo", 2),  # each line ends one
    ("Son 3.5 kilos. Vale.", 2),  # a decimal point ends none
    ("Compré peras, etc. y más cosas.", 1),  # a lower-case word follows
    ("Lo dijo J. Pérez. Luego se fue.", 2),  # an initial ends none
    ("---\n\nHola.", 1),  # no word, no sentence
    ("", 0),
])
def test_sentence_counts(text, expected):
    assert es.count_sentences_es(text) == expected


def test_number_of_sentences_at_least_and_at_most():
    text = "- Uno.\n- Dos.\n1. Tres."
    assert es.NumberOfSentencesEs(num_sentences=3, relation="al menos")(text) is True
    assert es.NumberOfSentencesEs(num_sentences=4, relation="al menos")(text) is False
    assert es.NumberOfSentencesEs(num_sentences=3, relation="como máximo")(text) is True
    assert es.NumberOfSentencesEs(num_sentences=2, relation="como máximo")(text) is False


def test_number_of_words_ignores_list_markers():
    text = "- uno dos\n* tres\n1. cuatro"  # the markers "-", "*" and "1." are no words
    assert es.NumberOfWordsEs(num_words=4, relation="al menos")(text) is True
    assert es.NumberOfWordsEs(num_words=5, relation="al menos")(text) is False
    assert es.NumberOfWordsEs(num_words=4, relation="como máximo")(text) is True
    assert es.NumberOfWordsEs(num_words=3, relation="como máximo")(text) is False
    with pytest.raises(ValueError):
        es.NumberOfWordsEs(num_words=3, relation="at most")


def test_capital_word_frequency():
    text = "HOLA amigo, ESTO es UNA prueba."
    assert es.CapitalWordFrequencyEs(capital_frequency=3, capital_relation="al menos")(text) is True
    assert es.CapitalWordFrequencyEs(capital_frequency=4, capital_relation="al menos")(text) is False
    assert es.CapitalWordFrequencyEs(capital_frequency=3, capital_relation="como máximo")(text) is True
    assert es.CapitalWordFrequencyEs(capital_frequency=2, capital_relation="como máximo")(text) is False


def test_tildes_count_words_with_an_acute_vowel():
    text = "Él está aquí, cantó una canción y un camion."  # Él, está, aquí, cantó, canción
    assert es.TildesEs(num_words=5, relation="al menos")(text) is True
    assert es.TildesEs(num_words=6, relation="al menos")(text) is False
    assert es.TildesEs(num_words=4, relation="como máximo")(text) is False


def test_enie_and_dieresis_need_exact_word_counts():
    assert es.EnieEs(let_frequency=2)("El niño y la niña.") is True
    assert es.EnieEs(let_frequency=2)("El niño.") is False
    assert es.EnieEs(let_frequency=1)("AÑO nuevo") is True  # case-insensitive
    assert es.DieresisEs(let_frequency=1)("Un pingüino.") is True
    assert es.DieresisEs(let_frequency=1)("Un pinguino.") is False


def test_capital_letters_need_all_caps_and_spanish():
    assert es.CapitalLettersEs()(SPANISH.upper()) is True
    assert es.CapitalLettersEs()(SPANISH) is False
    assert es.CapitalLettersEs()(ENGLISH.upper()) is False


def test_lowercase_letters_need_no_capital_and_spanish():
    assert es.LowercaseLettersEs()(SPANISH.lower()) is True
    assert es.LowercaseLettersEs()(SPANISH) is False
    assert es.LowercaseLettersEs()(ENGLISH.lower()) is False


def test_postscript_pd_allows_a_space_inside():
    pd = es.PostscriptEs(postscript_marker="P.D.")
    assert pd("Texto.\nP.D. Nos vemos.") is True and pd("Texto.\np. d. nos vemos.") is True
    assert pd("Texto sin posdata.") is False
    assert es.PostscriptEs(postscript_marker="Nota")("Texto.\nNota: mañana.") is True
    assert es.PostscriptEs(postscript_marker="Nota")("Texto.") is False


def test_bullets_are_asterisks_only():
    check = es.BulletListEs(num_bullets=2)
    assert check("Lista:\n* uno\n* dos") is True
    assert check("Lista:\n- uno\n- dos") is False
    assert check("* uno\n* dos\n* tres") is False


def test_nth_paragraph_first_words_may_be_several():
    check = es.NthParagraphFirstWordEs(num_paragraphs=2, nth_paragraph=2, first_word="En mi opinión")
    assert check("Introducción.\n\nEn mi opinión, sí.") is True
    assert check("Introducción.\n\nEn su opinión, sí.") is False
    assert check("Uno.\n\nEn mi opinión, sí.\n\nTres.") is False  # three paragraphs
    with pytest.raises(ValueError):
        es.NthParagraphFirstWordEs(num_paragraphs=2, nth_paragraph=3, first_word="Para")


def test_end_phrase_ignores_one_final_period():
    check = es.EndCheckerEs(end_phrase="Un saludo")
    assert check("Gracias.\nUn saludo.") is True and check('"Gracias. Un saludo"') is True
    assert check("Un saludo, Juan.") is False


def test_question_and_exclamation_need_both_marks():
    assert es.QuestionMarksEs()("Dime, ¿vienes mañana?") is True
    assert es.QuestionMarksEs()("Dime, vienes mañana?") is False and es.QuestionMarksEs()("¿ ?") is False
    assert es.ExclamationMarksEs()("¡Qué bien!") is True
    assert es.ExclamationMarksEs()("Qué bien!") is False


def test_constrained_response_options_are_spanish():
    assert es.ConstrainedResponseEs()("Mi respuesta: Quizás.") is True
    assert es.ConstrainedResponseEs()("Maybe.") is False
