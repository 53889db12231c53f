"""Japanese M-IFEval checkers on hand-made responses that follow and that break each instruction."""

from __future__ import annotations

import pytest

from xlpo.bench.mifeval import checkers_ja as ja
from xlpo.bench.mifeval import checkers_ja_script as js


@pytest.mark.parametrize("text, expected", [
    ("今日は晴れです。明日は雨！本当？\n彼は「行く。来る。」と言った。", 4),  # ！？ end sentences, 「」 protects
    ("これは私の\n本です。", 1),  # a line ending in の continues on the next
    ("注意\n\n説明です。", 2),  # each non-blank line ends one
    ("（注。）です。", 1),  # nor does a full stop inside brackets
    ("", 0),
])
def test_sentence_counts(text, expected):
    assert ja.count_sentences_ja(text) == expected


def test_number_of_sentences_less_than_and_at_least():
    text = "一文目です。二文目です。三文目です。"
    assert ja.NumberOfSentencesJa(num_sentences=4, relation="未満")(text) is True
    assert ja.NumberOfSentencesJa(num_sentences=3, relation="未満")(text) is False
    assert ja.NumberOfSentencesJa(num_sentences=3, relation="以上")(text) is True
    assert ja.NumberOfSentencesJa(num_sentences=4, relation="以上")(text) is False
    with pytest.raises(ValueError):
        ja.NumberOfSentencesJa(num_sentences=3, relation="at least")


def test_required_keywords_are_substrings():
    assert ja.KeywordExistenceJa(keywords=["創造性", "社会"])("その創造性を通じて社会問題を考える。") is True
    assert ja.KeywordExistenceJa(keywords=["創造性", "芸術"])("その創造性を通じて社会問題を考える。") is False


@pytest.mark.parametrize("words, response, followed", [
    (["栄養"], "栄養素が豊富な食事。", True),  # 栄養 is not a word inside 栄養素
    (["森"], "森林を歩く。", True),  # nor 森 inside 森林
    (["森林"], "森林浴に行く。", True),
    (["栄養"], "栄養が大切です。", False),
    (["森"], "森を歩く。", False),
    (["栄養"], "栄養補給と栄養素。", False),  # 栄養補給 is the compound 栄養 + 補給
    (["大聖堂"], "この大聖堂は有名です。", False),  # janome splits it (大 + 聖堂): still one word
    (["聖堂"], "この大聖堂は有名です。", True),  # a prefix belongs to its word
    (["創造"], "その創造性を考える。", True),  # and so does a suffix
    (["大聖堂"], "この教会は有名です。", True),
    (["猫", "犬"], "犬が好き。", False),
])
def test_forbidden_words_match_whole_words(words, response, followed):
    assert ja.ForbiddenWordsJa(forbidden_words=words)(response) is followed


def test_keyword_frequency():
    assert ja.KeywordFrequencyJa(keyword="猫", frequency=2, relation="以上")("猫と猫が遊ぶ。") is True
    assert ja.KeywordFrequencyJa(keyword="猫", frequency=2, relation="以上")("猫が遊ぶ。") is False
    assert ja.KeywordFrequencyJa(keyword="猫", frequency=2, relation="未満")("猫が遊ぶ。") is True


def test_nominal_endings_count_sentences_ending_on_a_noun():
    text = "美しい景色。静かな夜。走る。大切なこと。"  # 景色, 夜, こと are nouns; 走る is a verb
    assert ja.NominalEndingJa(count=3)(text) is True
    assert ja.NominalEndingJa(count=4)(text) is False
    assert ja.NominalEndingJa(count=1)("彼は「景色。」と言った。") is False  # quoted text is removed first


@pytest.mark.parametrize("sentence", ["大切なのは一つ。", "川の流れ。", "期待の高まり！", "深い味わい。", "静かな佇まい？"])
def test_nouns_ending_in_hiragana_are_nominal_endings(sentence):
    assert ja.NominalEndingJa(count=1)(sentence) is True


@pytest.mark.parametrize("sentence", ["川が流れる。", "期待が高まった。", "深く味わう。", "とても美しい。",
                                      "静かです。", "雨が降った！"])
def test_verbs_adjectives_and_copulas_are_not_nominal_endings(sentence):
    assert ja.NominalEndingJa(count=1)(sentence) is False


def test_nth_paragraph_starts_with_the_word():
    check = ja.NthParagraphFirstWordJa(num_paragraphs=2, nth_paragraph=2, first_word="分子")
    assert check("導入です。\n\n「分子は小さい。」") is True  # a leading 「 is skipped
    assert check("導入です。\n\n原子は小さい。") is False
    assert check("導入です。\n\n分子は小さい。\n\n結び。") is False  # three paragraphs


def test_sections_accept_ascii_and_full_width_numbers():
    assert ja.SectionsJa(section_spliter="章", num_sections=2)("第1章\n始まり\n第２章\n終わり") is True
    assert ja.SectionsJa(section_spliter="章", num_sections=2)("第1章\n始まり\n第2節\n終わり") is False


