"""Hallucination injection: turn a true object set into a plausible false one.

Every injection puts exactly one object that is absent from the image into the
set, so the resulting caption always differs from the true one and its only
error is known.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from .text import ShapeObject
from .world import ShapesWorld

InjectionMode = Literal["partner", "add", "swap", "mixed"]
_MIXED_CHOICES: tuple[str, ...] = ("partner", "add", "swap")


@dataclass(frozen=True)
class Injection:
    """The result of one injection.

    Attributes:
        objects: the false object set, in canonical order.
        mode: the mode actually applied ("partner", "add" or "swap"; after fallback).
        added: the absent object put into the set.
        removed: the true object taken out ("swap" only).
    """

    objects: tuple[ShapeObject, ...]
    mode: str
    added: ShapeObject
    removed: ShapeObject | None = None


def inject(
    world: ShapesWorld,
    truth: Sequence[ShapeObject],
    mode: InjectionMode,
    rng: np.random.Generator,
    fallback: Literal["add", "swap"] = "add",
) -> Injection:
    """Inject one hallucinated object into ``truth``.

    * ``partner``: add the partner of a present anchor whose partner is absent
      (the error the co-occurrence prior makes); where there is none, use ``fallback``;
    * ``add``: add an absent object chosen uniformly;
    * ``swap``: replace a present object by one that differs in colour or in shape
      (chosen at random) and is absent; falls back to ``add`` if no such object exists;
    * ``mixed``: one of the three above, uniformly.
    """
    present = set(truth)
    if not present:
        raise ValueError("cannot inject into an empty scene")
    if mode == "mixed":
        mode = _MIXED_CHOICES[int(rng.integers(len(_MIXED_CHOICES)))]  # type: ignore[assignment]
    if mode == "partner":
        partners = world.absent_partners(truth)
        if partners:
            added = partners[int(rng.integers(len(partners)))]
            return Injection(world.canonical([*truth, added]), "partner", added)
        mode = fallback
    if mode == "swap":
        swapped = _swap(world, truth, present, rng)
        if swapped is not None:
            return swapped
        mode = "add"
    if mode == "add":
        absent = [o for o in world.objects if o not in present]
        if not absent:
            raise ValueError("every object of the world is present; nothing can be added")
        added = absent[int(rng.integers(len(absent)))]
        return Injection(world.canonical([*truth, added]), "add", added)
    raise ValueError(f"unknown injection mode {mode!r}")


def _swap(
    world: ShapesWorld, truth: Sequence[ShapeObject], present: set[ShapeObject], rng: np.random.Generator
) -> Injection | None:
    order = list(truth)
    for i in rng.permutation(len(order)):
        removed = order[int(i)]
        by_colour = [ShapeObject(c, removed.shape) for c in world.colours if c != removed.colour]
        by_shape = [ShapeObject(removed.colour, s) for s in world.shapes if s != removed.shape]
        options = [by_colour, by_shape]
        if rng.random() < 0.5:
            options.reverse()
        for group in options:
            candidates = [o for o in group if o not in present]
            if candidates:
                added = candidates[int(rng.integers(len(candidates)))]
                rest = [o for o in truth if o != removed]
                return Injection(world.canonical([*rest, added]), "swap", added, removed)
    return None
