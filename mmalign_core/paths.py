"""Where mmalign keeps what it can rebuild: one definition of the cache folder for the core and every plugin."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MMALIGN_CACHE"


def cache_root() -> Path:
    """``$MMALIGN_CACHE``, else ``~/.cache/mmalign`` (not created here)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mmalign")


__all__ = ["CACHE_ENV", "cache_root"]
