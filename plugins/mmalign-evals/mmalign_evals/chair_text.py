"""Text processing of the CHAIR scripts: word tokens and the reduction of plurals to a base form.

Both reference scripts lower-case a description and split it with NLTK's ``word_tokenize`` (Punkt sentences,
then the improved Treebank rules). :func:`treebank_tokens` follows those rules where they matter for object
words:

* a description splits into sentences after ``.``, ``?`` or ``!`` followed by white space, and the period that
  ends each sentence (before any closing brackets or quotes) is a token of its own -- ``"a dog. a cat"`` gives
  ``dog`` and ``cat``, never ``dog.``; an inner period (``3.5``, ``e.g``) stays in its word;
* ``, ; : ? ! @ # $ % & * ( ) [ ] { } < > "`` and runs of periods are tokens of their own, except a comma or
  colon followed by a digit (``1,000``, ``10:30``);
* a possessive or clitic is a token of its own: ``dog's`` -> ``dog`` ``'s``, ``dogs'`` -> ``dogs`` ``'``,
  ``isn't`` -> ``is`` ``n't``; ``cannot`` -> ``can`` ``not``;
* hyphenated words and slashes stay one token (``horse-drawn``, ``dog/cat``).

Not modelled: Punkt's learned abbreviations (a period after ``dr`` or ``st`` ends a sentence here) and a few
rare contractions (``gonna``, ``'tis``); none is a COCO object word.

:class:`PatternSingularizer` is pattern.en's ``singularize`` (the original CHAIR script) driven by the rule
data in ``data/pattern_singular.json``; :class:`WordNetStyleLemmatizer` approximates NLTK's WordNet lemmatizer
(RLHF-V's script) for the words of a synonym table.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Iterable, Protocol

_ALWAYS_APART = re.compile(r"([;@#$%&?!*()\[\]{}<>\"«»“”‘’„`]|\.{2,}|--)")
_COMMA_COLON = re.compile(r"([,:])(?=\D|$)")
_SENTENCE_END = re.compile(r"(?<=[^.])\.(?=[\])}>\"'«»“”‘’]*(?:\s|$))")
_CLITIC = re.compile(r"(?<=[^'\s])('s|'m|'d|'ll|'re|'ve|n't|')(?=\s|$)")
_CANNOT = re.compile(r"\b(can)(not)\b")


def treebank_tokens(text: str) -> list[str]:
    """The tokens NLTK's ``word_tokenize`` gives for lower-cased ``text`` (see the module docstring)."""
    text = text.lower()
    text = _SENTENCE_END.sub(" . ", text)
    text = _ALWAYS_APART.sub(r" \1 ", text)
    text = _COMMA_COLON.sub(r" \1 ", text)
    text = _CLITIC.sub(r" \1", text)
    text = _CANNOT.sub(r"\1 \2", text)
    return text.split()


class WordReducer(Protocol):
    """Maps one token to the form looked up in a synonym table."""

    name: str

    def __call__(self, word: str) -> str: ...


def data_text(name: str) -> str:
    """A file of ``mmalign_evals/data`` (package data)."""
    return resources.files("mmalign_evals").joinpath("data", name).read_text(encoding="utf-8")


class PatternSingularizer:
    """pattern.en 3.6 ``singularize`` for nouns, read from ``data/pattern_singular.json``.

    The checks, in order: a hyphenated compound whose second part is a preposition singularizes its first part
    (``mothers-in-law``); a trailing apostrophe becomes ``'s``; a word that is the ending of an uninflected or
    uncountable word stays as it is (``sheep``, ``luggage``; also ``s`` or ``ies``); a plural of an ``-ie`` word is
    returned unchanged (``doggies``); an irregular ending is replaced (``people`` -> ``person``, ``women`` ->
    ``woman``); else the first matching rule rewrites the word, the last rule dropping a final ``s`` -- so
    ``bus`` becomes ``bu`` and ``glass`` ``glas``, as in the reference.
    """

    name = "pattern-3.6-singularize"

    def __init__(self) -> None:
        data = json.loads(data_text("pattern_singular.json"))
        self.prepositions = frozenset(data["compound_prepositions"])
        self.unchanged = tuple(data["uninflected"]) + tuple(data["uncountable"])
        self.ie_plurals = tuple(w + "s" for w in data["ie_words"])
        self.irregular = tuple((ending, base) for ending, base in data["irregular"])
        self.rules = tuple((re.compile(pattern), replacement) for pattern, replacement in data["rules"])

    def __call__(self, word: str) -> str:
        parts = word.split("-")
        if len(parts) > 1 and parts[1] in self.prepositions:
            return "-".join([self(parts[0]), *parts[1:]])
        if word.endswith("'"):
            return self(word[:-1]) + "'s"
        lower = word.lower()
        if any(entry.endswith(lower) for entry in self.unchanged):
            return word
        if any(lower.endswith(plural) for plural in self.ie_plurals):
            return lower
        for ending, base in self.irregular:
            if lower.endswith(ending):
                return re.sub("(?i)" + ending + "$", base, word)
        for pattern, replacement in self.rules:
            if pattern.search(word):
                return pattern.sub(replacement, word)
        return word


#: Irregular plurals among the table words (WordNet's noun exception list, for these words only).
_IRREGULAR_PLURALS = {
    "men": "man", "women": "woman", "children": "child", "mice": "mouse", "geese": "goose", "teeth": "tooth",
    "feet": "foot", "oxen": "ox", "knives": "knife", "calves": "calf", "policemen": "policeman",
    "gentlemen": "gentleman", "servicemen": "serviceman", "wives": "wife", "loaves": "loaf", "leaves": "leaf",
    "shelves": "shelf", "wolves": "wolf", "halves": "half",
}
#: WordNet's noun detachment rules (morphy): ending -> replacement.
_NOUN_SUFFIXES = (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y"))


class WordNetStyleLemmatizer:
    """NLTK's ``WordNetLemmatizer().lemmatize(word)`` (noun) restricted to a known vocabulary.

    WordNet's lemmatizer keeps the shortest of the word itself and the forms its detachment rules and exception
    list give, counting only forms that are WordNet nouns. Here "WordNet noun" is approximated by "a word of the
    synonym table or of its two-word phrases", which gives the reference's reading for every table word and
    its regular or listed irregular plural; other words stay as they are.
    """

    name = "wordnet-style-lemmatize"

    def __init__(self, vocabulary: Iterable[str]):
        self.vocabulary = frozenset(vocabulary)

    def __call__(self, word: str) -> str:
        forms = [word] if word in self.vocabulary else []
        if word in _IRREGULAR_PLURALS:
            forms.append(_IRREGULAR_PLURALS[word])
        for ending, replacement in _NOUN_SUFFIXES:
            if word.endswith(ending):
                candidate = word[: len(word) - len(ending)] + replacement
                if candidate in self.vocabulary:
                    forms.append(candidate)
        return min(forms, key=len) if forms else word


@lru_cache(maxsize=1)
def pattern_singularizer() -> PatternSingularizer:
    return PatternSingularizer()


__all__ = ["treebank_tokens", "WordReducer", "PatternSingularizer", "WordNetStyleLemmatizer", "pattern_singularizer", "data_text"]
