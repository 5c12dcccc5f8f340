"""The shapes world: determinism, co-occurrence, absent set, captions, pixels."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from pydantic import ValidationError

from mmalign_core import ImageRef
from mmalign_shapes.config import WorldConfig
from mmalign_shapes.text import ShapeObject
from mmalign_shapes.world import ShapesWorld, draw_mask


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld()


def pixels(world: ShapesWorld, split: str, seed: int, index: int) -> np.ndarray:
    return np.asarray(world.image_ref(world.scene(split, seed, index)).load())


def test_same_seed_split_index_gives_identical_pixels(world):
    a = pixels(world, "train", 3, 5)
    b = pixels(ShapesWorld(WorldConfig()), "train", 3, 5)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)


def test_splits_seeds_and_indices_differ(world):
    base = pixels(world, "train", 0, 0)
    assert not np.array_equal(base, pixels(world, "eval", 0, 0))
    assert not np.array_equal(base, pixels(world, "train", 1, 0))
    assert not np.array_equal(base, pixels(world, "train", 0, 1))
    # scene content differs between splits too (over many scenes)
    train = [world.scene("train", 0, i).objects for i in range(200)]
    other = [world.scene("align", 0, i).objects for i in range(200)]
    assert train != other


def test_noise_level_changes_pixels_not_content():
    quiet = ShapesWorld(WorldConfig(noise_std=0.0))
    noisy = ShapesWorld(WorldConfig(noise_std=30.0))
    for i in range(20):
        assert quiet.scene("train", 0, i).objects == noisy.scene("train", 0, i).objects
    assert not np.array_equal(pixels(quiet, "train", 0, 0), pixels(noisy, "train", 0, 0))


def test_image_ref_is_lazy_keyed_and_picklable(world, monkeypatch):
    scene = world.scene("train", 7, 11)
    calls = []
    original = world.render
    monkeypatch.setattr(world, "render", lambda s: calls.append(s) or original(s))
    ref = world.image_ref(scene)
    assert isinstance(ref, ImageRef)
    assert calls == []
    assert ref.key == f"shapes:train:7:11:{world.fingerprint}"
    ref.load()
    assert calls == [scene]
    fresh = ShapesWorld()
    clone = pickle.loads(pickle.dumps(fresh.image_ref(scene)))
    assert clone.key == ref.key
    assert np.array_equal(np.asarray(clone.load()), np.asarray(original(scene)))


def test_scene_from_key_round_trips(world):
    for scene in [world.scene("train", 2, 9), world.absent_scene("eval", 4, 3)]:
        assert world.scene_from_key(scene.key) == scene
    other = ShapesWorld(WorldConfig(noise_std=5.0))
    with pytest.raises(ValueError, match="another world"):
        other.scene_from_key(world.scene("train", 0, 0).key)


def test_cooccurrence_rate_matches_config(world):
    hits = trials = 0
    for i in range(2000):
        scene = world.scene("train", 0, i)
        for anchor, partner in world.partner_of.items():
            if anchor in scene:
                trials += 1
                hits += partner in scene
    assert trials > 500
    assert abs(hits / trials - 0.9) < 0.04


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_cooccurrence_probability_is_configurable(p):
    world = ShapesWorld(WorldConfig(cooccurrence=p))
    hits = trials = 0
    for i in range(1000):
        scene = world.scene("train", 0, i)
        for anchor, partner in world.partner_of.items():
            if anchor in scene:
                trials += 1
                hits += partner in scene
    assert abs(hits / trials - p) < 0.06


def test_scene_sizes_and_distinct_objects(world):
    sizes = set()
    for i in range(500):
        objs = world.scene("train", 0, i).objects
        assert len(set(objs)) == len(objs)
        sizes.add(len(objs))
    assert sizes == {1, 2, 3}


def test_absent_set_lacks_the_partner(world):
    anchors_seen = set()
    for i in range(300):
        scene = world.absent_scene("eval", 0, i)
        assert scene.absent and scene.focus in scene
        assert world.partner_of[scene.focus] not in scene
        assert 1 <= len(scene.objects) <= 3
        anchors_seen.add(scene.focus)
    assert anchors_seen == set(world.anchors)


def test_captions_are_canonical(world):
    rank = {o: i for i, o in enumerate(world.objects)}
    assert world.caption([world.object("blue square"), world.object("red circle")]) == "a red circle and a blue square."
    assert (
        world.caption([world.object("blue square"), world.object("green triangle"), world.object("red circle")])
        == "a red circle, a green triangle and a blue square."
    )
    for i in range(300):
        scene = world.scene("train", 0, i)
        ranks = [rank[o] for o in scene.objects]
        assert ranks == sorted(ranks)
        assert scene.caption == world.caption(reversed(scene.objects))
        assert scene.caption.startswith("a ") and scene.caption.endswith(".")


def test_objects_are_really_drawn(world):
    """Without noise each mask is filled with the object's colour; with noise its mean colour is close."""
    clean = ShapesWorld(WorldConfig(noise_std=0.0, colour_jitter=0))
    for i in range(50):
        scene = clean.scene("train", 0, i)
        image, masks = clean.render_with_masks(scene)
        arr = np.asarray(image).astype(int)
        assert set(masks) == set(scene.objects)
        for obj, mask in masks.items():
            assert mask.sum() >= 20
            assert (arr[mask] == clean.config.colours[obj.colour]).all()
        union = np.any(np.stack(list(masks.values())), axis=0)
        background = arr[~union]
        assert (background == background[0]).all()  # plain grey everywhere else
    for i in range(50):
        scene = world.scene("train", 0, i)
        image, masks = world.render_with_masks(scene)
        arr = np.asarray(image).astype(float)
        for obj, mask in masks.items():
            mean = arr[mask].mean(axis=0)
            assert np.abs(mean - np.array(world.config.colours[obj.colour])).max() < 30
        # masks never overlap (one object per grid cell)
        total = sum(int(m.sum()) for m in masks.values())
        assert int(np.any(np.stack(list(masks.values())), axis=0).sum()) == total


