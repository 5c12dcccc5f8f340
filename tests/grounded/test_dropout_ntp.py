"""dropout-ntp: the rejected answer is the chosen answer's head completed with the image hidden."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from mmalign_core.manager import get_plugins
from mmalign_core.protocols import Context
from mmalign_core.types import ImageRef
from mmalign_grounded.dropout_ntp import NeedsModelError, head_words


def test_head_words_keeps_a_fraction_and_leaves_something_to_complete() -> None:
    assert head_words("A red circle and blue square.", 0.5) == "A red circle"  # ceil(0.5 * 6 words)
    assert head_words("A red  circle.", 0.99) == "A red"  # never the whole answer; original spacing kept
    assert head_words("Yes.", 0.5) is None


def _source(n: int = 4, keep: float = 0.5):
    entry = get_plugins().resolve("preference_source", "dropout-ntp")
    return entry.build({"base": {"name": "shapes-pairs", "config": {"n_pairs": n}}, "keep_fraction": keep, "max_new_tokens": 8})


def test_needs_the_stage_model() -> None:
    with pytest.raises(NeedsModelError, match="stage-start model"):
        _source().pairs(Context())


def test_rejected_is_the_head_plus_an_image_blind_completion(tiny_model, monkeypatch) -> None:
    src = _source(4)
    pairs = src.pairs(Context(extras={"model": tiny_model}))
    base = list(src.base.source.pairs(Context()))[:4]
    assert 0 < len(pairs) <= 4 and all(p.source == "dropout-ntp" for p in pairs)
    by_id = {b.id: b for b in base}
    for p in pairs:
        head = p.meta["dropout_ntp"]["head"]
        assert p.chosen == by_id[p.id].chosen and p.rejected.startswith(head) and p.rejected != p.chosen
        assert head == head_words(p.chosen, 0.5)

    # With every image token hidden, the completion cannot depend on the image: swap in other images.
    other = Image.fromarray(np.full((48, 48, 3), 255, dtype=np.uint8), mode="RGB")
    original = src.base.records

    def swapped(ctx):
        return [dataclasses.replace(r, images=[ImageRef(other, key="white")]) for r in original(ctx)]

    monkeypatch.setattr(src.base, "records", swapped)
    again = src.pairs(Context(extras={"model": tiny_model}))
    assert [p.rejected for p in again] == [p.rejected for p in pairs]
    assert src.fingerprint() == _source(4).fingerprint() != _source(4, keep=0.3).fingerprint()
