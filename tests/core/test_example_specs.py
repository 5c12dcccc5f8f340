"""Every run spec shipped under examples/ validates against the installed plugins."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmalign_core.cli import _validated

ROOT = Path(__file__).resolve().parents[2]
STUDIES = sorted((ROOT / "examples" / "study").glob("*.json"))
SPECS = sorted(p for p in (ROOT / "examples").rglob("*.json") if "plugin-example" not in p.parts and p not in STUDIES)


def test_examples_are_found() -> None:
    assert {"quickstart.json", "sft.json"} <= {p.name for p in SPECS}


@pytest.mark.parametrize("spec", SPECS, ids=[str(p.relative_to(ROOT)) for p in SPECS])
def test_example_spec_validates(spec: Path) -> None:
    validated, problems = _validated(str(spec))
    assert validated is not None, [p.__dict__ for p in problems]


@pytest.mark.parametrize("study", STUDIES, ids=[str(p.relative_to(ROOT)) for p in STUDIES])
def test_example_study_validates(study: Path) -> None:
    """A study spec: the study envelope, and every run it makes (base and arms, at every seed)."""
    pytest.importorskip("mmalign_study")
    from mmalign_core.manager import get_plugins
    from mmalign_study.cli import load_study
    from mmalign_study.grid import validate_all

    spec = load_study(study)
    validate_all(spec, list(spec.arms), get_plugins())
