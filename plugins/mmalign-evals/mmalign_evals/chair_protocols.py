"""Object HalBench protocols: which CHAIR script's rules and denominators a result reproduces.

``chair-original`` (default): Rohrbach et al. 2018, ``utils/chair.py`` -- the original synonym table, pattern's
singularizer, the script's fixed list of two-word phrases; CHAIR_s over all descriptions.

``rlhf-v``: RLHF-V / RLAIF-V ``eval/eval_gpt_obj_halbench.py`` (rule path) -- the refined synonym table, every
two-word entry of it as a phrase, WordNet-style lemmas; CHAIR_s over the descriptions that name at least one
object (the script's ``CHAIRs_refine``, the "Response Hall" its summary prints).

Both count CHAIR_i over every mention and recall as RLHF-V's ``obj_rec``.
"""
from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

from .chair_rules import ORIGINAL_PHRASES, ChairRules, parse_synonym_lines, phrase_map
from .chair_text import WordNetStyleLemmatizer, data_text, pattern_singularizer


class ChairProtocol:
    """A CHAIR protocol: its rules and the CHAIR_s denominator."""

    name: ClassVar[str] = ""
    source: ClassVar[str] = ""
    synonyms_file: ClassVar[str] = ""

    def __init__(self) -> None:
        self.rules = self.build_rules()

    def build_rules(self) -> ChairRules:  # pragma: no cover - abstract
        raise NotImplementedError

    def chair_s(self, hallucinating: int, descriptions: int, naming_objects: int) -> float:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "source": self.source, "synonyms": f"mmalign_evals/data/{self.synonyms_file}",
                "word_reduction": self.rules.reducer.name, "chair_s_denominator": self.chair_s_denominator}

    chair_s_denominator: ClassVar[str] = ""


class ChairOriginal(ChairProtocol):
    name = "chair-original"
    source = "Rohrbach, Hendricks et al. 2018, github.com/LisaAnne/Hallucination utils/chair.py"
    synonyms_file = "chair_synonyms.txt"
    chair_s_denominator = "all descriptions"

    def build_rules(self) -> ChairRules:
        synonyms = parse_synonym_lines(data_text(self.synonyms_file), strip_entries=False)
        return ChairRules(synonyms, phrase_map(ORIGINAL_PHRASES), pattern_singularizer())

    def chair_s(self, hallucinating: int, descriptions: int, naming_objects: int) -> float:
        return hallucinating / descriptions if descriptions else 0.0


class RlhfV(ChairProtocol):
    name = "rlhf-v"
    source = "RLHF-V / RLAIF-V eval/eval_gpt_obj_halbench.py (rule-based path; CHAIRs_refine)"
    synonyms_file = "rlhfv_synonyms_refine.txt"
    chair_s_denominator = "descriptions naming at least one object"

    def build_rules(self) -> ChairRules:
        synonyms = parse_synonym_lines(data_text(self.synonyms_file), strip_entries=True)
        phrases = [w for w in synonyms if len(w.split(" ")) >= 2] + ["home plate", "train track"]
        joined = phrase_map(phrases)
        vocabulary = {part for entry in [*synonyms, *joined] for part in entry.split()} | set(synonyms)
        return ChairRules(synonyms, joined, WordNetStyleLemmatizer(vocabulary))

    def chair_s(self, hallucinating: int, descriptions: int, naming_objects: int) -> float:
        return hallucinating / naming_objects if naming_objects else 0.0


CHAIR_PROTOCOLS: dict[str, type[ChairProtocol]] = {p.name: p for p in (ChairOriginal, RlhfV)}


@lru_cache(maxsize=None)
def chair_protocol(name: str) -> ChairProtocol:
    """The protocol named ``name`` (``KeyError`` listing the known ones otherwise)."""
    if name not in CHAIR_PROTOCOLS:
        raise KeyError(f"unknown Object HalBench protocol {name!r}; known: {', '.join(CHAIR_PROTOCOLS)}")
    return CHAIR_PROTOCOLS[name]()


__all__ = ["ChairProtocol", "ChairOriginal", "RlhfV", "CHAIR_PROTOCOLS", "chair_protocol"]
