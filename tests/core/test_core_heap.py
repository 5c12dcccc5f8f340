"""steady_heap: the setup's objects are frozen for the cyclic GC while a loop runs, and handed back after."""
from __future__ import annotations

import gc

import pytest

from mmalign_core.runner.heap import steady_heap


def test_setup_objects_are_frozen_inside_and_handed_back_after_even_on_error() -> None:
    gc.unfreeze()
    with steady_heap():
        assert gc.get_freeze_count() > 0
        with steady_heap():  # nested: the outer block stays frozen when the inner one ends
            pass
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError):
        with steady_heap():
            raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


def test_cyclic_garbage_made_inside_is_still_collected() -> None:
    import weakref

    class Node:
        pass

    with steady_heap():
        a, b = Node(), Node()
        a.other, b.other = b, a  # a reference cycle: only the cyclic collector frees it
        ref = weakref.ref(a)
        del a, b
        gc.collect()
        assert ref() is None
