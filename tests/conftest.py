"""Shared fixtures: one tiny LLaVA built per test session, in a private cache."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE_PLUGINS = Path(__file__).resolve().parent / "fixtures" / "plugins"
FIXTURE_PACKAGES = ("mmalign-example-eval", "mmalign-broken", "mmalign-toy")

# One intra-op thread: tiny models gain nothing from more, and torch's spin-waiting threads slow
# down by 50x when another process competes for the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
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


@pytest.fixture(scope="session")
def fixture_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture plugin packages (tests/fixtures/plugins) pip-installed once into a folder for ``PYTHONPATH``.

    Installing from copies keeps build artefacts out of the repository.
    """
    sources = tmp_path_factory.mktemp("plugin-src")
    target = tmp_path_factory.mktemp("plugin-site")
    packages = []
    for name in FIXTURE_PACKAGES:
        dest = sources / name
        shutil.copytree(FIXTURE_PLUGINS / name, dest, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        packages.append(str(dest))
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "--target", str(target), *packages]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return target
