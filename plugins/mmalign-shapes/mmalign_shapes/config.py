"""Configuration classes of the shapes components (light: pydantic and the text helpers only).

All four components embed the same :class:`WorldConfig`, so one JSON block
describes the world a model is trained and evaluated on. The metric names the
evaluators report are fixed here too, so the entry records can declare them
without importing the evaluators.
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from mmalign_core import ComponentConfig

from .text import RESERVED_WORDS, plural

#: Shapes the renderer can draw.
SUPPORTED_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon")
ShapeName = Literal["circle", "square", "triangle", "diamond", "star", "cross", "hexagon"]

Channel = Annotated[int, Field(ge=0, le=255)]
RGB = tuple[Channel, Channel, Channel]

DEFAULT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 45, 45),
    "green": (40, 170, 70),
    "blue": (45, 80, 215),
    "yellow": (230, 205, 40),
}
DEFAULT_SHAPES: list[str] = ["circle", "square", "triangle", "diamond"]
# Each partner comes after its anchor in the canonical (colour-major) order, so a
# caption that has just named the anchor is where the language prior pulls the
# partner in.
DEFAULT_ANCHORS: list[tuple[str, str]] = [
    ("red circle", "blue square"),
    ("green triangle", "yellow circle"),
    ("red diamond", "green square"),
    ("blue triangle", "yellow diamond"),
]

_SPLIT_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
#: Split names starting with this prefix are reserved for the evaluators.
EVAL_SPLIT_PREFIX = "eval"

POPE_SPLITS: tuple[str, ...] = ("random", "popular", "adversarial")
POPE_SPLIT_METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "yes_ratio")
#: Exactly the metrics ``shapes-pope`` reports (the means over the three splits first).
POPE_METRICS: tuple[str, ...] = ("pope_f1", "pope_accuracy", "pope_yes_ratio") + tuple(
    f"pope_{split}_{metric}" for split in POPE_SPLITS for metric in POPE_SPLIT_METRICS
)
#: Exactly the metrics ``shapes-chair`` reports (the language-prior probe first).
CHAIR_METRICS: tuple[str, ...] = (
    "partner_hallucination",
    "control_hallucination",
    "chair_i",
    "chair_s",
    "recall",
    "objects_per_caption",
    "absent_chair_i",
    "absent_recall",
    "absent_objects_per_caption",
)


class WorldConfig(ComponentConfig):
    """The synthetic world: vocabulary, co-occurrence bias and rendering.

    The canonical object order (used in every caption) is colour-major: colours
    in the order of ``colours``, then shapes in the order of ``shapes``.
    """

    image_size: int = Field(48, ge=24, le=512, description="Width and height of the square RGB images, in pixels.")
    colours: dict[str, RGB] = Field(
        default_factory=lambda: dict(DEFAULT_COLOURS),
        description="Colour name -> base RGB. The order of the keys is the canonical order of colours in captions.",
    )
    shapes: list[ShapeName] = Field(
        default_factory=lambda: list(DEFAULT_SHAPES),
        description=f"Shape names (any of {', '.join(SUPPORTED_SHAPES)}), in their canonical caption order.",
    )
    min_objects: int = Field(1, ge=1, le=9, description="Fewest objects drawn at random per image.")
    max_objects: int = Field(
        3, ge=1, le=9,
        description="Most objects per image (3x3 grid, so at most 9); a forced partner never exceeds it.",
    )
    object_size: tuple[int, int] = Field(
        (9, 14), description="Inclusive range of object sizes in pixels; the maximum must fit a grid cell (image_size // 3)."
    )
    anchors: list[tuple[str, str]] = Field(
        default_factory=lambda: list(DEFAULT_ANCHORS),
        description="Co-occurrence pairs [anchor, partner], objects written 'colour shape'; no object may appear in two pairs.",
    )
    cooccurrence: float = Field(
        0.9, ge=0.0, le=1.0,
        description="Probability that the partner is present given its anchor is (exact in the natural distribution).",
    )
    background: tuple[Channel, Channel] = Field(
        (170, 245), description="Inclusive range of the uniform grey background level per image."
    )
    colour_jitter: int = Field(20, ge=0, le=128, description="Per-channel uniform jitter (+/-) of each object's colour.")
    noise_std: float = Field(20.0, ge=0.0, le=128.0, description="Standard deviation of the Gaussian pixel noise (0-255 scale).")

    @field_validator("colours")
    @classmethod
    def _check_colours(cls, value: dict[str, tuple[int, int, int]]) -> dict[str, tuple[int, int, int]]:
        if len(value) < 2:
            raise ValueError("at least two colours are needed")
        for name in value:
            if not re.fullmatch(r"[a-z]+", name):
                raise ValueError(f"colour name {name!r} must be one lower-case word")
            if name in RESERVED_WORDS:
                raise ValueError(f"colour name {name!r} is a reserved word of the caption parser")
        return value

    @field_validator("shapes")
    @classmethod
    def _check_shapes(cls, value: list[str]) -> list[str]:
        if len(value) < 2:
            raise ValueError("at least two shapes are needed")
        if len(set(value)) != len(value):
            raise ValueError("shape names must be distinct")
        return value

    @model_validator(mode="after")
    def _check_world(self) -> "WorldConfig":
        words = set(self.colours) & ({*self.shapes} | {plural(s) for s in self.shapes})
        if words:
            raise ValueError(f"names used both as colour and shape: {sorted(words)}")
        if self.min_objects > self.max_objects:
            raise ValueError("min_objects must not exceed max_objects")
        if self.max_objects > len(self.colours) * len(self.shapes):
            raise ValueError("max_objects exceeds the number of distinct objects")
        lo, hi = self.object_size
        if not 4 <= lo <= hi <= self.image_size // 3:
            raise ValueError(f"object_size must satisfy 4 <= min <= max <= image_size // 3 ({self.image_size // 3})")
        if self.background[0] > self.background[1]:
            raise ValueError("background range must be (low, high)")
        seen: set[str] = set()
        for pair in self.anchors:
            for name in pair:
                parts = name.split(" ")
                if len(parts) != 2 or parts[0] not in self.colours or parts[1] not in self.shapes:
                    raise ValueError(f"anchor object {name!r} is not 'colour shape' of this world")
                if name in seen:
                    raise ValueError(f"object {name!r} appears in more than one anchor pair (or twice in one)")
                seen.add(name)
        return self


def _check_split(value: str) -> str:
    if value.startswith(EVAL_SPLIT_PREFIX):
        raise ValueError(f"split names starting with {EVAL_SPLIT_PREFIX!r} are reserved for the evaluators")
    return value


def _check_template(value: str) -> str:
    if "{object}" not in value:
        raise ValueError("the question template must contain '{object}'")
    return value


class _WorldQuestions(ComponentConfig):
    """Rules shared by the configs that draw scenes of a world and ask yes/no questions about them.

    Each subclass declares its own fields (their descriptions differ); a rule applies where its field exists.
    """

    @field_validator("split", check_fields=False)
    @classmethod
    def _split(cls, value: str) -> str:
        return _check_split(value)

    @field_validator("question_template", check_fields=False)
    @classmethod
    def _template(cls, value: str) -> str:
        return _check_template(value)

    @model_validator(mode="after")
    def _check_answers_and_anchors(self) -> "_WorldQuestions":
        yes, no = getattr(self, "yes_answer", None), getattr(self, "no_answer", None)
        if yes is not None and yes == no:
            raise ValueError("yes_answer and no_answer must differ")
        world = getattr(self, "world", None)
        if getattr(self, "absent_fraction", 0) > 0 and world is not None and not world.anchors:
            raise ValueError("absent_fraction > 0 needs at least one anchor pair in the world")
        return self


class ShapesSFTConfig(_WorldQuestions):
    """Supervised data: captions, yes/no and counting questions, and text-only captions."""

    world: WorldConfig = Field(default_factory=WorldConfig, description="The shapes world (share it with the evaluators).")
    n_examples: int = Field(20000, ge=1, le=10_000_000, description="Number of examples (example i shows scene i of the split).")
    seed: int = Field(0, ge=0, description="Seed of the scenes and of the question choices.")
    split: str = Field("train", pattern=_SPLIT_PATTERN, description="Scene stream name; 'eval*' names are reserved.")
    caption_fraction: float = Field(0.42, ge=0, le=1, description="Share of image captioning examples.")
    yes_no_fraction: float = Field(0.28, ge=0, le=1, description="Share of yes/no existence questions about the image.")
    count_fraction: float = Field(0.05, ge=0, le=1, description="Share of counting questions about the image.")
    text_only_fraction: float = Field(
        0.25, ge=0, le=1,
        description="Share of text-only examples (no image): the caption prompt answered with a caption of the "
        "world's distribution, which teaches the language model the co-occurrence prior.",
    )
    yes_no_positive_fraction: float = Field(0.5, ge=0, le=1, description="Probability that a yes/no question asks about a present object.")
    partner_negative_fraction: float = Field(
        0.5, ge=0, le=1,
        description="For a negative question on an image with an anchor but not its partner: probability of asking about that partner.",
    )
    caption_prompt: str = Field("Describe the image.", min_length=1, description="Prompt of the captioning examples.")
    text_only_prompt: str = Field(
        "Describe the image.", min_length=1,
        description="Prompt of the text-only examples; the caption prompt by default, so the prior is learnt "
        "under the very prompt that image-masked generation sees.",
    )
    question_template: str = Field("Is there a {object} in the image?", description="Yes/no question; '{object}' becomes e.g. 'red circle'.")
    count_prompt: str = Field("How many shapes are in the image?", min_length=1, description="Prompt of the counting examples.")
    yes_answer: str = Field("Yes.", min_length=1, description="Response for a present object.")
    no_answer: str = Field("No.", min_length=1, description="Response for an absent object.")

    @model_validator(mode="after")
    def _check_fractions(self) -> "ShapesSFTConfig":
        total = self.caption_fraction + self.yes_no_fraction + self.count_fraction + self.text_only_fraction
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"the four example fractions must sum to 1 (they sum to {total:g})")
        return self


class ShapesPairsConfig(_WorldQuestions):
    """Preference pairs: the true caption against a caption with one injected hallucination."""

    world: WorldConfig = Field(default_factory=WorldConfig, description="The shapes world (share it with the evaluators).")
    n_pairs: int = Field(2000, ge=1, le=10_000_000, description="Number of pairs (pair i shows scene i of the split).")
    seed: int = Field(0, ge=0, description="Seed of the scenes and of the injections.")
    split: str = Field("align", pattern=_SPLIT_PATTERN, description="Scene stream name; 'eval*' names are reserved.")
    mode: Literal["partner", "add", "swap", "mixed"] = Field(
        "mixed",
        description="Injection: 'partner' adds the absent partner of a present anchor; 'add' adds a random absent "
        "object; 'swap' changes one object's colour or shape; 'mixed' picks one of the three per pair.",
    )
    fallback: Literal["add", "swap"] = Field("add", description="Injection used where 'partner' is impossible (no anchor without its partner).")
    absent_fraction: float = Field(
        0.0, ge=0, le=1,
        description="Share of pairs whose image shows an anchor without its partner (the rest follow the natural distribution).",
    )
    yes_no_fraction: float = Field(
        0.0, ge=0, le=1,
        description="Share of yes/no pairs instead of caption pairs ('Is there X?': the true answer against the false one).",
    )
    yes_no_positive_fraction: float = Field(
        0.5, ge=0, le=1,
        description="Probability that a yes/no pair asks about a present object (else about the injected absent object).",
    )
    prompt: str = Field("Describe the image.", min_length=1, description="Prompt of the caption pairs.")
    question_template: str = Field("Is there a {object} in the image?", description="Yes/no question; '{object}' becomes e.g. 'red circle'.")
    yes_answer: str = Field("Yes.", min_length=1, description="The 'yes' answer text.")
    no_answer: str = Field("No.", min_length=1, description="The 'no' answer text.")


class ShapesPopeConfig(_WorldQuestions):
    """POPE-style existence probe with random, popular and adversarial negatives."""

    world: WorldConfig = Field(default_factory=WorldConfig, description="The shapes world (the one the model was trained on).")
    n_images: int = Field(200, ge=1, le=1_000_000, description="Held-out images; each gives its present objects as positives and as many negatives per split.")
    seed: int = Field(0, ge=0, description="Seed of the evaluation images and the random negatives.")
    absent_fraction: float = Field(
        0.5, ge=0, le=1,
        description="Share of images showing an anchor without its partner, where the adversarial negative is that partner.",
    )
    stats_scenes: int = Field(
        5000, ge=100,
        description="Scenes sampled from the natural distribution to rank objects by frequency (popular) and co-occurrence (adversarial).",
    )
    decision: Literal["logprob", "generate"] = Field(
        "logprob",
        description="'logprob': answer yes iff log p(yes_answer) > log p(no_answer); 'generate': greedy answer read by "
        "the yes/no parser (no yes/no word counts as no).",
    )
    question_template: str = Field("Is there a {object} in the image?", description="Yes/no question; '{object}' becomes e.g. 'red circle'.")
    yes_answer: str = Field("Yes.", min_length=1, description="The 'yes' continuation scored in logprob mode (match the SFT data).")
    no_answer: str = Field("No.", min_length=1, description="The 'no' continuation scored in logprob mode (match the SFT data).")
    max_new_tokens: int = Field(8, ge=1, description="Answer length in generate mode.")
    batch_size: int = Field(32, ge=1, description="Requests per model call.")


class ShapesChairConfig(ComponentConfig):
    """Caption hallucination (CHAIR, recall) and the partner-hallucination probe."""

    world: WorldConfig = Field(default_factory=WorldConfig, description="The shapes world (the one the model was trained on).")
    n_images: int = Field(200, ge=1, le=1_000_000, description="Held-out in-distribution images.")
    n_absent_images: int = Field(200, ge=1, le=1_000_000, description="Held-out images showing an anchor without its partner.")
    seed: int = Field(0, ge=0, description="Seed of the evaluation images.")
    prompt: str = Field("Describe the image.", min_length=1, description="Captioning prompt.")
    max_new_tokens: int = Field(24, ge=1, description="Caption length limit (greedy decoding).")
    batch_size: int = Field(32, ge=1, description="Requests per model call.")

    @model_validator(mode="after")
    def _check_chair(self) -> "ShapesChairConfig":
        if not self.world.anchors:
            raise ValueError("shapes-chair needs at least one anchor pair in the world (for the absent set)")
        return self
