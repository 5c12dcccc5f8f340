"""Tiny checkpoints of every supported family, built once per session and loaded through ``hf-vlm``."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_families import BUILDERS  # noqa: E402


@pytest.fixture(scope="session")
def family_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-families")


@pytest.fixture(scope="session")
def family_dir(family_root: Path):
    """``family_dir(name)`` -> the folder of that family's tiny checkpoint (built on first use)."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = BUILDERS[name](family_root / name)
        return built[name]

    return get


@pytest.fixture()
def load_family(family_dir):
    """``load_family(name, **config)`` -> a fresh model loaded through the registered ``hf-vlm`` entry."""
    import torch

    from mmalign_hf.plugin import mmalign_models

    entry = mmalign_models()[0]

    def load(name: str, **config):
        torch.manual_seed(0)
        return entry.build({"path": str(family_dir(name)), **config})

    return load
