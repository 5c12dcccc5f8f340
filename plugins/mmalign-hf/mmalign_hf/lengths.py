"""Too-long samples: sequence lengths from image sizes alone, and dropping (or refusing) samples over the
length budget before batching."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from mmalign_core.types import ImageRef, PreferencePair, SFTExample

from .encoding import SequenceTooLong


class _Subset(Sequence):
    """A view of some items of a sequence (keeps lazy data sets lazy)."""

    def __init__(self, items: Sequence[Any], index: list[int]):
        self._items, self._index = items, index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._items[j] for j in self._index[i]]
        return self._items[self._index[i]]


def _blank_like(ref: ImageRef, cache: dict) -> Any:
    """A blank image of the same size as ``ref`` (reads only the header of files and bytes)."""
    from PIL import Image

    src = ref.source
    size = None
    try:
        if isinstance(src, (str, Path)):
            with Image.open(src) as im:
                size = im.size
        elif isinstance(src, (bytes, bytearray)):
            with Image.open(io.BytesIO(src)) as im:
                size = im.size
    except Exception:  # noqa: BLE001 - fall back to a full decode, which raises a proper error
        size = None
    if size is None:
        size = ref.load().size
    if size not in cache:
        cache[size] = Image.new("RGB", size, (127, 127, 127))
    return cache[size]


class LengthFilter:
    """:meth:`sequence_lengths` and :meth:`filter_too_long` (a part of :class:`~mmalign_hf.family.HFFamilyModel`)."""

    max_length: int | None
    on_too_long: str
    last_filter: dict[str, Any]

    def sequence_lengths(self, examples: Sequence[PreferencePair | SFTExample], *, chunk_size: int = 32) -> list[int]:
        """Tokens of the longest sequence each example produces (prompt with expanded image tokens + answer + eos).

        Only image sizes are read (file headers), not pixels: the token counts of every supported
        family depend on the size alone. Image-token invariants are checked on the way.
        """
        blanks: dict = {}
        jobs: list[tuple[int, str, list[ImageRef], list[str], str]] = []  # (example, prompt, images, answers, name)
        for k, ex in enumerate(examples):
            if isinstance(ex, PreferencePair):
                answers = [ex.chosen, ex.rejected, *ex.extra_rejected]
                if ex.rejected_images is not None:
                    jobs.append((k, ex.prompt, list(ex.images), [ex.chosen, *ex.extra_rejected], ex.id))
                    jobs.append((k, ex.prompt, list(ex.rejected_images), [ex.rejected], f"{ex.id}/rejected"))
                    continue
            else:
                answers = [ex.response]
            jobs.append((k, ex.prompt, list(ex.images), answers, ex.id))
        lengths = [0] * len(examples)
        for s in range(0, len(jobs), chunk_size):
            chunk = jobs[s : s + chunk_size]
            pr = self._process_checked([j[1] for j in chunk], [[_blank_like(r, blanks) for r in j[2]] for j in chunk],
                                       [str(j[4]) for j in chunk])
            for (k, _, _, answers, name), p_ids in zip(chunk, pr.ids):
                self._check_answers(answers, [str(name)] * len(answers))
                for a in answers:
                    lengths[k] = max(lengths[k], len(p_ids) + len(self.answer_ids(a)))
        return lengths

    def filter_too_long(self, examples: Sequence[PreferencePair | SFTExample]) -> tuple[Sequence[Any], list[str]]:
        """Drop (``on_too_long: drop``) or refuse (``fail``) examples longer than ``max_length``, before batching.

        Returns ``(kept, dropped_ids)``; ``kept`` is a view of ``examples`` in their order. Also raises
        :class:`~mmalign_hf.checks.ImageTokenMismatch` for a sample whose image tokens cannot match its images.
        """
        if self.max_length is None:
            self.last_filter = {"checked": len(examples), "dropped": 0, "max_length": None}
            return examples, []
        lengths = self.sequence_lengths(examples)
        over = [i for i, n in enumerate(lengths) if n > self.max_length]
        if over and self.on_too_long == "fail":
            shown = ", ".join(f"{examples[i].id} ({lengths[i]} tokens)" for i in over[:5])
            more = f" and {len(over) - 5} more" if len(over) > 5 else ""
            raise SequenceTooLong(
                f"{len(over)} of {len(examples)} samples exceed the length budget max_length={self.max_length} "
                f"(image tokens included, never truncated): {shown}{more}; raise max_length or set on_too_long: drop"
            )
        drop = set(over)
        kept = _Subset(examples, [i for i in range(len(examples)) if i not in drop])
        dropped_ids = [str(examples[i].id) for i in over]
        self.last_filter = {"checked": len(examples), "dropped": len(dropped_ids), "max_length": self.max_length,
                            "longest": max(lengths, default=0)}
        return kept, dropped_ids