@pytest.mark.parametrize("shape", ["circle", "square", "triangle", "diamond", "star", "cross", "hexagon"])
def test_every_supported_shape_draws(shape):
    mask = draw_mask(shape, 24.0, 24.0, 13, 48)
    assert 30 <= mask.sum() <= 13 * 13
    ys, xs = np.nonzero(mask)
    assert xs.min() >= 17 and xs.max() <= 31 and ys.min() >= 17 and ys.max() <= 31


def test_statistics_rank_partners_as_popular(world):
    stats = world.statistics(2000)
    top = sorted(world.objects, key=lambda o: -stats.frequency[o])[:4]
    assert set(top) == set(world.partner_of.values())
    for anchor, partner in world.partner_of.items():
        best = max((o for o in world.objects if o != anchor), key=lambda o: stats.cooccurrence.get((anchor, o), 0))
        assert best == partner


def test_score_text_oracle(world):
    scene = world.absent_scene("eval", 0, 0)
    partner = world.partner_of[scene.focus]
    score = world.score_text(scene.key, scene.caption[:-1] + " and " + f"a {partner.name}.")
    assert score.hallucinated == (partner,)
    assert score.missed == ()
    assert set(score.mentioned) == set(scene.objects) | {partner}


def test_world_config_validation():
    with pytest.raises(ValidationError):
        WorldConfig(anchors=[("red circle", "purple square")])
    with pytest.raises(ValidationError):
        WorldConfig(anchors=[("red circle", "blue square"), ("blue square", "green circle")])
    with pytest.raises(ValidationError):
        WorldConfig(object_size=(8, 20))
    with pytest.raises(ValidationError):
        WorldConfig(colours={"and": (1, 2, 3), "red": (4, 5, 6)})
    with pytest.raises(ValidationError):
        WorldConfig(shapes=["circle", "blob"])
    with pytest.raises(ValidationError):
        WorldConfig(unknown=1)
    cfg = WorldConfig(colours={"orange": (250, 140, 0), "purple": (140, 40, 180)}, shapes=["star", "cross"], anchors=[])
    w = ShapesWorld(cfg)
    assert w.caption([ShapeObject("purple", "cross"), ShapeObject("orange", "star")]) == "an orange star and a purple cross."
    with pytest.raises(ValueError, match="no anchor"):
        w.absent_scene("eval", 0, 0)


def test_render_cache_returns_the_same_pixels_and_stays_within_its_budget() -> None:
    one_image = 48 * 48 * 3
    cached = ShapesWorld(WorldConfig(), render_cache_bytes=2 * one_image)
    plain = ShapesWorld(WorldConfig(), render_cache_bytes=0)
    scenes = [cached.scene("train", 0, i) for i in range(4)]
    for scene in scenes + scenes:  # the second pass is served (partly) from the cache
        first = np.asarray(cached.render(scene))
        assert np.array_equal(first, np.asarray(plain.render(scene)))
        assert cached.render(scene) is not cached.render(scene)  # callers get their own image objects
    assert len(cached._renders) == 2 and cached._render_bytes == 2 * one_image
    assert plain._renders == {}
    clone = pickle.loads(pickle.dumps(cached))
    assert clone._renders == {} and np.array_equal(np.asarray(clone.render(scenes[0])), np.asarray(plain.render(scenes[0])))
