"""The plugin-author guide shows the example plugin verbatim; links between the docs resolve; spec examples validate."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLE = ROOT / "examples" / "plugin-example"
GUIDE = DOCS / "plugin-authors.md"
FILE_BLOCK = re.compile(r"<!-- file: (?P<path>[^ ]+) -->\n(?:(?!```)[^\n]+\n)?\n?```[a-z]*\n(?P<body>.*?)^```", re.M | re.S)
# Pages the lead writes; links to them are allowed before they exist.
PENDING = {"quickstart.md", "performance.md"}


def guide_blocks() -> dict[str, str]:
    return {m["path"]: m["body"] for m in FILE_BLOCK.finditer(GUIDE.read_text(encoding="utf-8"))}


def test_guide_shows_each_example_file_verbatim() -> None:
    blocks = guide_blocks()
    assert blocks, "no '<!-- file: ... -->' blocks in docs/plugin-authors.md"
    for rel, body in blocks.items():
        path = ROOT / rel
        assert path.is_file(), f"the guide shows {rel}, which does not exist"
        assert body == path.read_text(encoding="utf-8"), f"docs/plugin-authors.md and {rel} differ"


def test_guide_covers_every_file_of_the_example() -> None:
    shown = set(guide_blocks())
    files = {
        str(p.relative_to(ROOT))
        for p in EXAMPLE.rglob("*")
        if p.is_file() and p.suffix in {".py", ".toml", ".json"} and "__pycache__" not in p.parts
        and not any(part.endswith(".egg-info") or part == "build" for part in p.parts)
    }
    assert files - shown == set(), f"example files missing from the guide: {sorted(files - shown)}"


def _anchors(markdown: str) -> set[str]:
    anchors = set()
    in_fence = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            title = line.lstrip("#").strip()
            slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_relative_links_resolve() -> None:
    broken = []
    for page in sorted(DOCS.glob("*.md")):
        text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            path = (page.parent / file_part).resolve() if file_part else page
            if not path.exists():
                if Path(file_part).name in PENDING and path.parent == DOCS:
                    continue
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path.read_text(encoding="utf-8")):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_spec_examples_in_the_docs_validate() -> None:
    pytest.importorskip("mmalign_shapes", reason="the examples use the shapes plugin")
    from mmalign_core.manager import load_plugins
    from mmalign_core.spec import check_spec

    plugins = load_plugins(disabled=())
    checked = 0
    for page in (DOCS / "spec.md", DOCS / "components.md"):
        for block in re.findall(r"^```json\n(.*?)^```", page.read_text(encoding="utf-8"), re.M | re.S):
            data = json.loads(block)
            if "stages" not in data:
                continue
            validated, problems = check_spec(data, plugins, source=page.name)
            assert validated is not None, [p.format() for p in problems]
            checked += 1
    assert checked
