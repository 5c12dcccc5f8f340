"""Parsers of model answers and judge replies (documented rules; every one returns ``None`` when it cannot read the text)."""
from __future__ import annotations

import re
from typing import Optional

_YES_NO = re.compile(r"\b(yes|yeah|yep|no|nope|not)\b")
_RATING = re.compile(r"rating\s*[:=]?\s*\**\s*\[?\s*([0-6])(?![\d.])", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def parse_pope_llava(text: str) -> bool:
    """LLaVA's POPE rule (``eval_pope.py``), case-insensitive: keep the text before the first period, drop
    commas, split on whitespace; the answer is "no" when a word is ``no`` or ``not``, "yes" otherwise.

    Every answer gets a label: ``"Yes, there is a dog."`` -> yes, ``"No."`` -> no,
    ``"There is not a dog."`` -> no, ``"I cannot tell."`` -> yes.
    """
    first = text.split(".")[0] if "." in text else text
    words = first.replace(",", "").lower().split()
    return not ("no" in words or "not" in words)


def parse_yes_no(text: str) -> Optional[bool]:
    """The first of the words yes/yeah/yep (True) or no/nope/not (False; "n't" counts as "not") decides;
    ``None`` when there is none."""
    m = _YES_NO.search(text.lower().replace("n't", " not"))
    if m is None:
        return None
    return m.group(1) in ("yes", "yeah", "yep")


def parse_rating(text: str) -> Optional[int]:
    """An MMHal rating: the last ``Rating: N`` (N in 0..6, case-insensitive, markdown stars allowed) in the reply."""
    found = _RATING.findall(text)
    return int(found[-1]) if found else None


def parse_pair_scores(text: str) -> Optional[tuple[float, float]]:
    """LLaVA-Bench judge reply: the first non-empty line holds the two scores (reference, answer), separated by
    a space or a comma. ``None`` unless that line holds exactly two numbers."""
    for line in text.strip().splitlines():
        if not line.strip():
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 2:
            return None
        try:
            return float(parts[0]), float(parts[1])
        except ValueError:
            return None
    return None


def parse_correctness(text: str) -> Optional[float]:
    """MM-Vet grade: the reply's first token as a number in [0, 1]; failing that, the first such number in the reply."""
    stripped = text.strip()
    if stripped:
        token = stripped.split()[0].strip("|*`'\".,;:")
        try:
            value = float(token)
        except ValueError:
            value = None
        if value is not None and 0.0 <= value <= 1.0:
            return value
    for match in _NUMBER.findall(text):
        value = float(match)
        if 0.0 <= value <= 1.0:
            return value
    return None


__all__ = ["parse_pope_llava", "parse_yes_no", "parse_rating", "parse_pair_scores", "parse_correctness"]
