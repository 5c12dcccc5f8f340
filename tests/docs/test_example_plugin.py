"""The plugin of docs/plugin-authors.md, installed from a temporary folder like any third-party plugin."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugin-example"


def _env(target: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MMALIGN_DISABLE_PLUGINS", None)
    env.pop("PYTEST_ADDOPTS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(target), *filter(None, [env.get("PYTHONPATH")])])
    env["MMALIGN_PROGRESS"] = "0"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Copy the example (so no build files land in the repository) and pip-install it into a target folder."""
    base = tmp_path_factory.mktemp("example-plugin")
    source = base / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".pytest_cache"))
    target = base / "site"
    cmd = [
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "-q", "--target", str(target), str(source),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=base, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert list(target.glob("mmalign_example_loss-*.dist-info")), "pip did not install the distribution metadata"
    return {"base": base, "source": source, "target": target, "env": _env(target)}


def _run(args: list[str], installed: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=installed["base"], env=installed["env"], timeout=300)


def test_mmalign_plugins_lists_the_loss(installed) -> None:
    out = _run([sys.executable, "-m", "mmalign_core.cli", "plugins"], installed)
    assert out.returncode == 0, out.stderr
    line = next((l for l in out.stdout.splitlines() if " margin-dpo " in l), None)
    assert line is not None, out.stdout
    assert line.split()[:3] == ["loss", "margin-dpo", "example-loss"]
    assert "mmalign-example-loss 0.1.0" in line and " ok " in line


def test_mmalign_plugins_json(installed) -> None:
    out = _run([sys.executable, "-m", "mmalign_core.cli", "plugins", "--json"], installed)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    rows = [r for r in report["components"] if r["name"] == "margin-dpo"]
    assert rows == [{
        "kind": "loss", "name": "margin-dpo", "plugin": "example-loss", "distribution": "mmalign-example-loss",
        "version": "0.1.0", "status": "ok",
        "summary": "DPO with a target reward margin: -log sigmoid(beta * (h(y+) - h(y-)) - margin).",
    }]


def test_plugin_is_light_and_meets_the_loss_contract(installed) -> None:
    script = textwrap.dedent("""
        import json, sys
        import mmalign_example_loss.plugin
        light = "torch" not in sys.modules
        from mmalign_core.manager import load_plugins
        from mmalign_core.testing import check_loss
        plugins = load_plugins(disabled=())
        info = plugins.info("example-loss")
        entry = plugins.resolve("loss", "margin-dpo")
        out = check_loss(entry)
        check_loss(entry, {"margin": 0.0, "reduction": "mean"})
        print(json.dumps({"light": light, "status": info.status, "distribution": info.distribution,
                          "qualified": entry.qualified_name, "metrics": sorted(out.metrics)}))
    """)
    out = _run([sys.executable, "-c", script], installed)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "light": True,
        "status": "ok",
        "distribution": "mmalign-example-loss",
        "qualified": "example-loss:margin-dpo",
        "metrics": ["loss", "margin/satisfied", "rewards/accuracy", "rewards/margin"],
    }


def test_example_spec_validates(installed) -> None:
    pytest.importorskip("mmalign_shapes", reason="the example spec uses the shapes plugin")
    pytest.importorskip("mmalign_tiny", reason="the example spec uses the tiny plugin")
    out = _run([sys.executable, "-m", "mmalign_core.cli", "validate", str(installed["source"] / "spec.json")], installed)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("stages[1].loss ")]
    assert rows == [["stages[1].loss", "margin-dpo", "example-loss", "mmalign-example-loss", "0.1.0"]], out.stdout


def test_the_plugins_own_tests_pass(installed) -> None:
    """Step 7 of the guide: the example's tests, which opt into the kit with pytest_plugins."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        capture_output=True, text=True, cwd=installed["source"], env=installed["env"], timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert " passed" in out.stdout and "skipped" not in out.stdout
