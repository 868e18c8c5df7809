"""Word spans: the Python mirror of the standardiser agrees with the model's own tokens,
and each span points at the characters the user typed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.explanations.word_spans import NEGATION, PLAIN, Word, standardized_tokens, words

TRICKY = [
    "Great film!",
    "Loved it.<br /><br />Brilliant, moving and fun!",
    "<BR/>Shouting<Br >at<br\t/>the<br\v/>screen",  # RE2's \s has no \v: that one stays text
    "Don't, can't, WON'T; isn’t (curly) and n't_alone xn'ty",
    "café naïve Ｆｕｌｌ ｗｉｄｔｈ 日本語 映画 😀👍 Ω",
    "\u212aelvin sign, İstanbul, ß and ﬁne ligatures",  # non-ASCII never lowercases to ASCII
    "tabs\tand\nnew\r\nlines\fand\vvertical\u00a0nbsp\u2003em",
    "well-made, so-so... 10/10 (really) 'quoted' \"double\" under_score $5.99",
    "!!! ??? -- … — <3 :-) ",
    "a\u0301ccent combining and zero\u200bwidth and NUL\x00byte",
    "",
]


def tf_standardizer(name: str):
    """The model's registered standardiser for `name`."""
    import tensorflow as tf

    from training import layers

    if name == PLAIN:
        return layers.standardize_review
    if hasattr(layers, "standardize_review_negation"):
        return layers.standardize_review_negation

    def standardize_review_negation(text):  # the "reader" preset's, until it lands on main
        text = tf.strings.lower(text)
        text = tf.strings.regex_replace(text, r"<br\s*/?>", " ")
        text = tf.strings.regex_replace(text, r"n't\b", " not")
        return tf.strings.regex_replace(text, r"[^\w\s]", " ")

    return standardize_review_negation


def vectorizer_tokens(texts: list[str], standardizer: str) -> list[list[str]]:
    """What TextVectorization's whitespace split makes of each text after the standardiser."""
    import tensorflow as tf

    split = tf.strings.split(tf_standardizer(standardizer)(tf.constant(texts)))
    return [[t.decode() for t in row] for row in split.to_list()]


@pytest.mark.parametrize("standardizer", [PLAIN, NEGATION])
def test_tokens_match_the_models_standardiser_on_tricky_text(standardizer):
    expected = vectorizer_tokens(TRICKY, standardizer)
    for text, tokens in zip(TRICKY, expected, strict=True):
        assert [w.token for w in standardized_tokens(text, standardizer)] == tokens, text


# Pieces the patterns care about, so random text hits markup and contractions often.
_TRICKY_PIECES = st.sampled_from(
    [
        "<br",
        "<BR",
        "/>",
        ">",
        " ",
        "\t",
        "\v",
        "\n",
        "n't",
        "N'T",
        "'",
        "_",
        "a",
        "Z",
        "9",
        "é",
        "\u212a",
        "😀",
        "\u00a0",
        "\x00",
        "-",
        "!",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.text(max_size=60) | st.lists(_TRICKY_PIECES, max_size=30).map("".join),
        min_size=1,
        max_size=8,
    )
)
def test_tokens_match_the_models_standardiser_on_any_text(texts):
    for standardizer in (PLAIN, NEGATION):
        expected = vectorizer_tokens(texts, standardizer)
        got = [[w.token for w in standardized_tokens(t, standardizer)] for t in texts]
        assert got == expected


def test_spans_point_at_the_typed_characters():
    text = "Loved it.<br /><br />BRILLIANT, moving… 日本語 and fun!"
    found = [(text[w.start : w.end], w.token) for w in words(text)]
    assert found == [
        ("Loved", "loved"),
        ("it", "it"),
        ("BRILLIANT", "brilliant"),
        ("moving", "moving"),
        ("日本語", None),
        ("and", "and"),
        ("fun", "fun"),
    ]


def test_markup_is_not_a_word_and_punctuation_alone_is_a_removed_one():
    text = "<br /> !!! Good <br/>-- bad"
    assert [(text[w.start : w.end], w.token) for w in words(text)] == [
        ("!!!", None),
        ("Good", "good"),
        ("--", None),
        ("bad", "bad"),
    ]


def test_negation_splits_a_contraction_into_two_spans():
    text = "It DOESN'T work, isn't it? can't"
    plain = [(text[w.start : w.end], w.token) for w in words(text, PLAIN)]
    negation = [(text[w.start : w.end], w.token) for w in words(text, NEGATION)]
    assert plain[1:3] == [("DOESN", "doesn"), ("T", "t")]
    assert negation == [
        ("It", "it"),
        ("DOES", "does"),
        ("N'T", "not"),
        ("work", "work"),
        ("is", "is"),
        ("n't", "not"),
        ("it", "it"),
        ("ca", "ca"),
        ("n't", "not"),
    ]


def test_offsets_count_code_points_so_emoji_and_combining_marks_do_not_shift_them():
    text = "😀👍 e\u0301 good"
    # The combining accent is stripped but sticks to its "e": no word of its own.
    assert words(text) == [Word(0, 2, None), Word(3, 4, "e"), Word(6, 10, "good")]


def test_an_over_long_review_keeps_every_span():
    text = " ".join(f"w{i}!" for i in range(1200))
    found = words(text)
    assert len(found) == 1200
    assert all(text[w.start : w.end] == w.token for w in found)
    assert found[-1].token == "w1199"


def test_an_unknown_standardiser_is_named():
    with pytest.raises(ValueError, match="'shouting'"):
        words("text", "shouting")
