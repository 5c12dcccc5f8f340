"""The `mmalign eval` command group (added to the parser by :mod:`mmalign_core.cli`; imports no torch)."""
from __future__ import annotations

from typing import Any


def add_commands(sub: Any) -> None:
    """Add this group's sub-commands to the top-level sub-parsers (none yet)."""
