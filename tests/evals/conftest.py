"""Fixtures of the benchmark-evaluator tests (the fixture files themselves are written by ``evals_data``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmalign_core.testing import mmalign_context, mmalign_plugins, register_plugin  # noqa: F401

pytest.importorskip("mmalign_evals", reason="mmalign-evals is not installed")


@pytest.fixture
def evals(register_plugin):
    """An isolated manager holding the evals plugin (judges resolve through the installed plugins)."""
    return register_plugin("mmalign_evals.plugin", name="evals")


@pytest.fixture
def ctx(tmp_path: Path):
    from mmalign_core.testing import make_context

    return make_context(tmp_path / "ctx")
