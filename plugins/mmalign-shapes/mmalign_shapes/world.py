"""The shapes world: scenes with exact ground truth, drawn lazily and deterministically.

A *scene* is a set of distinct objects (colour x shape). Scene ``index`` of
split ``split`` under ``seed`` is always the same scene with the same pixels:
every scene has its own random streams, seeded from ``(seed, split, index)``:
one for its content, one for its layout and one for its pixel noise (so
changing the noise level never changes what is in the picture or where).

Natural scenes (:meth:`ShapesWorld.scene`) follow the training distribution with
its co-occurrence bias; *absent* scenes (:meth:`ShapesWorld.absent_scene`) always
show an anchor without its partner. Images are rendered only when an
:class:`~mmalign_core.ImageRef` from :meth:`ShapesWorld.image_ref` is loaded.

Image keys look like ``shapes:train:0:17:3fa2c1d0`` (stream, seed, index, and a
short hash of the world config); absent scenes use the stream ``<split>+absent``.
:meth:`ShapesWorld.scene_from_key` turns a key back into its scene, which is
how ground truth stays reachable from an image id (e.g. for a judge).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from PIL import Image, ImageDraw

from mmalign_core import ImageRef

from .config import SUPPORTED_SHAPES, WorldConfig
from .text import CaptionParser, ShapeObject, make_caption

#: Bump when scene sampling or rendering changes (part of every fingerprint and key hash).
DATA_VERSION = 1

ABSENT_SUFFIX = "+absent"
_CONTENT_STREAM = 0
_RENDER_STREAM = 1
_NOISE_STREAM = 2


def stream_code(name: str) -> int:
    """A stable 32-bit integer for a stream name (independent of Python's hash seed)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "little")


def stream_rng(seed: int, stream: str, index: int, purpose: int = 0) -> np.random.Generator:
    """The random generator of item ``index`` of ``stream``; distinct streams never share a seed sequence."""
    return np.random.default_rng([int(seed), stream_code(stream), int(index), int(purpose)])


@dataclass(frozen=True)
class Scene:
    """One image's ground truth.

    Attributes:
        key: stable image id (also the :class:`ImageRef` key).
        split: the split name it was drawn from.
        seed: the seed of that split's stream.
        index: position in the stream.
        absent: True for a scene from the absent set (an anchor shown without its partner).
        objects: the objects present, in canonical order.
        focus: for absent scenes, the anchor whose partner is missing.
    """

    key: str
    split: str
    seed: int
    index: int
    absent: bool
    objects: tuple[ShapeObject, ...]
    focus: ShapeObject | None = None

    @property
    def caption(self) -> str:
        """The true caption (objects in canonical order)."""
        return make_caption(self.objects)

    def __contains__(self, obj: object) -> bool:
        return obj in self.objects


@dataclass(frozen=True)
class Placement:
    """Where and how one object is drawn."""

    obj: ShapeObject
    cx: float
    cy: float
    size: int
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class TextScore:
    """Objects a text claims, split by ground truth."""

    mentioned: tuple[ShapeObject, ...]
    hallucinated: tuple[ShapeObject, ...]
    missed: tuple[ShapeObject, ...]


@dataclass(frozen=True)
class WorldStatistics:
    """Object frequencies and pairwise co-occurrence counts over ``n`` natural scenes."""

    n: int
    frequency: dict[ShapeObject, int]
    cooccurrence: dict[tuple[ShapeObject, ShapeObject], int]


class _SceneImage:
    """Zero-argument callable that renders one scene (what the lazy :class:`ImageRef` holds; picklable)."""

    __slots__ = ("world", "scene")

    def __init__(self, world: "ShapesWorld", scene: Scene):
        self.world = world
        self.scene = scene

    def __call__(self) -> Image.Image:
        return self.world.render(self.scene)


#: Bytes of rendered images a world keeps (least recently used first out). Training draws each scene
#: several times (3,000 steps x 64 examples over 40,000 scenes); rendering one costs about a millisecond.
RENDER_CACHE_BYTES = 256 * 1024 * 1024


class ShapesWorld:
    """Samples, describes and renders scenes of one :class:`WorldConfig`.

    Rendered images are kept in a bounded cache (``render_cache_bytes``; 0 disables it), so a scene drawn
    again is not rendered again. The cache holds pixels only: it changes no result.
    """

    def __init__(self, config: WorldConfig | None = None, render_cache_bytes: int = RENDER_CACHE_BYTES):
        self.config = config if config is not None else WorldConfig()
        self._renders: OrderedDict[str, bytes] = OrderedDict()
        self._render_budget = int(render_cache_bytes)
        self._render_bytes = 0
        cfg = self.config
        self.colours: tuple[str, ...] = tuple(cfg.colours)
        self.shapes: tuple[str, ...] = tuple(cfg.shapes)
        #: All objects in canonical (colour-major) order.
        self.objects: tuple[ShapeObject, ...] = tuple(ShapeObject(c, s) for c in self.colours for s in self.shapes)
        self._rank = {o: i for i, o in enumerate(self.objects)}
        self.partner_of: dict[ShapeObject, ShapeObject] = {}
        for anchor, partner in cfg.anchors:
            self.partner_of[self.object(anchor)] = self.object(partner)
        self.anchor_of: dict[ShapeObject, ShapeObject] = {p: a for a, p in self.partner_of.items()}
        #: Anchors in config order.
        self.anchors: tuple[ShapeObject, ...] = tuple(self.partner_of)
        self.parser = CaptionParser(self.colours, self.shapes)
        payload = {"version": DATA_VERSION, "world": cfg.model_dump(mode="json")}
        self.fingerprint: str = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]
        self._stats: dict[tuple[int, int], WorldStatistics] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_renders"], state["_render_bytes"] = OrderedDict(), 0  # pixels are recomputable; never pickled
        return state

    # ------------------------------------------------------------------ objects
    def object(self, name: str) -> ShapeObject:
        """The object called ``name`` (``"red circle"``)."""
        colour, _, shape = name.strip().partition(" ")
        obj = ShapeObject(colour, shape)
        if obj not in self._rank:
            raise KeyError(f"no object {name!r} in this world")
        return obj

    def canonical(self, objects: Iterable[ShapeObject]) -> tuple[ShapeObject, ...]:
        """Distinct ``objects`` in canonical order."""
        return tuple(sorted(set(objects), key=self._rank.__getitem__))

    def caption(self, objects: Iterable[ShapeObject]) -> str:
        """Caption of a set of objects, in canonical order."""
        return make_caption(self.canonical(objects))

    def parse(self, text: str) -> list[ShapeObject]:
        """Objects a free text claims are present (see :class:`~mmalign_shapes.text.CaptionParser`)."""
        return self.parser.parse(text)

    def absent_partners(self, objects: Iterable[ShapeObject]) -> list[ShapeObject]:
        """Partners of the anchors in ``objects`` that are themselves not in ``objects``."""
        present = set(objects)
        return [self.partner_of[a] for a in self.anchors if a in present and self.partner_of[a] not in present]

    # ------------------------------------------------------------------ scenes
    def key(self, stream: str, seed: int, index: int) -> str:
        """Image id of item ``index`` of ``stream`` under ``seed``."""
        return f"shapes:{stream}:{seed}:{index}:{self.fingerprint}"

    def scene(self, split: str, seed: int, index: int) -> Scene:
        """Scene ``index`` of the natural distribution in ``split``."""
        rng = stream_rng(seed, split, index, _CONTENT_STREAM)
        objects = self._sample_objects(rng)
        return Scene(self.key(split, seed, index), split, seed, index, False, self.canonical(objects))

    def absent_scene(self, split: str, seed: int, index: int) -> Scene:
        """Scene ``index`` of the absent set of ``split``: anchor ``index % n_anchors`` without its partner.

        The other objects follow the natural sampling rule, with that partner excluded.
        """
        if not self.anchors:
            raise ValueError("this world has no anchor pairs, so it has no absent set")
        stream = split + ABSENT_SUFFIX
        anchor = self.anchors[index % len(self.anchors)]
        rng = stream_rng(seed, stream, index, _CONTENT_STREAM)
        objects = self._sample_objects(rng, first=anchor)
        return Scene(self.key(stream, seed, index), split, seed, index, True, self.canonical(objects), focus=anchor)

    def scene_from_key(self, key: str) -> Scene:
        """The scene an image id refers to (the id must come from this world's config)."""
        parts = key.split(":")
        if len(parts) != 5 or parts[0] != "shapes":
            raise ValueError(f"not a shapes image key: {key!r}")
        _, stream, seed, index, fingerprint = parts
        if fingerprint != self.fingerprint:
            raise ValueError(f"image key {key!r} belongs to another world config (this one is {self.fingerprint})")
        if stream.endswith(ABSENT_SUFFIX):
            return self.absent_scene(stream[: -len(ABSENT_SUFFIX)], int(seed), int(index))
        return self.scene(stream, int(seed), int(index))

    def _sample_objects(self, rng: np.random.Generator, first: ShapeObject | None = None) -> list[ShapeObject]:
        """Draw distinct objects with the co-occurrence rule.

        A target count ``n`` is drawn in ``[min_objects, max_objects]``; objects are
        drawn uniformly from those still allowed. A drawn anchor brings its
        partner with probability ``cooccurrence`` and otherwise bans it; a drawn
        partner bans its anchor (which may then only appear through its own
        coin). Anchors are not drawn into the last free slot, where a partner
        would not fit. Together this makes P(partner | anchor) exactly
        ``cooccurrence`` in natural scenes. ``first`` forces an anchor whose
        partner is banned (absent scenes).
        """
        cfg = self.config
        target = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        chosen: list[ShapeObject] = []
        banned: set[ShapeObject] = set()
        if first is not None:
            chosen.append(first)
            banned.add(self.partner_of[first])
        while len(chosen) < target:
            room = cfg.max_objects - len(chosen)
            candidates = [
                o for o in self.objects
                if o not in chosen and o not in banned and (room >= 2 or o not in self.partner_of)
            ]
            if not candidates:
                break
            obj = candidates[int(rng.integers(len(candidates)))]
            chosen.append(obj)
            if obj in self.partner_of:
                partner = self.partner_of[obj]
                if rng.random() < cfg.cooccurrence:
                    chosen.append(partner)
                else:
                    banned.add(partner)
            elif obj in self.anchor_of:
                banned.add(self.anchor_of[obj])
        return chosen

    def statistics(self, n: int = 5000, seed: int = 0) -> WorldStatistics:
        """Frequencies and co-occurrences over ``n`` natural scenes of the reserved stream ``eval-stats``."""
        cache_key = (n, seed)
        if cache_key not in self._stats:
            freq = {o: 0 for o in self.objects}
            cooc: dict[tuple[ShapeObject, ShapeObject], int] = {}
            for i in range(n):
                objs = self.scene("eval-stats", seed, i).objects
                for a in objs:
                    freq[a] += 1
                    for b in objs:
                        if a != b:
                            cooc[(a, b)] = cooc.get((a, b), 0) + 1
            self._stats[cache_key] = WorldStatistics(n, freq, cooc)
        return self._stats[cache_key]

    # ------------------------------------------------------------------ images
    def image_ref(self, scene: Scene) -> ImageRef:
        """A lazy image of ``scene``: nothing is drawn until ``.load()``."""
        return ImageRef(_SceneImage(self, scene), key=scene.key)

    def layout(self, scene: Scene) -> tuple[int, list[Placement]]:
        """Background level and object placements of ``scene`` (deterministic)."""
        cfg = self.config
        rng = self._render_rng(scene)
        background = int(rng.integers(cfg.background[0], cfg.background[1] + 1))
        cell = cfg.image_size / 3
        cells = rng.permutation(9)[: len(scene.objects)]
        placements = []
        for obj, c in zip(scene.objects, cells):
            size = int(rng.integers(cfg.object_size[0], cfg.object_size[1] + 1))
            row, col = divmod(int(c), 3)
            slack = max(cell - size - 1, 0.0) / 2
            cx = col * cell + cell / 2 + float(rng.uniform(-slack, slack))
            cy = row * cell + cell / 2 + float(rng.uniform(-slack, slack))
            base = np.array(cfg.colours[obj.colour], dtype=np.int64)
            jitter = rng.integers(-cfg.colour_jitter, cfg.colour_jitter + 1, size=3)
            rgb = tuple(int(v) for v in np.clip(base + jitter, 0, 255))
            placements.append(Placement(obj, cx, cy, size, rgb))  # type: ignore[arg-type]
        return background, placements

    def render_with_masks(self, scene: Scene) -> tuple[Image.Image, dict[ShapeObject, np.ndarray]]:
        """The image of ``scene`` and each object's boolean pixel mask."""
        cfg = self.config
        background, placements = self.layout(scene)
        noise_rng = self._render_rng(scene, _NOISE_STREAM)
        size = cfg.image_size
        pixels = np.full((size, size, 3), float(background), dtype=np.float32)
        masks: dict[ShapeObject, np.ndarray] = {}
        for p in placements:
            mask = draw_mask(p.obj.shape, p.cx, p.cy, p.size, size)
            pixels[mask] = p.rgb
            masks[p.obj] = mask
        if cfg.noise_std > 0:
            pixels += noise_rng.normal(0.0, cfg.noise_std, size=pixels.shape).astype(np.float32)
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="RGB")
        return image, masks

    def render(self, scene: Scene) -> Image.Image:
        """The RGB image of ``scene`` (a new image object each call; repeated scenes come from the cache)."""
        size = self.config.image_size
        raw = self._renders.get(scene.key)
        if raw is not None:
            self._renders.move_to_end(scene.key)
            return Image.frombytes("RGB", (size, size), raw)
        image = self.render_with_masks(scene)[0]
        if self._render_budget > 0:
            raw = image.tobytes()
            self._renders[scene.key] = raw
            self._render_bytes += len(raw)
            while self._render_bytes > self._render_budget and self._renders:
                _, old = self._renders.popitem(last=False)
                self._render_bytes -= len(old)
        return image

    def _render_rng(self, scene: Scene, purpose: int = _RENDER_STREAM) -> np.random.Generator:
        stream = scene.split + ABSENT_SUFFIX if scene.absent else scene.split
        return stream_rng(scene.seed, stream, scene.index, purpose)

    # ------------------------------------------------------------------ truth
    def score_text(self, scene_or_key: Scene | str, text: str) -> TextScore:
        """Which objects ``text`` claims, which of them are hallucinated, which true ones it misses.

        This is the ground-truth oracle: a judge can call it with an image id.
        """
        scene = self.scene_from_key(scene_or_key) if isinstance(scene_or_key, str) else scene_or_key
        mentioned = tuple(self.parse(text))
        truth = set(scene.objects)
        hallucinated = tuple(o for o in mentioned if o not in truth)
        missed = tuple(o for o in scene.objects if o not in set(mentioned))
        return TextScore(mentioned, hallucinated, missed)


