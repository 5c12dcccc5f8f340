"""docs/hooks.md lists every hook of mmalign_core/hookspecs.py with its exact signature, and nothing else."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

from mmalign_core import hookspecs

DOC = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def hook_specs() -> dict[str, str]:
    """Hook name -> ``def name(args) -> ret`` as ``inspect.signature`` renders it."""
    marker = f"{hookspecs.PROJECT}_spec"
    return {
        name: f"def {name}{inspect.signature(func, eval_str=True)}"
        for name, func in vars(hookspecs).items()
        if callable(func) and hasattr(func, marker)
    }


def documented_signatures() -> list[str]:
    """Python blocks of the page that consist of one ``def mmalign_...`` line."""
    blocks = [b.strip() for b in FENCE.findall(DOC.read_text(encoding="utf-8"))]
    return [b for b in blocks if "\n" not in b and re.match(r"def mmalign_\w+\(", b)]


def test_every_hook_is_documented_with_its_exact_signature() -> None:
    specs = hook_specs()
    assert specs, "no hook specs found"
    documented = documented_signatures()
    for name, signature in specs.items():
        assert signature in documented, f"docs/hooks.md lacks the block:\n```python\n{signature}\n```"


def test_no_undocumented_extra_or_duplicate_hooks() -> None:
    specs = hook_specs()
    documented = documented_signatures()
    names = [re.match(r"def (\w+)\(", line).group(1) for line in documented]
    assert sorted(names) == sorted(set(names)), f"a hook is documented twice: {names}"
    extra = sorted(set(names) - set(specs))
    assert not extra, f"docs/hooks.md documents hooks that hookspecs.py does not define: {extra}"
    wrong = sorted(line for line in documented if line not in specs.values())
    assert not wrong, f"signatures in docs/hooks.md that differ from hookspecs.py: {wrong}"


def test_every_hook_has_a_section() -> None:
    headings = set(re.findall(r"^### (\w+)$", DOC.read_text(encoding="utf-8"), re.M))
    missing = sorted(set(hook_specs()) - headings)
    assert not missing, f"docs/hooks.md has no '### <hook>' section for: {missing}"


def test_registration_hooks_are_hook_specs() -> None:
    assert set(hookspecs.REGISTRATION_HOOKS.values()) <= set(hook_specs())
