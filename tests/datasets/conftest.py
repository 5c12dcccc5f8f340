"""Fixtures of the dataset-loader tests: an isolated plugin manager and a context with a private cache."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmalign_core.manager import Plugins
from mmalign_core.protocols import Context
from mmalign_core.testing import make_context, plugins_with


@pytest.fixture(scope="session")
def datasets_plugins() -> Plugins:
    return plugins_with("mmalign_datasets.plugin", name="datasets")


@pytest.fixture
def entry(datasets_plugins: Plugins):
    """``entry(name)``: the registered entry of a loader."""
    return lambda name: datasets_plugins.resolve("preference_source", name)


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return make_context(tmp_path / "ctx")


@pytest.fixture
def build(entry, ctx):
    """``build(name, **config)`` -> (source, pairs as a list)."""

    def _build(name: str, **config):
        source = entry(name).build(config)
        return source, list(source.pairs(ctx))

    return _build
