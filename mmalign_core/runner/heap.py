"""Keeping Python's cyclic garbage collector off the long-lived objects while a stage's hot loop runs."""
from __future__ import annotations

import contextlib
import gc
from typing import Iterator

_depth: list[int] = []  # nesting: only the outermost block freezes and unfreezes

@contextlib.contextmanager
def steady_heap() -> Iterator[None]:
    """While a loop runs (training, evaluation, a generating source), the cyclic GC leaves the setup's objects alone.

    A stage starts with hundreds of thousands of long-lived objects (the libraries, the model, the data);
    every full collection walks them all -- about 0.2 s on the tiny model's 2-core machine, several times
    per hundred steps, stalling the step it lands in (a GPU's queue too). ``gc.freeze`` moves them out of
    the collector's sight; objects made during the loop are collected as usual. On exit they are handed
    back, so garbage among them is still collected after the stage. Blocks nest (the outermost one counts).
    """
    outermost = not _depth
    _depth.append(1)
    if outermost:
        gc.freeze()
    try:
        yield
    finally:
        _depth.pop()
        if outermost:
            gc.unfreeze()


__all__ = ["steady_heap"]
