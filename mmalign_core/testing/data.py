"""Synthetic inputs for contract checks and plugin tests.

Everything here is small, deterministic and offline. Only
:func:`make_loss_inputs` needs torch, and imports it when called.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from ..protocols import Context, LossInputs, PairLogps
from ..types import GenerationRequest, ImageRef, PreferencePair, SFTExample

if TYPE_CHECKING:  # pragma: no cover
    import PIL.Image

_PALETTE = [(215, 45, 45), (40, 170, 70), (45, 80, 215), (230, 205, 40), (150, 60, 190), (20, 20, 20)]


def make_image(index: int = 0, size: int = 16) -> "PIL.Image.Image":
    """A small RGB image: a coloured square on grey, different for each ``index``."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (128, 128, 128))
    colour = _PALETTE[index % len(_PALETTE)]
    margin = max(1, size // 4)
    ImageDraw.Draw(image).rectangle([margin, margin, size - margin - 1, size - margin - 1], fill=colour)
    return image


def make_image_ref(index: int = 0, size: int = 16) -> ImageRef:
    """A lazy :class:`~mmalign_core.types.ImageRef` of :func:`make_image` (decoded only on ``load()``)."""
    return ImageRef(lambda: make_image(index, size), key=f"synthetic:{index}:{size}")


def make_pairs(n: int = 4, *, images: bool = True, image_size: int = 16) -> list[PreferencePair]:
    """``n`` valid preference pairs (distinct ids; chosen differs from rejected)."""
    names = ["red square", "green square", "blue square", "yellow square", "purple square", "black square"]
    pairs = []
    for i in range(n):
        true, false = names[i % len(names)], names[(i + 1) % len(names)]
        pairs.append(
            PreferencePair(
                id=f"synthetic-{i}",
                prompt="Describe the image.",
                chosen=f"A {true}.",
                rejected=f"A {false}.",
                images=[make_image_ref(i, image_size)] if images else [],
                source="synthetic",
            )
        )
    return pairs


def make_sft_examples(n: int = 4, *, images: bool = True, image_size: int = 16) -> list[SFTExample]:
    """``n`` valid supervised examples."""
    return [
        SFTExample(id=p.id, prompt=p.prompt, response=p.chosen, images=p.images, source=p.source)
        for p in make_pairs(n, images=images, image_size=image_size)
    ]


def make_requests(n: int = 4, *, prompt: str = "Describe the image.", image_size: int = 16) -> list[GenerationRequest]:
    """``n`` generation requests with one synthetic image each."""
    return [GenerationRequest(prompt=prompt, images=[make_image_ref(i, image_size)]) for i in range(n)]


def make_context(directory: Optional[Path | str] = None, *, seed: int = 0) -> Context:
    """A :class:`~mmalign_core.protocols.Context` writing under ``directory`` (a new temporary one by default).

    ``output_dir`` is ``<directory>/output`` and ``cache_dir`` is
    ``<directory>/cache``; both exist on return. Log lines are printed.
    """
    root = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="mmalign-test-"))
    out, cache = root / "output", root / "cache"
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    return Context(seed=seed, output_dir=out, cache_dir=cache)


def make_loss_inputs(
    batch_size: int = 4,
    *,
    rejected: bool = True,
    reference: bool = True,
    seed: int = 0,
    pairs: Optional[Sequence[PreferencePair] | Sequence[SFTExample]] = None,
) -> LossInputs:
    """Random but plausible :class:`~mmalign_core.protocols.LossInputs`, shaped as the runner builds them.

    Policy log-probs are float32 leaves with ``requires_grad=True`` (summed
    log-probs in [-31, -1], token counts in [1, 23]); the reference, when
    asked for, is the policy detached plus small noise and shares its token
    counts. ``rejected=False`` gives ``rejected=None`` sides, as in an SFT
    stage; ``reference=False`` gives ``reference=None``. ``pairs`` defaults
    to synthetic :class:`PreferencePair` (or :class:`SFTExample` when
    ``rejected`` is false).
    """
    import torch

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    gen = torch.Generator().manual_seed(seed)

    def logps() -> "torch.Tensor":
        return -(torch.rand(batch_size, generator=gen) * 30 + 1)

    def tokens() -> "torch.Tensor":
        return torch.randint(1, 24, (batch_size,), generator=gen)

    chosen, chosen_tokens = logps(), tokens()
    rej = logps() if rejected else None
    rej_tokens = tokens() if rejected else None
    policy = PairLogps(
        chosen=chosen.clone().requires_grad_(True),
        rejected=rej.clone().requires_grad_(True) if rej is not None else None,
        chosen_tokens=chosen_tokens,
        rejected_tokens=rej_tokens,
    )
    ref = None
    if reference:
        ref = PairLogps(
            chosen=chosen + torch.randn(batch_size, generator=gen),
            rejected=rej + torch.randn(batch_size, generator=gen) if rej is not None else None,
            chosen_tokens=chosen_tokens.clone(),
            rejected_tokens=rej_tokens.clone() if rej_tokens is not None else None,
        )
    if pairs is None:
        pairs = make_pairs(batch_size) if rejected else make_sft_examples(batch_size)
    return LossInputs(policy=policy, reference=ref, pairs=pairs)


__all__ = [
    "make_image",
    "make_image_ref",
    "make_pairs",
    "make_sft_examples",
    "make_requests",
    "make_context",
    "make_loss_inputs",
]
