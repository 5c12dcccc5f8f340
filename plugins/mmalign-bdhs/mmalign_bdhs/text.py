"""Sentence handling of reference-guided generation (no torch).

* :func:`split_sentences` cuts an answer after ``.``, ``!`` or ``?`` followed by whitespace, and at
  newlines, keeping every separator so the pieces rejoin to the original text; list markers such as
  ``1.`` or ``a)`` never end a sentence.
* :func:`cut_sentence` splits a sentence at a word boundary: the head keeps the first ``j`` words.
* :func:`flip_yes_no` swaps a leading Yes/yes/No/no (case kept).
* :func:`plan_sentence` draws, for one sentence, the flip and the split point with a numpy generator.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

#: A sentence boundary: whitespace after terminal punctuation, or a run of newlines (with spaces around).
_BOUNDARY = re.compile(r"(?<=[.!?])[ \t]+(?=\S)|[ \t]*\n[\s]*")
#: A piece that is only a list marker ("1.", "12)", "a.", "iv.") does not end a sentence.
_LIST_MARKER = re.compile(r"(?:\d{1,3}|[A-Za-z]|[ivxIVX]{1,4})[.)]")
#: A leading yes/no word (the paper's ``^[\s]*(Yes|yes|No|no)``, with a word boundary so "Nothing" is not a "No").
YES_NO = re.compile(r"^(\s*)(Yes|yes|No|no)\b")
_SWAP = {"Yes": "No", "yes": "no", "No": "Yes", "no": "yes"}


def split_sentences(text: str) -> list[tuple[str, str]]:
    """``[(sentence, separator_after), ...]``; ``"".join(s + sep ...) == text`` (leading whitespace stays in the first)."""
    pieces: list[tuple[str, str]] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        sentence = text[start : m.start()]
        if not sentence.strip():
            continue
        last = sentence.split()[-1] if "\n" not in m.group() else ""
        if last and _LIST_MARKER.fullmatch(last) and len(sentence.split()) == 1:
            continue  # "1. The cat." -- the marker starts the sentence, it does not end one
        pieces.append((sentence, m.group()))
        start = m.end()
    tail = text[start:]
    if tail or not pieces:
        pieces.append((tail, ""))
    elif pieces:  # text ended in whitespace after the last boundary
        s, sep = pieces[-1]
        pieces[-1] = (s, sep)
    return pieces


def join_sentences(pieces: Sequence[tuple[str, str]]) -> str:
    return "".join(s + sep for s, sep in pieces)


def word_spans(sentence: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", sentence)]


def cut_sentence(sentence: str, n_head_words: int) -> str:
    """The head of ``sentence``: its first ``n_head_words`` words with their original spacing (no trailing space)."""
    spans = word_spans(sentence)
    if n_head_words <= 0 or not spans:
        return sentence[: spans[0][0]] if spans and n_head_words <= 0 else ""
    n = min(n_head_words, len(spans))
    return sentence[: spans[n - 1][1]]


def flip_yes_no(sentence: str) -> str:
    """Swap a leading Yes<->No (keeping case); other sentences are returned unchanged."""
    m = YES_NO.match(sentence)
    if not m:
        return sentence
    return sentence[: m.start(2)] + _SWAP[m.group(2)] + sentence[m.end(2) :]


@dataclass(frozen=True)
class SentencePlan:
    """What to do with one sentence of the chosen answer in one iteration."""

    original: str
    flipped: bool
    head: str  # kept text (after the flip); the model continues from here
    complete: bool  # the head is the whole sentence: nothing to generate


def plan_sentence(sentence: str, rng: Any, flip_probability: float, min_head_words: int = 0) -> SentencePlan:
    """Flip a leading yes/no with probability ``flip_probability`` (xi >= 1 - p), then draw the split point.

    Split points are uniform over word boundaries ``{0 .. n_words - 1}`` (``j`` words kept, so at least the
    last word is regenerated). A flipped sentence keeps at least its first word, the flipped one
    (``{1 .. n_words - 1}``; a one-word sentence such as "Yes." is then kept whole): otherwise the
    regeneration would overwrite the flip. ``min_head_words`` > 0 (an ablation, not the paper's setting)
    keeps at least that many words, at most ``n_words - 1``: ``{min(m, n - 1) .. n_words - 1}``.
    """
    body = sentence.strip()
    flipped = False
    if YES_NO.match(body) and flip_probability > 0 and rng.random() >= 1.0 - flip_probability:
        body = flip_yes_no(body)
        flipped = True
    n = len(word_spans(body))
    if n == 0:
        return SentencePlan(sentence, flipped, "", False)
    if flipped:
        if n == 1:
            return SentencePlan(sentence, True, body, True)
        j = int(rng.integers(max(1, min(min_head_words, n - 1)), n))
    else:
        j = int(rng.integers(min(min_head_words, n - 1), n))
    return SentencePlan(sentence, flipped, cut_sentence(body, j), False)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to and including the first stop string (unchanged when none occurs)."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i >= 0:
            cut = min(cut, i + len(s))
    return text[:cut]
