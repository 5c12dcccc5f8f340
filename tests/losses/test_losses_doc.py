"""docs/losses.md: every loss has a section, and its JSON examples validate against the installed losses."""
from __future__ import annotations

import json
import re
from pathlib import Path

from mmalign_core.manager import get_plugins

DOC = Path(__file__).resolve().parents[2] / "docs" / "losses.md"
DOCUMENTED_HERE = {"losses", "grounded"}  # the plugins whose losses docs/losses.md documents


def test_every_loss_of_the_plugin_has_a_section() -> None:
    text = DOC.read_text(encoding="utf-8")
    names = [e.name for e in get_plugins().entries("loss") if e.plugin in DOCUMENTED_HERE]
    assert names
    for name in names:
        assert f"\n## {name}\n" in text, f"docs/losses.md has no section for {name!r}"


def test_json_examples_validate() -> None:
    blocks = re.findall(r"^```json\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.M | re.S)
    assert blocks
    plugins = get_plugins()
    for block in blocks:
        ref = json.loads(block)
        entry = plugins.resolve("loss", ref["name"])
        assert entry.plugin in DOCUMENTED_HERE
        entry.config.model_validate(ref.get("config", {}))
