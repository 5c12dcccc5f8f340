"""Shared fixtures: one tiny LLaVA built per test session, in a private cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MMALIGN_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def mmalign_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mmalign-cache")
    os.environ["MMALIGN_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_dir(mmalign_cache: Path) -> Path:
    """Folder of the default tiny LLaVA (built once per session)."""
    from mmalign_tiny.config import TinyLlavaConfig
    from mmalign_tiny.model import ensure_built

    return ensure_built(TinyLlavaConfig(cache_dir=str(mmalign_cache / "tiny")))


@pytest.fixture()
def tiny_model(tiny_dir: Path):
    """A fresh HFVisionLanguageModel loaded from the session's tiny folder."""
    import torch
    from mmalign_tiny.model import load_tiny_llava

    torch.manual_seed(0)
    return load_tiny_llava(tiny_dir)
