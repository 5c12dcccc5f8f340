"""Fixtures of the online tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmalign_core.protocols import Context


@pytest.fixture()
def ctx(tmp_path: Path) -> Context:
    out = tmp_path / "data"
    out.mkdir()
    return Context(seed=0, output_dir=out, cache_dir=tmp_path / "cache", log=lambda s: None)
