"""The generated tables in docs/spec.md and docs/components.md are up to date."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("mmalign_docs_gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _assert_fresh(gen, key: str) -> None:
    path = DOCS / gen.TARGETS[key][0]
    current = path.read_text(encoding="utf-8")
    assert gen.render(key, current) == current, f"docs/{path.name} is out of date: run python docs/gen_reference.py"


def test_spec_reference_is_up_to_date(gen) -> None:
    _assert_fresh(gen, "spec")


def test_spec_reference_covers_every_envelope_field(gen) -> None:
    from mmalign_core.spec_models import RunSpec, TrainSettings

    text = (DOCS / "spec.md").read_text(encoding="utf-8")
    for model in (RunSpec, TrainSettings):
        for name, field in model.model_fields.items():
            assert f"| `{name}` |" in text
            assert field.description and field.description.split(";")[0] in text


def test_components_reference_is_up_to_date(gen) -> None:
    try:
        gen.official_entries()
    except LookupError as exc:
        pytest.skip(str(exc))
    _assert_fresh(gen, "components")


def test_components_page_names_every_official_component() -> None:
    from mmalign_core.known import load_known

    text = (DOCS / "components.md").read_text(encoding="utf-8")
    for record in load_known().plugins.values():
        if record.status != "official":
            continue
        for names in record.components.values():
            for name in names:
                assert f"### {name}\n" in text, f"docs/components.md has no section for {name!r}"


def test_type_rendering(gen) -> None:
    from typing import Literal, Optional

    def link(model):
        return model.__name__

    assert gen.type_name(Optional[int], link) == "integer or null"
    assert gen.type_name(Literal["a", "b"], link) == '"a" or "b"'
    assert gen.type_name(tuple[float, float], link) == "[number, number]"
    assert gen.type_name(dict[str, list[str]], link) == "object of list of string"
