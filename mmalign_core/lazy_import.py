"""``torch`` imported where a core module first uses it, not when the module is imported.

The core's CLI, spec validation and plugin discovery never need torch; the runner's training loop and
reference cache do, inside a run. A module that uses torch only inside functions binds
``torch = torch_on_first_use(globals())`` in place of ``import torch``: the first attribute read imports
torch and puts the real module in the name's place, so later reads are plain module lookups.
"""
from __future__ import annotations

from typing import Any, MutableMapping


class TorchOnFirstUse:
    """Stands in for the ``torch`` module of one module namespace until first used."""

    def __init__(self, namespace: MutableMapping[str, Any], name: str = "torch") -> None:
        self._namespace, self._name = namespace, name

    def __getattr__(self, attr: str) -> Any:
        import torch

        self._namespace[self._name] = torch
        return getattr(torch, attr)


def torch_on_first_use(namespace: MutableMapping[str, Any]) -> Any:
    """The stand-in to bind as ``torch`` in ``namespace`` (a module's ``globals()``)."""
    return TorchOnFirstUse(namespace)
