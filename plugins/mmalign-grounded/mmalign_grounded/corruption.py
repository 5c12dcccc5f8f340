"""The second image condition: crop, mask or diffusion noise, a pure function of (seed, pair id, image index).

Every corrupted image keeps the original's size, so a processor with a fixed resolution gives it as many
image tokens as the clean one. The noise reuses BDHS's forward-diffusion schedule (``mmalign_bdhs.noise``).
"""
from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any, Sequence

import numpy as np

from mmalign_core.types import ImageRef, PreferencePair

from .config import CorruptionConfig, CropConfig, MaskConfig, NoiseConfig


class CropCorruption:
    """A random crop keeping ``keep_area`` of the image (same aspect ratio), resized back to the original size."""

    def __init__(self, config: CropConfig):
        self.config = config

    def apply(self, image: Any, rng: np.random.Generator) -> Any:
        w, h = image.size
        side = math.sqrt(self.config.keep_area)
        cw, ch = max(1, round(w * side)), max(1, round(h * side))
        x0 = int(rng.integers(0, w - cw + 1))
        y0 = int(rng.integers(0, h - ch + 1))
        return image.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h))


class MaskCorruption:
    """A random rectangle covering ``mask_area`` of the image painted with the ``fill`` grey level."""

    def __init__(self, config: MaskConfig):
        self.config = config

    def apply(self, image: Any, rng: np.random.Generator) -> Any:
        from PIL import Image

        w, h = image.size
        side = math.sqrt(self.config.mask_area)
        mw, mh = max(1, round(w * side)), max(1, round(h * side))
        x0 = int(rng.integers(0, w - mw + 1))
        y0 = int(rng.integers(0, h - mh + 1))
        pixels = np.array(image.convert("RGB"))
        pixels[y0 : y0 + mh, x0 : x0 + mw] = self.config.fill
        return Image.fromarray(pixels, mode="RGB")


class NoiseCorruption:
    """Forward-diffusion noise at step ``step`` (BDHS's schedule): x~ = sqrt(a_N) x + sqrt(1 - a_N) eps."""

    def __init__(self, config: NoiseConfig):
        self.config = config

    def apply(self, image: Any, rng: np.random.Generator) -> Any:
        from mmalign_bdhs.noise import add_noise

        return add_noise(image, self.config.step, rng, schedule=self.config.schedule)


_CORRUPTIONS = {"crop": CropCorruption, "mask": MaskCorruption, "noise": NoiseCorruption}


def build_corruption(config: CorruptionConfig) -> CropCorruption | MaskCorruption | NoiseCorruption:
    return _CORRUPTIONS[config.kind](config)  # type: ignore[arg-type]


def image_rng(seed: int, pair_id: str, index: int) -> np.random.Generator:
    """The generator of one image's corruption: the same for the policy, the reference and a resumed run."""
    return np.random.default_rng([seed, zlib.crc32(pair_id.encode("utf-8")), index])


def corrupted_image(ref: ImageRef, corruption: Any, seed: int, pair_id: str, index: int, label: str) -> ImageRef:
    """A lazy :class:`ImageRef` of the corrupted image (decoded and corrupted when the model loads it)."""

    def load() -> Any:
        return corruption.apply(ref.load(), image_rng(seed, pair_id, index))

    return ImageRef(load, key=f"corrupt:{label}:{seed}:{pair_id}:{index}:{ref.key}")


def corrupt_pairs(pairs: Sequence[PreferencePair], config: CorruptionConfig) -> list[PreferencePair]:
    """The pairs with every image corrupted (answers unchanged).

    Raises:
        ValueError: a pair has no image (nothing to corrupt) or carries ``rejected_images``.
    """
    corruption = build_corruption(config)
    label = config.label()
    out = []
    for p in pairs:
        if not p.images:
            raise ValueError(f"pair {p.id!r} has no image: an image-grounded loss needs pairs with images")
        if p.rejected_images is not None:
            raise ValueError(
                f"pair {p.id!r} carries rejected_images: the image-grounded losses score both answers under the pair's own "
                "images and build the contrast image themselves; use pairs without rejected_images"
            )
        images = [corrupted_image(im, corruption, config.seed, p.id, i, label) for i, im in enumerate(p.images)]
        out.append(dataclasses.replace(p, images=images, extra_rejected=[]))
    return out
