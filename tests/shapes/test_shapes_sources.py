"""shapes-sft and shapes-pairs."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from pydantic import ValidationError

from mmalign_core import PreferencePair, SFTExample
from mmalign_core.protocols import Context, PreferenceSource
from mmalign_shapes.config import ShapesPairsConfig, ShapesSFTConfig, WorldConfig
from mmalign_shapes.injection import inject
from mmalign_shapes.sources import ShapesPairsSource, ShapesSFTSource, allocate, make_pairs_source, make_sft_source
from mmalign_shapes.text import count_answer, make_caption, parse_yes_no
from mmalign_shapes.world import ShapesWorld, stream_rng

CTX = Context()


def test_allocate_is_exact():
    labels = allocate(1000, [("a", 0.42), ("b", 0.28), ("c", 0.05), ("d", 0.25)], np.random.default_rng(0))
    assert Counter(labels) == {"a": 420, "b": 280, "c": 50, "d": 250}
    labels = allocate(7, [("a", 0.5), ("b", 0.5)], np.random.default_rng(0))
    assert len(labels) == 7 and set(Counter(labels).values()) == {3, 4}


def test_sft_counts_fractions_and_kinds():
    source = make_sft_source(ShapesSFTConfig(n_examples=1000))
    examples = list(source.sft_examples(CTX))
    assert len(source) == len(examples) == 1000
    assert all(isinstance(e, SFTExample) for e in examples)
    kinds = Counter(e.meta["kind"] for e in examples)
    assert kinds == {"caption": 420, "yes_no": 280, "count": 50, "text_only": 250}
    assert len({e.id for e in examples}) == 1000
    world = source.world
    for e in examples:
        scene = world.scene_from_key(e.meta["scene"])
        kind = e.meta["kind"]
        if kind == "text_only":
            assert e.images == []
            assert e.prompt == "Describe the image."
            assert e.response == scene.caption
        else:
            assert len(e.images) == 1 and e.images[0].key == scene.key
        if kind == "caption":
            assert (e.prompt, e.response) == ("Describe the image.", scene.caption)
        elif kind == "count":
            assert (e.prompt, e.response) == ("How many shapes are in the image?", count_answer(len(scene.objects)))
        elif kind == "yes_no":
            obj = world.object(e.meta["object"])
            assert e.prompt == f"Is there a {obj.name} in the image?"
            assert e.response == ("Yes." if obj in scene else "No.")
            assert parse_yes_no(e.response) is (obj in scene)


def test_sft_yes_no_balance_and_partner_negatives():
    source = ShapesSFTSource(ShapesSFTConfig(n_examples=3000, partner_negative_fraction=1.0))
    yes_no = [e for e in source.sft_examples(CTX) if e.meta["kind"] == "yes_no"]
    positives = sum(e.meta["label"] for e in yes_no)
    assert abs(positives / len(yes_no) - 0.5) < 0.07
    world = source.world
    partner_questions = 0
    for e in yes_no:
        scene = world.scene_from_key(e.meta["scene"])
        missing = world.absent_partners(scene.objects)
        if not e.meta["label"] and missing:
            assert world.object(e.meta["object"]) in missing
            partner_questions += 1
    assert partner_questions > 0


def test_sft_text_only_captions_carry_the_prior():
    source = ShapesSFTSource(ShapesSFTConfig(n_examples=4000))
    world = source.world
    hits = trials = 0
    for e in source.sft_examples(CTX):
        if e.meta["kind"] != "text_only":
            continue
        mentioned = set(world.parse(e.response))
        for anchor, partner in world.partner_of.items():
            if anchor in mentioned:
                trials += 1
                hits += partner in mentioned
    assert trials > 100 and hits / trials > 0.8


def test_sft_is_deterministic_and_fingerprinted():
    a = ShapesSFTSource(ShapesSFTConfig(n_examples=50, seed=3))
    b = ShapesSFTSource(ShapesSFTConfig(n_examples=50, seed=3))
    c = ShapesSFTSource(ShapesSFTConfig(n_examples=50, seed=4))
    strip = lambda e: (e.id, e.prompt, e.response, [i.key for i in e.images])  # noqa: E731
    assert [strip(e) for e in a.sft_examples(CTX)] == [strip(e) for e in b.sft_examples(CTX)]
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.fingerprint() != ShapesSFTSource(ShapesSFTConfig(n_examples=50, seed=3, world=WorldConfig(noise_std=5))).fingerprint()
    with pytest.raises(NotImplementedError, match="shapes-pairs"):
        a.pairs(CTX)


def test_sft_config_validation():
    with pytest.raises(ValidationError, match="sum to 1"):
        ShapesSFTConfig(caption_fraction=0.5)
    with pytest.raises(ValidationError, match="reserved"):
        ShapesSFTConfig(split="eval")
    with pytest.raises(ValidationError):
        ShapesSFTConfig(question_template="Is it there?")
    cfg = ShapesSFTConfig(caption_fraction=0.0, yes_no_fraction=0.0, count_fraction=0.0, text_only_fraction=1.0, n_examples=20)
    assert all(e.images == [] for e in ShapesSFTSource(cfg).sft_examples(CTX))


@pytest.mark.parametrize("mode", ["partner", "add", "swap", "mixed"])
def test_pairs_inject_one_absent_object(mode):
    source = make_pairs_source(ShapesPairsConfig(n_pairs=300, mode=mode, absent_fraction=0.5))
    assert isinstance(source, PreferenceSource)
    pairs = list(source.pairs(CTX))
    assert len(source) == len(pairs) == 300
    world = source.world
    used = Counter()
    for p in pairs:
        assert isinstance(p, PreferencePair)
        assert p.chosen != p.rejected
        assert p.prompt == "Describe the image."
        scene = world.scene_from_key(p.meta["scene"])
        assert [i.key for i in p.images] == [scene.key]
        assert p.chosen == scene.caption
        injected = world.object(p.meta["injected"])
        assert injected not in scene
        rejected = world.parse(p.rejected)
        assert injected in rejected
        assert [o for o in rejected if o not in scene] == [injected]
        assert p.rejected == make_caption(world.canonical(rejected))
        if p.meta["mode"] == "swap":
            removed = world.object(p.meta["removed"])
            assert removed in scene and removed not in rejected
            assert removed.colour == injected.colour or removed.shape == injected.shape
            assert len(rejected) == len(scene.objects)
        else:
            assert len(rejected) == len(scene.objects) + 1
        used[p.meta["mode"]] += 1
    if mode == "mixed":
        assert set(used) == {"partner", "add", "swap"}
    elif mode == "partner":
        assert set(used) <= {"partner", "add"} and used["partner"] >= 150
    else:
        assert set(used) == {mode}


def test_partner_mode_injects_the_partner():
    source = ShapesPairsSource(ShapesPairsConfig(n_pairs=200, mode="partner", absent_fraction=1.0))
    world = source.world
    for p in source.pairs(CTX):
        scene = world.scene_from_key(p.meta["scene"])
        assert scene.absent
        assert p.meta["mode"] == "partner"
        injected = world.object(p.meta["injected"])
        assert injected in world.absent_partners(scene.objects)
        assert world.anchor_of[injected] in scene


def test_partner_mode_falls_back_when_impossible():
    world = ShapesWorld()
    truth = [world.object("yellow triangle")]
    result = inject(world, truth, "partner", np.random.default_rng(0), fallback="swap")
    assert result.mode == "swap" and result.added not in truth
    result = inject(world, [world.object("red circle")], "partner", np.random.default_rng(0))
    assert result.mode == "partner" and result.added == world.object("blue square")
    assert result.objects == (world.object("red circle"), world.object("blue square"))


def test_yes_no_pairs():
    source = ShapesPairsSource(ShapesPairsConfig(n_pairs=400, yes_no_fraction=0.5, mode="partner", absent_fraction=1.0))
    pairs = list(source.pairs(CTX))
    kinds = Counter(p.meta["kind"] for p in pairs)
    assert kinds == {"caption": 200, "yes_no": 200}
    world = source.world
    negatives = 0
    for p in pairs:
        if p.meta["kind"] != "yes_no":
            continue
        scene = world.scene_from_key(p.meta["scene"])
        obj = world.object(p.meta["object"])
        assert p.prompt == f"Is there a {obj.name} in the image?"
        assert {p.chosen, p.rejected} == {"Yes.", "No."}
        assert (p.chosen == "Yes.") is (obj in scene)
        if obj not in scene:
            negatives += 1
            assert obj in world.absent_partners(scene.objects)
    assert 60 < negatives < 140


def test_pairs_deterministic_and_fingerprint():
    cfg = ShapesPairsConfig(n_pairs=40, mode="mixed")
    a = [(p.id, p.chosen, p.rejected) for p in ShapesPairsSource(cfg).pairs(CTX)]
    b = [(p.id, p.chosen, p.rejected) for p in ShapesPairsSource(cfg.model_copy()).pairs(CTX)]
    assert a == b
    assert ShapesPairsSource(cfg).fingerprint() != ShapesPairsSource(ShapesPairsConfig(n_pairs=40, mode="swap")).fingerprint()


def test_inject_never_returns_the_truth():
    world = ShapesWorld()
    for i in range(500):
        scene = world.scene("train", 0, i)
        for mode in ("partner", "add", "swap", "mixed"):
            result = inject(world, scene.objects, mode, stream_rng(0, "t", i))
            assert set(result.objects) != set(scene.objects)
            assert result.added not in scene


def test_sources_return_lazy_sequences():
    from collections.abc import Sequence

    sft = ShapesSFTSource(ShapesSFTConfig(n_examples=30))
    examples = sft.sft_examples(CTX)
    assert isinstance(examples, Sequence) and len(examples) == 30
    assert examples[-1].id == examples[29].id == "shapes-sft:0:29"
    assert [e.id for e in examples[2:5]] == [sft.example(i).id for i in range(2, 5)]
    with pytest.raises(IndexError):
        examples[30]
    pairs = ShapesPairsSource(ShapesPairsConfig(n_pairs=12)).pairs(CTX)
    assert isinstance(pairs, Sequence) and len(pairs) == 12
    assert [p.id for p in pairs] == [f"shapes-pairs:0:{i}" for i in range(12)]
    assert pairs[3].rejected == pairs[3].rejected and pairs[-12].id == pairs[0].id
