"""The corrupted image condition: deterministic per (seed, pair, image), same size, the corruption it names."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmalign_core.types import ImageRef, PreferencePair
from mmalign_grounded.config import CropConfig, MaskConfig, NoiseConfig
from mmalign_grounded.corruption import corrupt_pairs, image_rng


def _pair(pid: str = "p0") -> PreferencePair:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    return PreferencePair(id=pid, prompt="What is shown?", chosen="A red circle.", rejected="A blue square.",
                          images=[ImageRef(Image.fromarray(pixels, mode="RGB"), key="img0")], extra_rejected=["x"])


@pytest.mark.parametrize("cfg", [CropConfig(), MaskConfig(), NoiseConfig()])
def test_same_pair_same_corruption_and_size(cfg) -> None:
    a = corrupt_pairs([_pair()], cfg)[0]
    b = corrupt_pairs([_pair()], cfg)[0]
    clean = np.asarray(_pair().images[0].load())
    x, y = np.asarray(a.images[0].load()), np.asarray(b.images[0].load())
    assert x.shape == clean.shape and (x == y).all() and not (x == clean).all()
    assert a.chosen == "A red circle." and a.rejected == "A blue square." and a.extra_rejected == []
    other = np.asarray(corrupt_pairs([_pair("p1")], cfg)[0].images[0].load())
    assert not (other == x).all()  # another pair id draws another corruption


def test_mask_paints_the_requested_area() -> None:
    cfg = MaskConfig(mask_area=0.25, fill=255)
    out = np.asarray(corrupt_pairs([_pair()], cfg)[0].images[0].load())
    painted = (out == 255).all(-1)
    assert painted.sum() >= round(32 * 0.5) * round(24 * 0.5)  # the rectangle (plus any white pixel already there)
    clean = np.asarray(_pair().images[0].load())
    assert ((out != clean).any(-1) <= painted).all()  # nothing outside the rectangle changed


def test_crop_is_an_upscaled_region_of_the_original() -> None:
    cfg = CropConfig(keep_area=0.25, seed=3)
    out = corrupt_pairs([_pair()], cfg)[0].images[0].load()
    rng = image_rng(3, "p0", 0)
    x0, y0 = int(rng.integers(0, 32 - 16 + 1)), int(rng.integers(0, 24 - 12 + 1))
    expected = _pair().images[0].load().crop((x0, y0, x0 + 16, y0 + 12)).resize((32, 24))
    assert (np.asarray(out) == np.asarray(expected)).all()


def test_noise_is_bdhs_diffusion_noise() -> None:
    from mmalign_bdhs.noise import add_noise

    cfg = NoiseConfig(step=300, seed=5)
    out = corrupt_pairs([_pair()], cfg)[0].images[0].load()
    expected = add_noise(_pair().images[0].load(), 300, image_rng(5, "p0", 0), schedule="linspace")
    assert (np.asarray(out) == np.asarray(expected)).all()


def test_pairs_without_images_or_with_rejected_images_are_refused() -> None:
    bare = PreferencePair(id="t", prompt="q", chosen="a", rejected="b")
    with pytest.raises(ValueError, match="no image"):
        corrupt_pairs([bare], CropConfig())
    two = _pair()
    two.rejected_images = list(two.images)
    with pytest.raises(ValueError, match="rejected_images"):
        corrupt_pairs([two], CropConfig())
