"""Canonical data types shared by every component.

Nothing here imports torch: sources, evaluators and the CLI can use these
types without the training stack.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Union

from .errors import MmalignError

if TYPE_CHECKING:  # pragma: no cover - Pillow is imported only when an image is loaded
    import PIL.Image

ImageLike = Union[str, Path, bytes, "PIL.Image.Image", Callable[[], "PIL.Image.Image"]]


class ImageTooLarge(MmalignError, ValueError):
    """An image whose declared size is beyond what PIL decodes safely (a decompression bomb)."""


class ImageRef:
    """A lazily loaded image.

    Holds a path, raw encoded bytes, an in-memory PIL image or a zero-argument
    callable returning one. Nothing is decoded until :meth:`load` is called, so
    a source with 100k pairs does not keep 100k decoded images in memory.
    """

    __slots__ = ("_src", "_key")

    def __init__(self, src: ImageLike, key: str | None = None):
        self._src = src
        self._key = key

    @property
    def key(self) -> str:
        """A stable identity used for caching and fingerprints."""
        if self._key is not None:
            return self._key
        src = self._src
        if isinstance(src, (str, Path)):
            return f"path:{src}"
        if isinstance(src, (bytes, bytearray)):
            return "sha1:" + hashlib.sha1(src).hexdigest()
        return f"obj:{id(src)}"

    @property
    def source(self) -> Any:
        return self._src

    def load(self) -> "PIL.Image.Image":
        """The image as RGB.

        Raises:
            FileNotFoundError: a path that is not a file.
            ImageTooLarge: PIL refuses the image as a decompression bomb (its header declares too many pixels).
        """
        from PIL import Image

        src = self._src
        try:
            if isinstance(src, (str, Path)):
                path = Path(src)
                if not path.is_file():
                    raise FileNotFoundError(f"image file not found: {path}")
                with Image.open(path) as im:
                    return im.convert("RGB")
            if isinstance(src, (bytes, bytearray)):
                with Image.open(io.BytesIO(src)) as im:
                    return im.convert("RGB")
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(f"image {self.key[:200]} is refused as a decompression bomb: {exc}") from None
        if callable(src) and not isinstance(src, Image.Image):
            return src().convert("RGB")
        return src.convert("RGB")

    def __repr__(self) -> str:
        return f"ImageRef({self.key})"


@dataclass
class PreferencePair:
    """One preference example: (images, prompt) with a chosen and a rejected answer.

    ``extra_rejected`` holds further rejected answers for losses that average
    several negatives (e.g. an external rejected answer plus a policy-made one).
    ``rejected_images``, when set, replaces the images on the rejected side
    (image-corruption methods).
    """

    id: str
    prompt: str
    chosen: str
    rejected: str
    images: list[ImageRef] = field(default_factory=list)
    rejected_images: list[ImageRef] | None = None
    extra_rejected: list[str] = field(default_factory=list)
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SFTExample:
    """A supervised example: (images, prompt) -> response. ``images`` may be empty (text only)."""

    id: str
    prompt: str
    response: str
    images: list[ImageRef] = field(default_factory=list)
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationRequest:
    """What an evaluator or sampler asks a model to continue."""

    prompt: str
    images: list[ImageRef] = field(default_factory=list)
    # Text placed at the start of the assistant turn; generation continues after it.
    answer_prefix: str = ""


@dataclass
class EvalResult:
    """The outcome of one evaluator.

    ``metrics`` maps metric name -> value; ``higher_is_better`` says how to read
    each one; ``records`` are per-sample rows written to disk by the runner.
    """

    metrics: dict[str, float]
    higher_is_better: dict[str, bool]
    n: int
    records: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
