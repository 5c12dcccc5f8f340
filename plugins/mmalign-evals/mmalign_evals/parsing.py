"""Parsers of judge replies (documented rules; every one returns ``None`` when it cannot read the text).

POPE answers are read by :mod:`mmalign_evals.pope_protocols`, MMHal ratings by :mod:`mmalign_evals.mmhal_protocols`."""
from __future__ import annotations

import re
from typing import Optional

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def parse_rating(text: str) -> Optional[int]:
    """An MMHal rating as the ``tolerant`` protocol reads it (see :mod:`mmalign_evals.mmhal_protocols`)."""
    from .mmhal_protocols import TolerantRating

    return TolerantRating().read(text).rating


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


__all__ = ["parse_rating", "parse_pair_scores", "parse_correctness"]
