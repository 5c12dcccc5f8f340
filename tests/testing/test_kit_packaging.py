"""How the testing kit is shipped: light to import, opt-in as a pytest plugin."""
from __future__ import annotations

import importlib.metadata as metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    return env


def test_importing_the_kit_imports_no_torch() -> None:
    code = (
        "import sys, mmalign_core.testing as kit\n"
        "assert kit.check_loss and kit.ScriptedModel\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'accelerate', 'peft') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing mmalign_core.testing imported {out.stdout.strip()}"


def test_not_registered_through_pytest11() -> None:
    for ep in metadata.entry_points(group="pytest11"):
        assert not ep.value.startswith("mmalign_core"), f"{ep} auto-registers the kit; it must stay opt-in"


def test_opt_in_with_pytest_plugins(tmp_path: Path) -> None:
    """A suite that names the kit in ``pytest_plugins`` gets the fixtures; one that does not, does not."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text('pytest_plugins = ["mmalign_core.testing"]\n')
    (suite / "test_uses_kit.py").write_text(textwrap.dedent('''
        from mmalign_core.testing import make_pairs

        def test_fixtures(mmalign_plugins, register_plugin, mmalign_context):
            assert [p.name for p in mmalign_plugins.infos()] == ["core"]
            plugins = register_plugin("mmalign_losses.plugin", name="mine")
            assert plugins.resolve("loss", "dpo").plugin == "mine"
            assert mmalign_context.output_dir.is_dir()
            assert len(make_pairs(2)) == 2
    '''))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "test_without_kit.py").write_text("def test_needs_fixture(mmalign_plugins):\n    pass\n")
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)]
    ok = subprocess.run([*args, str(suite)], capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    missing = subprocess.run([*args, str(bare)], capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=120)
    assert missing.returncode != 0
    assert "fixture 'mmalign_plugins' not found" in missing.stdout
