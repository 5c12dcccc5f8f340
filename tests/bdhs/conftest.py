"""Fixtures of the bdhs tests: tiny checkpoints of every supported family (built once per session), a
scripted sentence embedder, and shapes images."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE.parent / "hf", HERE):  # tiny_families (the hf tests' builders) and bdhs_helpers
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bdhs_helpers import ScriptedEmbedder  # noqa: E402


@pytest.fixture(scope="session")
def family_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``family_model_dir(name)`` -> a tiny random checkpoint of that family (built on first use)."""
    from tiny_families import BUILDERS

    root = tmp_path_factory.mktemp("bdhs-families")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = BUILDERS[name](root / name)
        return built[name]

    return get


@pytest.fixture()
def load_family(family_model_dir: Callable[[str], Path]) -> Callable[[str], Any]:
    """``load_family(name)`` -> the checkpoint loaded through the registered ``hf-vlm`` component."""
    import torch

    from mmalign_hf.plugin import mmalign_models

    entry = mmalign_models()[0]

    def load(name: str) -> Any:
        torch.manual_seed(0)
        return entry.build({"path": str(family_model_dir(name))})

    return load


@pytest.fixture()
def scripted_embedder() -> Callable[[Callable[[str, str], float]], ScriptedEmbedder]:
    return ScriptedEmbedder
