"""Pairs with two images in one prompt: scored under both conditions, image tokens checked per image."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from mmalign_core.testing import make_pairs
from mmalign_core.types import ImageRef
from mmalign_grounded.config import MaskConfig
from mmalign_grounded.corruption import corrupt_pairs
from mmalign_hf.checks import ImageTokenMismatch
from mmalign_hf.family import ProcessedPrompts, image_token_runs, misplaced_image


def test_runs_and_their_alignment_with_the_images() -> None:
    assert image_token_runs([5, 9, 9, 1, 9, 9, 9, 2, 9], 9) == [2, 3, 1]
    assert misplaced_image([4, 6], [4, 6]) is None
    assert misplaced_image([10], [4, 6]) is None  # adjacent placeholders form one run
    assert misplaced_image([5, 5], [4, 6]) == 0
    assert misplaced_image([4, 5, 1], [4, 6]) == 1
    assert misplaced_image([4], [4, 6]) == 1  # the second image got no tokens


def _two_image_pairs(n: int = 2):
    rng = np.random.default_rng(0)
    out = []
    for p in make_pairs(n, image_size=32):
        second = ImageRef(Image.fromarray(rng.integers(0, 256, (40, 24, 3), dtype=np.uint8), mode="RGB"), key=f"{p.id}-second")
        out.append(dataclasses.replace(p, prompt="Compare the two images.", images=[*p.images, second]))
    return out


def test_two_image_pairs_score_and_corrupt_per_image(llava_family) -> None:
    tiny_model = llava_family
    pairs = _two_image_pairs()
    with torch.no_grad():
        clean = tiny_model.pair_logps(pairs)
        tokens = tiny_model.pair_logps(pairs, token_logps=True)
        corrupted = tiny_model.pair_logps(corrupt_pairs(pairs, MaskConfig(mask_area=0.6)), with_rejected=False)
    assert torch.allclose(clean.chosen, tokens.chosen, atol=1e-4)
    assert torch.isfinite(corrupted.chosen).all() and not torch.allclose(corrupted.chosen, clean.chosen, atol=1e-4)
    c = corrupt_pairs(pairs, MaskConfig(mask_area=0.6))[0]
    a, b = (np.asarray(im.load()) for im in c.images)
    assert a.shape == (32, 32, 3) and b.shape == (40, 24, 3)  # each image corrupted at its own size


@pytest.fixture()
def llava_family(tiny_dir):
    """The tiny LLaVA loaded through ``hf-vlm`` (the family adapter, with its per-sample image-token checks)."""
    from mmalign_hf.plugin import mmalign_models

    torch.manual_seed(0)
    return mmalign_models()[0].build({"path": str(tiny_dir)})


def test_image_tokens_out_of_step_with_the_images_name_the_image(llava_family) -> None:
    tiny_model = llava_family
    pairs = _two_image_pairs(1)
    images = [[im.load() for im in pairs[0].images]]
    pr = tiny_model.run_processor([pairs[0].prompt], images)
    assert pr.expected_per_image is not None and len(pr.expected_per_image[0]) == 2
    runs = image_token_runs(pr.ids[0], tiny_model.image_token_id)
    assert sum(runs) == sum(pr.expected_per_image[0])
    tiny_model._check_prompts(pr, ["p0"], [pairs[0].prompt])  # as processed: fine
    n = pr.expected_per_image[0][0]
    # Move the boundary: one token of image 1 now "belongs" to image 2 (the row total still agrees).
    forged = ProcessedPrompts(pr.ids, pr.image_inputs, pr.expected_image_tokens, [[n - 1, pr.expected_per_image[0][1] + 1]])
    with pytest.raises(ImageTokenMismatch, match=r"sample p0: image 1 of 2"):
        tiny_model._check_prompts(forged, ["p0"], [pairs[0].prompt])
