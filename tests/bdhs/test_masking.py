"""Hiding image tokens from the language model (BDHS_attn) on every supported family.

For each tiny random checkpoint: hiding nothing through the key-mask machinery reproduces normal
generation exactly; hiding every image token makes the output independent of the image; hiding at
rho_th = 0.99 differs from the unmasked model; position ids (RoPE, Qwen2-VL's mRoPE) are unchanged; the
vision tower keeps its own attention; and zeroing embeddings (the ablation) is a different method.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bdhs_helpers import shapes_image
from mmalign_bdhs.generation import Row, first_token_logits, generate_rows
from mmalign_bdhs.masking import IMPLEMENTATION, base_model, key_masked, text_config_key
from mmalign_core.types import GenerationRequest

FAMILIES = ["llava", "llava-next", "qwen2-vl", "qwen2.5-vl", "idefics3", "paligemma"]

RED, BLUE = (210, 30, 30), (30, 60, 220)
PREFIXES = ["", "a red", "a blue square and"]


def _rows(colour, hide=None, prefixes=PREFIXES) -> list[Row]:
    image = shapes_image(colour, key=f"img{colour}")
    size = None if colour != BLUE else 64  # another size: AnyRes / dynamic-resolution families get another layout
    if size:
        image = shapes_image(colour, key=f"img{colour}", size=size)
    return [Row("Describe the image.", [image], p, hide) for p in prefixes]


def _all(k: int) -> np.ndarray:
    return np.ones(k, dtype=bool)


def _none(k: int) -> np.ndarray:
    return np.zeros(k, dtype=bool)


@pytest.mark.parametrize("family", FAMILIES)
def test_rho_zero_reproduces_normal_generation_exactly(load_family, family: str) -> None:
    m = load_family(family)
    rows = _rows(RED, _none)
    plain = m.generate([GenerationRequest(r.prompt, r.images, r.prefix) for r in rows], max_new_tokens=10)
    masked = generate_rows(m, rows, method="attention", max_new_tokens=10)
    unrestricted = generate_rows(m, rows, method=None, max_new_tokens=10)
    # the model's own generate strips whitespace; the continuations must match token for token
    assert [t.strip() for t in masked] == plain == [t.strip() for t in unrestricted]
    a = first_token_logits(m, rows, method="attention")
    b = first_token_logits(m, rows, method=None)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


@pytest.mark.parametrize("family", FAMILIES)
def test_rho_one_makes_the_output_independent_of_the_image(load_family, family: str) -> None:
    m = load_family(family)
    red, blue = _rows(RED, _all), _rows(BLUE, _all, prefixes=PREFIXES)
    if family in ("llava-next", "qwen2-vl", "qwen2.5-vl", "idefics3"):
        # the number of image tokens depends on the image size for these families; compare equal sizes
        blue = [Row(r.prompt, [shapes_image(BLUE, key="blue48")], r.prefix, _all) for r in red]
    a = first_token_logits(m, red)
    b = first_token_logits(m, blue)
    assert torch.allclose(a, b, atol=1e-5), (family, (a - b).abs().max())
    # ... while the unmasked model does see the difference
    a0 = first_token_logits(m, [Row(r.prompt, r.images, r.prefix, None) for r in red], method=None)
    b0 = first_token_logits(m, [Row(r.prompt, r.images, r.prefix, None) for r in blue], method=None)
    assert (a0 - b0).abs().max() > 1e-3
    assert generate_rows(m, red, max_new_tokens=8) == generate_rows(m, blue, max_new_tokens=8)


@pytest.mark.parametrize("family", FAMILIES)
def test_masking_at_099_differs_from_unmasked(load_family, family: str) -> None:
    m = load_family(family)
    rng = np.random.default_rng(0)
    cache: dict[int, np.ndarray] = {}

    def hide(k: int) -> np.ndarray:  # one mask per image, as BDHS draws it
        if k not in cache:
            cache[k] = rng.random(k) < 0.99
        return cache[k]

    rows = _rows(RED, hide)
    masked = first_token_logits(m, rows)
    plain = first_token_logits(m, rows, method=None)
    assert (masked - plain).abs().max() > 1e-3
    _, counts = generate_rows(m, rows, max_new_tokens=4, return_counts=True)
    assert all(k > 0 and 0.8 * k <= h <= k for k, h in counts), counts


@pytest.mark.parametrize("family", ["llava", "qwen2-vl", "paligemma"])
def test_position_ids_and_input_ids_are_unchanged(load_family, family: str) -> None:
    m = load_family(family)
    base = base_model(m)
    seen: list[tuple] = []

    def spy(module, args, kwargs):
        pos = kwargs.get("position_ids")
        seen.append((None if pos is None else pos.clone(), kwargs["input_ids"].clone() if kwargs.get("input_ids") is not None else None,
                     # the 2-D padding mask (a 4-D mask built by the model, as PaliGemma passes it, differs by construction)
                     kwargs["attention_mask"].clone() if isinstance(kwargs.get("attention_mask"), torch.Tensor)
                     and kwargs["attention_mask"].ndim == 2 else None))

    handle = base.get_decoder().register_forward_pre_hook(spy, with_kwargs=True)
    try:
        generate_rows(m, _rows(RED, _all), method="attention", max_new_tokens=5)
        masked, seen[:] = list(seen), []
        generate_rows(m, _rows(RED, _none), method=None, max_new_tokens=5)
        plain = list(seen)
    finally:
        handle.remove()
    assert len(masked) == len(plain) > 1  # prefill and decoding steps
    assert all(pos is not None for pos, _, _ in masked)  # the decoder gets explicit (m)RoPE positions
    for step, ((pm, im, am), (pp, ip, ap)) in enumerate(zip(masked, plain)):
        # Input ids: the prompt at prefill; later steps feed the generated token, which the mask may change.
        pairs = ((pm, pp), (im, ip), (am, ap)) if step == 0 else ((pm, pp), (am, ap))
        for x, y in pairs:
            assert (x is None) == (y is None)
            if x is not None:
                assert torch.equal(x, y)


def test_only_the_language_model_switches_implementation_and_it_is_restored(load_family) -> None:
    m = load_family("qwen2-vl")
    base = base_model(m)
    key = text_config_key(base)
    assert key == "text_config"
    text_before = base.config.text_config._attn_implementation
    vision_before = base.config.vision_config._attn_implementation
    with key_masked(m):
        assert base.config.text_config._attn_implementation == IMPLEMENTATION
        assert base.config.vision_config._attn_implementation == vision_before
    assert base.config.text_config._attn_implementation == text_before
    with pytest.raises(RuntimeError, match="boom"):
        with key_masked(m):
            raise RuntimeError("boom")
    assert base.config.text_config._attn_implementation == text_before


def test_eager_models_keep_their_own_attention(load_family) -> None:
    m = load_family("llava")
    base = base_model(m)
    base.set_attn_implementation("eager")
    rows = _rows(RED, _none)
    assert torch.allclose(first_token_logits(m, rows), first_token_logits(m, rows, method=None), atol=1e-5)
    red, blue = _rows(RED, _all), [Row(r.prompt, [shapes_image(BLUE, key="b")], r.prefix, _all) for r in _rows(RED)]
    assert torch.allclose(first_token_logits(m, red), first_token_logits(m, blue), atol=1e-5)
    assert base.config.text_config._attn_implementation == "eager"


def test_zeroed_embeddings_is_a_different_method(load_family) -> None:
    m = load_family("llava")
    rows = _rows(RED, _all)
    keymask = first_token_logits(m, rows, method="attention")
    zeroed = first_token_logits(m, rows, method="zero-embeddings")
    plain = first_token_logits(m, rows, method=None)
    assert (zeroed - keymask).abs().max() > 1e-4 and (zeroed - plain).abs().max() > 1e-4
    # zeroed rows are still image-independent (their content is gone) but they occupy attended positions
    blue = [Row(r.prompt, [shapes_image(BLUE, key="b")], r.prefix, _all) for r in rows]
    assert torch.allclose(zeroed, first_token_logits(m, blue, method="zero-embeddings"), atol=1e-5)


def test_generation_stops_at_the_stop_string_and_keeps_the_prefix_out(load_family) -> None:
    m = load_family("llava")
    rows = _rows(RED, _none)
    free = generate_rows(m, rows, method=None, max_new_tokens=30)
    stopped = generate_rows(m, rows, method=None, max_new_tokens=30, stop=["e"])
    for f, s in zip(free, stopped):
        if "e" in f:
            assert s == f[: f.index("e") + 1]
        else:
            assert s == f


@pytest.mark.parametrize("family", ["llava", "llava-next", "idefics3"])
def test_lean_decoding_equals_generate_under_a_partial_mask(load_family, family: str) -> None:
    """BDHS decodes through the core's lean loop where the family allows it; with part of the image hidden,
    stop strings and rows that stop at different steps (the hidden-key mask then follows the rows still
    decoding), it gives generate()'s tokens."""
    from mmalign_hf.sampling import decode_parts

    m = load_family(family)
    assert decode_parts(m.model) is not None
    rng = np.random.default_rng(0)
    rows = [Row("Describe the image.", [shapes_image(c, key=f"img{c}")], p, lambda k: rng.random(k) < 0.7)
            for c in (RED, BLUE) for p in PREFIXES]
    rng = np.random.default_rng(0)
    lean = generate_rows(m, rows, method="attention", max_new_tokens=12, stop=["e", "."], return_counts=True)
    m.fast_decoding = False
    rng = np.random.default_rng(0)  # the same hidden positions
    slow = generate_rows(m, rows, method="attention", max_new_tokens=12, stop=["e", "."], return_counts=True)
    assert lean == slow
    assert len({len(t) for t in lean[0]}) > 1  # rows stopped at different steps
