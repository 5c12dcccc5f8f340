"""CHAIR's rule-based object extraction, configured by a synonym table and a word reducer.

Both reference scripts (Rohrbach et al.'s ``utils/chair.py`` and RLHF-V's ``eval_gpt_obj_halbench.py``) read a
description the same way:

1. tokens (:func:`~mmalign_evals.chair_text.treebank_tokens`), each reduced to a base form (a singularizer or a
   lemmatizer);
2. left to right, a pair of neighbouring tokens that is a listed two-word phrase becomes one word, which may be
   renamed (``baby dog`` -> ``dog``, ``toilet seat`` -> ``toilet``, ``passenger train`` -> ``train``); so a
   phrase is counted once (``double decker bus`` names one bus) and a phrase of no object (``home plate``,
   ``train track``) hides its words;
3. when the words hold both ``toilet`` and ``seat``, every ``seat`` is dropped ("the seat of the toilet" is
   not a chair);
4. every remaining word that is a table entry is a mention of that entry's category (first word of its line).

Only pairs are looked at, so a three-word entry (``stove top oven``) never matches as a phrase.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .chair_text import WordReducer, treebank_tokens

ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
VEHICLE_WORDS = ("jet", "train")
#: The original script's fixed list of two-word phrases kept as one word.
ORIGINAL_PHRASES = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "stove top oven", "home plate", "train track",
)


@dataclass(frozen=True)
class Mention:
    """One object mention: the word as looked up (after reduction and phrase joining) and its COCO category."""

    word: str
    category: str
    index: int


def parse_synonym_lines(text: str, strip_entries: bool) -> dict[str, str]:
    """Synonym-table text -> entry -> category (a later line wins for an entry listed twice, as in the scripts).

    Lines are stripped and split on ``", "``; the original script keeps an entry's inner spaces
    (``strip_entries=False``: ``" motor bike"`` stays a key no token matches), RLHF-V's strips each entry.
    """
    table: dict[str, str] = {}
    for line in text.splitlines():
        entries = line.strip().split(", ")
        if strip_entries:
            entries = [e.strip() for e in entries]
        if not entries or not entries[0]:
            continue
        for entry in entries:
            table[entry] = entries[0]
    return table


def phrase_map(phrases: Sequence[str]) -> dict[str, str]:
    """Two-word phrase -> the word it becomes (the CHAIR renames added after ``phrases``)."""
    out = {p: p for p in phrases}
    for animal in ANIMAL_WORDS:
        out[f"baby {animal}"] = animal
        out[f"adult {animal}"] = animal
    for vehicle in VEHICLE_WORDS:
        out[f"passenger {vehicle}"] = vehicle
    out["bow tie"] = "tie"
    out["toilet seat"] = "toilet"
    out["wine glas"] = "wine glass"
    return out


class ChairRules:
    """A synonym table, a word reducer and the two-word phrases: ``mentions(text)`` as the CHAIR scripts count them."""

    def __init__(self, synonyms: dict[str, str], phrases: dict[str, str], reducer: WordReducer):
        self.synonyms = synonyms
        self.phrases = phrases
        self.reducer = reducer

    def words(self, text: str) -> list[str]:
        """Step 1-3: reduced tokens with the phrases joined and a toilet's seat dropped."""
        reduced = [self.reducer(t) for t in treebank_tokens(text)]
        return self.join_phrases(reduced)

    def join_phrases(self, reduced: Sequence[str]) -> list[str]:
        joined: list[str] = []
        i = 0
        while i < len(reduced):
            pair = " ".join(reduced[i : i + 2])
            if i + 1 < len(reduced) and pair in self.phrases:
                joined.append(self.phrases[pair])
                i += 2
            else:
                joined.append(reduced[i])
                i += 1
        if "toilet" in joined and "seat" in joined:
            joined = [w for w in joined if w != "seat"]
        return joined

    def mentions(self, text: str) -> list[Mention]:
        return self.lookup(self.words(text))

    def lookup(self, words: Sequence[str]) -> list[Mention]:
        """Step 4 on already joined words."""
        return [Mention(w, self.synonyms[w], i) for i, w in enumerate(words) if w in self.synonyms]

    def categories(self, text: str) -> set[str]:
        return {m.category for m in self.mentions(text)}


__all__ = ["ChairRules", "Mention", "parse_synonym_lines", "phrase_map", "ORIGINAL_PHRASES", "ANIMAL_WORDS", "VEHICLE_WORDS"]
