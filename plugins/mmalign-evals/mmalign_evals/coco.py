"""The 80 COCO object classes and object extraction for CHAIR and object recall, by a named protocol.

The synonym tables are the reference scripts' own files (``mmalign_evals/data``, sources in its README); the
rules that read them are in :mod:`mmalign_evals.chair_rules` and the protocols in
:mod:`mmalign_evals.chair_protocols`. As in the references, negation is not parsed: "there is no dog"
mentions a dog.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from .chair_protocols import chair_protocol
from .chair_text import data_text

DEFAULT_PROTOCOL = "chair-original"

#: The 80 COCO categories, in the order of the original synonym table.
COCO_CATEGORIES: tuple[str, ...] = tuple(
    line.strip().split(", ")[0] for line in data_text("chair_synonyms.txt").splitlines() if line.strip()
)


@dataclass(frozen=True)
class ObjectMention:
    """One object mention: the word as looked up (reduced, phrases joined), its COCO category and position."""

    words: str
    category: str
    index: int


def extract_mentions(text: str, protocol: str = DEFAULT_PROTOCOL) -> list[ObjectMention]:
    """Every COCO object mention in ``text``, left to right, as ``protocol`` counts them."""
    return [ObjectMention(m.word, m.category, m.index) for m in chair_protocol(protocol).rules.mentions(text)]


def extract_objects(text: str, protocol: str = DEFAULT_PROTOCOL) -> set[str]:
    """The set of COCO categories mentioned in ``text``."""
    return {m.category for m in extract_mentions(text, protocol)}


def objects_from_list(reply: str, protocol: str = DEFAULT_PROTOCOL) -> list[ObjectMention]:
    """Mentions in a judge's comma-separated object list (each item read by the protocol's rules; "none" is empty)."""
    out: list[ObjectMention] = []
    for k, item in enumerate(re.split(r"[,;\n]", reply)):
        item = item.strip().strip(".").strip()
        if not item or item.lower() in ("none", "nothing", "n/a"):
            continue
        for m in extract_mentions(item, protocol):
            out.append(ObjectMention(m.words, m.category, k))
    return out


def category_names(categories: Iterable[dict]) -> dict[int, str]:
    """COCO ``categories`` records -> category id to (lower-case) name."""
    return {int(c["id"]): str(c["name"]).strip().lower() for c in categories}


def caption_objects(captions: Sequence[str], protocol: str = DEFAULT_PROTOCOL) -> set[str]:
    """Objects named in reference captions (part of the ground truth in the CHAIR and RLHF-V scripts)."""
    found: set[str] = set()
    for caption in captions:
        found |= extract_objects(caption, protocol)
    return found


__all__ = [
    "COCO_CATEGORIES",
    "DEFAULT_PROTOCOL",
    "ObjectMention",
    "extract_mentions",
    "extract_objects",
    "objects_from_list",
    "caption_objects",
    "category_names",
]
