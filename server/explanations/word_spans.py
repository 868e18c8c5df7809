"""A review's words and where each sits in the text as typed, mirroring the model's standardiser.

Standard library only. The model standardises text with TensorFlow's RE2 regexes
(training/layers.py): ASCII-only lowercasing, `<br />` to a space, (for the
"negation" standardiser) "n't" to " not", every character that is neither an
RE2 word character nor RE2 whitespace to a space; then it splits on whitespace.
This module runs the same steps in Python while remembering, for each character
it produces, the characters of the original text it came from, so each token
gets a span (start, end) in the original: offsets in Unicode code points, end
exclusive, as Python slices strings.

RE2 differs from Python's `re`: its `\\w` is [0-9A-Za-z_] and its `\\s` is
[\\t\\n\\f\\r ] (no \\v, nothing beyond ASCII), so the classes are spelt out here;
`re.ASCII` gives `\\b` RE2's meaning. tests/test_word_spans.py checks that the
tokens agree with the model's own TextVectorization on tricky and random text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PLAIN = "plain"
NEGATION = "negation"
STANDARDIZERS = (PLAIN, NEGATION)

# The patterns of training/layers.py, with RE2's character classes spelt out.
_HTML_BREAK = re.compile(r"<br[\t\n\f\r ]*/?>")
_NOT_CONTRACTION = re.compile(r"n't\b", re.ASCII)
# Standardisation turns everything else into spaces, so tokens are runs of these.
_TOKEN = re.compile(r"[0-9A-Za-z_]+")
_ASCII_UPPER = {chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)}


@dataclass(frozen=True)
class Word:
    """One word of a review: `text[start:end]` in the original, and the token it became.

    `token` is None for a word that standardisation removed whole (punctuation,
    emoji, words in other scripts).
    """

    start: int
    end: int
    token: str | None


@dataclass
class _Traced:
    """A string in the making, each character with the original span it came from."""

    chars: list[str]
    starts: list[int]
    ends: list[int]

    @property
    def text(self) -> str:
        return "".join(self.chars)

    def substitute(self, pattern: re.Pattern, replacement: str) -> _Traced:
        """Replaces every match; each replacement character comes from the whole match."""
        text = self.text
        chars: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        done = 0
        for match in pattern.finditer(text):
            first, last = match.start(), match.end()
            chars += self.chars[done:first]
            starts += self.starts[done:first]
            ends += self.ends[done:first]
            # A match is never empty here (every pattern consumes characters).
            chars += list(replacement)
            starts += [self.starts[first]] * len(replacement)
            ends += [self.ends[last - 1]] * len(replacement)
            done = last
        chars += self.chars[done:]
        starts += self.starts[done:]
        ends += self.ends[done:]
        return _Traced(chars, starts, ends)


def standardized_tokens(text: str, standardizer: str = PLAIN) -> list[Word]:
    """The tokens the model's vectoriser makes of `text`, in order, each with its span."""
    if standardizer not in STANDARDIZERS:
        raise ValueError(f"standardizer must be one of {STANDARDIZERS}, not {standardizer!r}")
    # tf.strings.lower lowercases ASCII letters only (the Kelvin sign stays, then goes).
    lowered = [_ASCII_UPPER.get(c, c) for c in text]
    traced = _Traced(lowered, list(range(len(text))), list(range(1, len(text) + 1)))
    traced = traced.substitute(_HTML_BREAK, " ")
    if standardizer == NEGATION:
        traced = traced.substitute(_NOT_CONTRACTION, " not")
    return [
        Word(traced.starts[m.start()], traced.ends[m.end() - 1], m.group())
        for m in _TOKEN.finditer(traced.text)
    ]


def words(text: str, standardizer: str = PLAIN) -> list[Word]:
    """Every word of `text` in order: its tokens, and the words standardisation removed.

    A removed word is a stretch of non-whitespace (between spaces or `<br />`
    breaks) that yields no token, such as "!!!", "—" or "日本語". Punctuation
    stuck to a token ("great!") is not a word of its own.
    """
    tokens = standardized_tokens(text, standardizer)
    removed = [
        Word(start, end, None)
        for start, end in _chunks(text)
        if not any(start <= t.start < end for t in tokens)
    ]
    return sorted(tokens + removed, key=lambda w: w.start)


def _chunks(text: str) -> list[tuple[int, int]]:
    """Spans of the runs of non-whitespace, `<br />` breaks counting as whitespace."""
    lowered = "".join(_ASCII_UPPER.get(c, c) for c in text)
    is_gap = [c.isspace() for c in text]
    for match in _HTML_BREAK.finditer(lowered):
        is_gap[match.start() : match.end()] = [True] * (match.end() - match.start())
    spans, start = [], None
    for index, gap in enumerate(is_gap):
        if not gap and start is None:
            start = index
        elif gap and start is not None:
            spans.append((start, index))
            start = None
    if start is not None:
        spans.append((start, len(text)))
    return spans