def draw_mask(shape: str, cx: float, cy: float, size: int, image_size: int) -> np.ndarray:
    """Boolean mask of one shape of nominal ``size`` centred at (cx, cy)."""
    if shape not in SUPPORTED_SHAPES:
        raise ValueError(f"cannot draw shape {shape!r}")
    canvas = Image.new("L", (image_size, image_size), 0)
    draw = ImageDraw.Draw(canvas)
    h = (size - 1) / 2
    if shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=255)
    elif shape == "square":
        s = h * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=255)
    elif shape == "diamond":
        draw.polygon([(cx, cy - h), (cx + h * 0.8, cy), (cx, cy + h), (cx - h * 0.8, cy)], fill=255)
    elif shape == "star":
        draw.polygon(_star_points(cx, cy, h, 0.45 * h, 5), fill=255)
    elif shape == "cross":
        t = h * 0.35
        draw.rectangle([cx - h, cy - t, cx + h, cy + t], fill=255)
        draw.rectangle([cx - t, cy - h, cx + t, cy + h], fill=255)
    elif shape == "hexagon":
        draw.polygon(_star_points(cx, cy, h, h, 3), fill=255)
    return np.asarray(canvas) > 0


def _star_points(cx: float, cy: float, outer: float, inner: float, tips: int) -> list[tuple[float, float]]:
    points = []
    for k in range(2 * tips):
        radius = outer if k % 2 == 0 else inner
        angle = -math.pi / 2 + k * math.pi / tips
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points
