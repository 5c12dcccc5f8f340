"""registry.toml: its model, the repository's file, and the comparison with installed plugins."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmalign_core.errors import KnownRegistryError
from mmalign_core.known import check_installed, load_known, parse_known
from mmalign_core.registry import PluginInfo

REPO_REGISTRY = Path(__file__).resolve().parents[2] / "registry.toml"


def _table(**overrides):
    table = {"distribution": "mmalign-x", "entry_point": "x", "status": "official", "summary": "X.",
             "components": {"loss": ["x-loss"]}}
    table.update(overrides)
    return table


def test_repository_registry_loads():
    known = load_known(REPO_REGISTRY)
    official = {name: p for name, p in known.plugins.items() if p.status == "official"}
    assert set(official) >= {"tiny", "shapes", "losses"}
    assert official["tiny"].components == {"model": ["tiny-llava"]} and official["tiny"].path == "plugins/mmalign-tiny"
    assert official["shapes"].components == {
        "preference_source": ["shapes-sft", "shapes-pairs"], "evaluator": ["shapes-pope", "shapes-chair"]}
    assert official["losses"].distribution == "mmalign-losses" and official["losses"].components["loss"][:2] == ["dpo", "sft"]
    assert {"bdhs", "hf", "datasets", "evals"} <= set(official)
    assert official["hf"].components == {"model": ["hf-vlm"]}
    assert known.providers_of("loss", "dpo")[0][0] == "losses"


def test_unknown_key_names_table_and_key():
    with pytest.raises(KnownRegistryError) as err:
        parse_known({"plugins": {"x": _table(colour="red")}}, "reg.toml")
    text = str(err.value)
    assert "reg.toml" in text and "[plugins.x]: unknown key 'colour'" in text and "allowed: distribution" in text


def test_unknown_top_level_key():
    with pytest.raises(KnownRegistryError, match="unknown key 'plugin'"):
        parse_known({"plugin": {}})


@pytest.mark.parametrize(
    "table, message",
    [
        (_table(components={"losses": ["a"]}), "unknown component kind 'losses'"),
        (_table(components={"loss": ["Bad Name"]}), "kebab-case"),
        (_table(status="stable"), "[plugins.x] status"),
        ({k: v for k, v in _table().items() if k != "summary"}, "[plugins.x]: missing key 'summary'"),
    ],
    ids=["kind", "name", "status", "missing"],
)
def test_invalid_tables(table, message):
    with pytest.raises(KnownRegistryError) as err:
        parse_known({"plugins": {"x": table}})
    assert message in str(err.value)


def test_entry_points_are_unique():
    with pytest.raises(KnownRegistryError, match="both use entry point 'x'"):
        parse_known({"plugins": {"a": _table(), "b": _table()}})


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "registry.toml"
    bad.write_text("[plugins.x\n")
    with pytest.raises(KnownRegistryError, match="invalid TOML"):
        load_known(bad)
    with pytest.raises(KnownRegistryError, match="cannot read"):
        load_known(tmp_path / "nope.toml")


def test_check_installed(toy):
    known = parse_known({"plugins": {
        "toy": _table(entry_point="toy", distribution="mmalign-toy",
                      components={"loss": ["dpo", "ipo"], "model": ["toy-model", "toy-blind"],
                                  "preference_source": ["toy-pairs", "toy-captions"], "evaluator": ["gen-eval", "probe"]}),
        "gone": _table(entry_point="gone", distribution="mmalign-gone"),
        "later": _table(entry_point="later", status="planned"),
    }})
    infos = [PluginInfo(name="toy", distribution="mmalign_toy", version="1"), PluginInfo(name="extra", distribution="mmalign-extra")]
    report = check_installed(known, infos, toy.entries())
    assert not report.ok
    assert report.mismatches == [
        "[plugins.toy] declares loss 'ipo', but the installed plugin does not provide it",
        "[plugins.toy] does not declare loss 'sft', which the installed plugin provides",
        "[plugins.gone] official plugin is not installed (pip install mmalign-gone)",
    ]
    assert any("'extra'" in note for note in report.notes)


def test_the_registry_ships_inside_the_package(tmp_path: Path) -> None:
    """The top-level registry.toml is the packaged one, and a built wheel carries it (with the default spec)."""
    import subprocess
    import sys
    import zipfile

    from mmalign_core.known import PACKAGED_REGISTRY, default_registry_path

    assert REPO_REGISTRY.resolve() == PACKAGED_REGISTRY
    assert default_registry_path() == PACKAGED_REGISTRY or "MMALIGN_REGISTRY" in __import__("os").environ
    import shutil

    root = Path(__file__).resolve().parents[2]
    src = tmp_path / "src"  # build from a copy, so no build/ or egg-info lands in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    shutil.copytree(root / "mmalign_core", src / "mmalign_core", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "wheels"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                           str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next(out.glob("mmalign-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "mmalign_core/defaults/registry.toml" in names and "mmalign_core/defaults/quickstart.json" in names
