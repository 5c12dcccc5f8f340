"""The pytest fixtures of the testing kit (collected when a conftest opts in)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from ..manager import Plugins, create_plugins
from ..protocols import Context
from .data import make_context
from .plugins import plugins_with


@pytest.fixture
def mmalign_plugins() -> Plugins:
    """An isolated plugin manager with only the core's built-in plugin (no entry points)."""
    return create_plugins()


@pytest.fixture
def register_plugin() -> Callable[..., Plugins]:
    """A function ``register(plugin, name=None, *, others=(), strict=True) -> Plugins``.

    Each call returns a new isolated manager holding the core built-ins and
    ``plugin`` (see :func:`mmalign_core.testing.plugins_with`); nothing else
    in the process sees it.
    """
    return plugins_with


@pytest.fixture
def mmalign_context(tmp_path: Path) -> Context:
    """A :class:`~mmalign_core.protocols.Context` writing under the test's ``tmp_path`` (seed 0)."""
    return make_context(tmp_path / "mmalign")


__all__ = ["mmalign_plugins", "register_plugin", "mmalign_context"]
