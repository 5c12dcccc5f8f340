"""Data sources of the shapes world: SFT examples and injected-hallucination preference pairs.

Both sources are static and fully determined by their config: example ``i``
always shows scene ``i`` of the configured split and seed, and its image is
rendered only when loaded. ``sft_examples`` / ``pairs`` return lazy sequences:
an item is built when it is indexed, so memory does not grow with the data set.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any, Callable, Generic, Iterator, TypeVar, overload

import numpy as np

from mmalign_core import PreferencePair, SFTExample
from mmalign_core.protocols import Context

from .config import ShapesPairsConfig, ShapesSFTConfig
from .injection import inject
from .text import ShapeObject, count_answer, question
from .world import DATA_VERSION, Scene, ShapesWorld, stream_rng


T = TypeVar("T")


class LazyItems(Sequence, Generic[T]):
    """A read-only sequence whose item ``i`` is ``make(i)``, built on access."""

    def __init__(self, n: int, make: Callable[[int], T]):
        self._n = n
        self._make = make

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> T: ...

    @overload
    def __getitem__(self, i: slice) -> list[T]: ...

    def __getitem__(self, i: int | slice) -> T | list[T]:
        if isinstance(i, slice):
            return [self._make(j) for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return self._make(i % self._n)

    def __iter__(self) -> Iterator[T]:
        return (self._make(i) for i in range(self._n))


def allocate(n: int, fractions: Sequence[tuple[str, float]], rng: np.random.Generator) -> list[str]:
    """Labels for ``n`` items in exact proportions (largest remainder), in a random order."""
    raw = [f * n for _, f in fractions]
    counts = [math.floor(r) for r in raw]
    short = n - sum(counts)
    by_remainder = sorted(range(len(raw)), key=lambda k: (-(raw[k] - counts[k]), k))
    for k in by_remainder[: max(short, 0)]:
        counts[k] += 1
    labels = [label for (label, _), c in zip(fractions, counts) for _ in range(c)]
    order = rng.permutation(len(labels))
    return [labels[int(i)] for i in order]


def config_fingerprint(component: str, config: Any) -> str:
    """A hash of a component's name, the data format version and its whole config."""
    payload = {"component": component, "version": DATA_VERSION, "config": config.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class ShapesSFTSource:
    """Supervised examples from the shapes world (capabilities ``sft`` and ``static``).

    Kinds of example, in the configured proportions (exact counts):

    * ``caption``: caption prompt + image -> true caption;
    * ``yes_no``: "Is there a <object> in the image?" -> yes/no answer; negatives
      favour the missing partner of a present anchor (``partner_negative_fraction``);
    * ``count``: counting prompt -> "Two." and so on;
    * ``text_only``: the text-only prompt with **no image** -> the caption of a
      natural scene. These captions carry the co-occurrence bias, so the language
      model learns the prior P(caption). The prompt defaults to the captioning
      prompt itself: image-masked generation (BDHS) shows the model that prompt
      with the image hidden, the closest input to the text-only case, so the
      prior learnt here is what it falls back to. A different prompt would teach
      the prior under a condition that masked generation never presents.
    """

    name = "shapes-sft"

    def __init__(self, config: ShapesSFTConfig):
        self.config = config
        self.world = ShapesWorld(config.world)
        fractions = [
            ("caption", config.caption_fraction),
            ("yes_no", config.yes_no_fraction),
            ("count", config.count_fraction),
            ("text_only", config.text_only_fraction),
        ]
        self.kinds: list[str] = allocate(config.n_examples, fractions, stream_rng(config.seed, config.split + "#sft-kinds", 0))

    def __len__(self) -> int:
        return self.config.n_examples

    def fingerprint(self) -> str:
        """Hash of the config (the data is a pure function of it)."""
        return config_fingerprint(self.name, self.config)

    def sft_examples(self, ctx: Context | None = None) -> LazyItems[SFTExample]:
        """All examples as a lazy sequence (``ctx`` is not needed: the data is static)."""
        return LazyItems(len(self), self.example)

    def pairs(self, ctx: Context | None = None) -> Sequence[PreferencePair]:
        """Not offered: this source has no rejected answers."""
        raise NotImplementedError(
            "shapes-sft provides SFT examples only (capability 'sft'); use 'shapes-pairs' for preference pairs"
        )

    def example(self, i: int) -> SFTExample:
        """Example ``i``."""
        cfg = self.config
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        kind = self.kinds[i]
        scene = self.world.scene(cfg.split, cfg.seed, i)
        meta: dict[str, Any] = {"kind": kind, "scene": scene.key, "objects": [o.name for o in scene.objects]}
        images = [self.world.image_ref(scene)]
        if kind == "caption":
            prompt, response = cfg.caption_prompt, scene.caption
        elif kind == "text_only":
            prompt, response, images = cfg.text_only_prompt, scene.caption, []
        elif kind == "count":
            prompt, response = cfg.count_prompt, count_answer(len(scene.objects))
        else:
            obj, positive = self._question_object(scene, stream_rng(cfg.seed, cfg.split + "#sft-question", i))
            prompt = question(cfg.question_template, obj)
            response = cfg.yes_answer if positive else cfg.no_answer
            meta.update(object=obj.name, label=positive)
        return SFTExample(id=f"{self.name}:{cfg.seed}:{i}", prompt=prompt, response=response, images=images, source=self.name, meta=meta)

    def _question_object(self, scene: Scene, rng: np.random.Generator) -> tuple[ShapeObject, bool]:
        cfg = self.config
        if rng.random() < cfg.yes_no_positive_fraction:
            return scene.objects[int(rng.integers(len(scene.objects)))], True
        partners = self.world.absent_partners(scene.objects)
        if partners and rng.random() < cfg.partner_negative_fraction:
            return partners[int(rng.integers(len(partners)))], False
        absent = [o for o in self.world.objects if o not in scene.objects]
        return absent[int(rng.integers(len(absent)))], False


class ShapesPairsSource:
    """Preference pairs with an injected hallucination (capabilities ``pairs`` and ``static``).

    Caption pairs: the caption prompt, chosen = true caption, rejected = the
    caption of the object set after :func:`~mmalign_shapes.injection.inject`.
    Yes/no pairs: "Is there X?" with chosen = the true answer and rejected = the
    other one; X is a present object (positives) or the injected absent object.
    ``meta`` records the truth, the injection mode used and the injected object.
    """

    name = "shapes-pairs"

    def __init__(self, config: ShapesPairsConfig):
        self.config = config
        self.world = ShapesWorld(config.world)
        self.kinds: list[str] = allocate(
            config.n_pairs,
            [("caption", 1.0 - config.yes_no_fraction), ("yes_no", config.yes_no_fraction)],
            stream_rng(config.seed, config.split + "#pairs-kinds", 0),
        )
        images = allocate(
            config.n_pairs,
            [("natural", 1.0 - config.absent_fraction), ("absent", config.absent_fraction)],
            stream_rng(config.seed, config.split + "#pairs-images", 0),
        )
        self.absent: list[bool] = [label == "absent" for label in images]

    def __len__(self) -> int:
        return self.config.n_pairs

    def fingerprint(self) -> str:
        """Hash of the config (the data is a pure function of it)."""
        return config_fingerprint(self.name, self.config)

    def pairs(self, ctx: Context | None = None) -> LazyItems[PreferencePair]:
        """All pairs as a lazy sequence (``ctx`` is not needed: the data is static)."""
        return LazyItems(len(self), self.pair)

    def scene(self, i: int) -> Scene:
        """The scene shown by pair ``i``."""
        cfg = self.config
        make = self.world.absent_scene if self.absent[i] else self.world.scene
        return make(cfg.split, cfg.seed, i)

    def pair(self, i: int) -> PreferencePair:
        """Pair ``i``."""
        cfg = self.config
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        scene = self.scene(i)
        rng = stream_rng(cfg.seed, cfg.split + "#pairs-inject", i)
        injection = inject(self.world, scene.objects, cfg.mode, rng, cfg.fallback)
        kind = self.kinds[i]
        meta: dict[str, Any] = {
            "kind": kind,
            "scene": scene.key,
            "absent_set": scene.absent,
            "truth": [o.name for o in scene.objects],
            "mode": injection.mode,
            "injected": injection.added.name,
            "removed": injection.removed.name if injection.removed else None,
        }
        if kind == "caption":
            prompt, chosen, rejected = cfg.prompt, scene.caption, self.world.caption(injection.objects)
        else:
            if rng.random() < cfg.yes_no_positive_fraction:
                obj = scene.objects[int(rng.integers(len(scene.objects)))]
                chosen, rejected = cfg.yes_answer, cfg.no_answer
                meta.update(mode=None, injected=None, removed=None)  # nothing injected into a positive question
            else:
                obj, chosen, rejected = injection.added, cfg.no_answer, cfg.yes_answer
            prompt = question(cfg.question_template, obj)
            meta.update(object=obj.name, label=chosen == cfg.yes_answer)
        if chosen == rejected:  # impossible by construction; guards the contract
            raise RuntimeError(f"{self.name} pair {i}: chosen equals rejected")
        return PreferencePair(
            id=f"{self.name}:{cfg.seed}:{i}",
            prompt=prompt,
            chosen=chosen,
            rejected=rejected,
            images=[self.world.image_ref(scene)],
            source=self.name,
            meta=meta,
        )


def make_sft_source(config: ShapesSFTConfig) -> ShapesSFTSource:
    """Factory of ``shapes-sft``."""
    return ShapesSFTSource(config)


def make_pairs_source(config: ShapesPairsConfig) -> ShapesPairsSource:
    """Factory of ``shapes-pairs``."""
    return ShapesPairsSource(config)