def test_bullets_and_numbered_lists():
    assert ja.BulletListJa(num_bullets=2)("・りんご\n・みかん") is True
    assert ja.BulletListJa(num_bullets=2)("- りんご\n- みかん") is False
    assert ja.NumberedListJa(num_items=2)("1. りんご\n2. みかん") is True
    assert ja.NumberedListJa(num_items=2)("1.りんご\n2.みかん") is False  # a space must follow the period


def test_highlights_need_text_inside():
    assert ja.HighlightsJa(num_highlights=2)("《重要》と《注意》です。") is True
    assert ja.HighlightsJa(num_highlights=2)("《》と《重要》です。") is False


def test_postscript_markers():
    assert ja.PostscriptJa(postscript_marker="追伸")("本文です。\n追伸：よろしく。") is True
    assert ja.PostscriptJa(postscript_marker="追伸")("本文です。") is False
    assert ja.PostscriptJa(postscript_marker="P.S.")("本文です。\np. s. またね。") is True
    assert ja.PostscriptJa(postscript_marker="P.P.S.")("本文です。\nP.P.S. またね。") is True
    assert ja.PostscriptJa(postscript_marker="P.P.S.")("本文です。\nPxPxSx またね。") is False  # literal dots


def test_repeat_prompt_is_case_sensitive():
    check = ja.RepeatPromptJa(prompt_to_repeat="ABCについて説明して。")
    assert check("ABCについて説明して。答えです。") is True
    assert check("abcについて説明して。答えです。") is False


def test_end_phrase_ignores_closing_brackets():
    check = ja.EndCheckerJa(end_phrase="他に質問はございますか。")
    assert check("説明は以上です。他に質問はございますか。」") is True
    assert check("他に質問はございますか。以上です。") is False


def test_title_quotation_and_constrained_response():
    assert ja.TitleJa()("『喜びの詩』\n本文") is True and ja.TitleJa()("<<喜びの詩>>\n本文") is False
    assert ja.QuotationJa()("「全部です。」") is True and ja.QuotationJa()("全部です。") is False
    assert ja.ConstrainedResponseJa()("答え：いいえ、違います。") is True
    assert ja.ConstrainedResponseJa()("いいえ。") is False


def test_kana_only_and_no_kana():
    assert js.NoHiraganaJa()("カタカナ漢字") is True and js.NoHiraganaJa()("ひらがな") is False
    assert js.NoKatakanaJa()("ひらがな") is True
    assert js.NoKatakanaJa()("カタカナ") is False and js.NoKatakanaJa()("ｶﾀｶﾅ") is False
    assert js.HiraganaOnlyJa()("らーめん、おいしい。") is True  # ー and punctuation are allowed
    assert js.HiraganaOnlyJa()("らーめんと漢字") is False and js.HiraganaOnlyJa()("abc") is False
    assert js.KatakanaOnlyJa()("カタカナ・テスト！") is True and js.KatakanaOnlyJa()("カタカナと") is False


def test_kanji_count_furigana_and_kansuuji():
    assert js.KanjiLimitJa(kanji_limit=3, relation="未満")("漢字です") is True  # 2 kanji
    assert js.KanjiLimitJa(kanji_limit=3, relation="未満")("漢字二つ") is False  # 3 kanji
    assert js.FuriganaJa()("漢字（かんじ）を書（か）く") is True
    assert js.FuriganaJa()("漢字を書く") is False and js.FuriganaJa()("漢字（カンジ）") is False
    assert js.KansuujiJa()("三つ") is True
    assert js.KansuujiJa()("3つ") is False and js.KansuujiJa()("３つ") is False


def test_no_comma_no_period_and_length_in_characters():
    assert js.NoCommaJa()("はいそうです。") is True and js.NoCommaJa()("はい、そうです") is False
    assert js.NoPeriodJa()("はい、そうです") is True and js.NoPeriodJa()("はい。") is False
    assert js.NumberOfLettersJa(num_letters=5, relation="以上")("あいうえお") is True
    assert js.NumberOfLettersJa(num_letters=5, relation="以上")("あいう") is False


def test_letter_frequency_counts_the_katakana_twin():
    assert js.LetterFrequencyJa(letter="か", let_frequency=3, let_relation="以上")("かカか") is True
    assert js.LetterFrequencyJa(letter="か", let_frequency=3, let_relation="以上")("かか") is False
    assert js.LetterFrequencyJa(letter="か", let_frequency=3, let_relation="未満")("かか") is True
    with pytest.raises(ValueError):
        js.LetterFrequencyJa(letter="a", let_frequency=3, let_relation="以上")


def test_sentence_endings_are_unified():
    check = js.SentenceEndingJa(ending="です")
    assert check("晴れです。雨です。") is True
    assert check("晴れです。雨だ。") is False
    assert check("彼は「行くよ。」と言ったそうです。") is True  # quoted text is removed first
    assert check("晴れです。\n") is False  # as upstream, the trailing newline is an unfinished sentence
