"""Two images of different sizes in one prompt, on every tiny family: scored, image tokens checked per image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmalign_core.types import ImageRef, PreferencePair
from tiny_families import BUILDERS


def _pair() -> PreferencePair:
    rng = np.random.default_rng(0)
    a = ImageRef(Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), mode="RGB"), key="a")
    b = ImageRef(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), mode="RGB"), key="b")
    return PreferencePair(id="two", prompt="What differs between the images?", chosen="The first is wider.",
                          rejected="They are the same.", images=[a, b])


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_two_images_in_one_prompt(load_family, family: str) -> None:
    model = load_family(family)
    pair = _pair()
    with torch.no_grad():
        out = model.pair_logps([pair])
        one = model.pair_logps([PreferencePair(**{**pair.__dict__, "images": pair.images[:1]})])
    assert torch.isfinite(out.chosen).all() and torch.isfinite(out.rejected).all()
    assert out.chosen_tokens.tolist() == one.chosen_tokens.tolist()  # answers unchanged; only the prefix differs
    pr = model.run_processor([pair.prompt], [[im.load() for im in pair.images]])
    if pr.expected_per_image is not None:
        assert len(pr.expected_per_image[0]) == 2 and sum(pr.expected_per_image[0]) == pr.expected_image_tokens[0]
