"""Put the repository's reusable helpers on ``sys.path``: benchmarks/ (dpo_vs_trl's data helpers),
tests/hf (the tiny checkpoint builders of every family) and tests/bdhs (shapes images)."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
HELPER_DIRS = (REPO / "benchmarks", REPO / "tests" / "hf", REPO / "tests" / "bdhs")


def add_helpers() -> None:
    for path in HELPER_DIRS:
        if not path.is_dir():
            raise FileNotFoundError(f"gpu check: helper folder {path} is missing (run from a full checkout of the repository)")
        if str(path) not in sys.path:
            sys.path.append(str(path))
