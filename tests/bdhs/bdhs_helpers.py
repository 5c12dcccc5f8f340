"""Helpers of the bdhs tests (a module of its own: several test folders have a conftest)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


class ScriptedEmbedder:
    """A stub sentence embedder: ``similarity(text)`` is the cosine of ``text`` to every chosen answer.

    Texts in ``chosen`` embed to the unit vector e0; any other text to a unit vector whose dot product
    with e0 is ``similarity(text)``.
    """

    def __init__(self, similarity: Callable[[str], float], chosen: Sequence[str] = ()):
        self.similarity = similarity
        self.chosen = set(chosen)
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), 2))
        for i, t in enumerate(texts):
            s = 1.0 if t in self.chosen else float(np.clip(self.similarity(t), -1, 1))
            out[i] = [s, np.sqrt(1 - s * s)]
        return out

    def describe(self) -> dict:
        return {"embedder": "scripted"}


def shapes_image(colour: tuple[int, int, int], key: str, size: int = 48):
    from PIL import Image, ImageDraw

    from mmalign_core.types import ImageRef

    im = Image.new("RGB", (size, size), (128, 128, 128))
    ImageDraw.Draw(im).ellipse((8, 8, size - 8, size - 8), fill=colour)
    return ImageRef(im, key=key)
