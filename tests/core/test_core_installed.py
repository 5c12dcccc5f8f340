"""The CLI in subprocesses, with fixture plugin packages pip-installed into a folder.

The packages under ``tests/fixtures/plugins`` are installed once per session
(``pip install --target``) and found through ``PYTHONPATH`` -- by their entry
points in group ``mmalign``, exactly as a third-party plugin is found.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

GOOD_SPEC = {
    "name": "example",
    "model": {"name": "toy-model"},
    "stages": [
        {"type": "align", "data": {"name": "toy-pairs"}, "loss": {"name": "scaled-dpo", "config": {"scale": 2.0}},
         "train": {"steps": 1, "batch_size": 2}},
        {"type": "evaluate", "evaluators": [{"name": "answer-length", "config": {"max_new_tokens": 8}}]},
    ],
}


def _bad_spec() -> dict:
    spec = json.loads(json.dumps(GOOD_SPEC))
    del spec["model"]["name"]  # missing field
    spec["stages"][0]["loss"]["config"]["scale"] = "big"  # bad type
    spec["stages"][0]["train"]["lrr"] = 1e-4  # extra field
    spec["stages"][1]["evaluators"] = [{"name": "answer-lenght"}, {"name": "broken-eval"}]  # unknown names
    return spec


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("specs")
    (root / "good.json").write_text(json.dumps(GOOD_SPEC))
    (root / "bad.json").write_text(json.dumps(_bad_spec()))
    (root / "registry.toml").write_text(textwrap.dedent("""
        [plugins.broken]
        distribution = "mmalign-broken"
        entry_point = "broken"
        status = "third-party"
        summary = "Broken on purpose."
        components = { evaluator = ["broken-eval"] }
    """))
    return {"good": root / "good.json", "bad": root / "bad.json", "registry": root / "registry.toml"}


def test_plugins_lists_third_party_and_broken(run_cli):
    done = run_cli("plugins")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    row = next(line for line in lines if " answer-length " in line)
    assert row.split()[:3] == ["evaluator", "answer-length", "example-eval"] and "mmalign-example-eval 0.1.0" in row
    assert any(" scaled-dpo " in line and "example-eval" in line for line in lines)
    assert any(" toy-model " in line and "mmalign-toy 0.2.0" in line for line in lines)  # the others still work
    assert "broken (mmalign-broken 0.0.1) failed at import: ImportError: mmalign-broken needs the package 'frobnicate'" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_plugins_json_carries_the_traceback(run_cli):
    done = run_cli("plugins", "--json", env={"MMALIGN_DISABLE_PLUGINS": "toy"})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    plugins = {p["name"]: p for p in report["plugins"]}
    assert plugins["broken"]["status"] == "broken" and "raise ImportError" in plugins["broken"]["traceback"]
    assert plugins["toy"]["status"] == "disabled" and plugins["toy"]["distribution"] == "mmalign-toy"
    assert plugins["example-eval"]["version"] == "0.1.0"
    assert not any(r["plugin"] == "toy" for r in report["components"])


def test_validate_reports_every_problem(run_cli, specs):
    done = run_cli("validate", str(specs["bad"]), env={"MMALIGN_REGISTRY": str(specs["registry"])})
    assert done.returncode == 2
    out = done.stdout
    assert "model.name: required field is missing" in out
    assert "stages[0].loss.config.scale: Input should be a valid number" in out and "[plugin example-eval]" in out
    assert "stages[0].train.lrr: unknown field 'lrr'. Did you mean 'lr'?" in out
    assert "stages[1].evaluators[0].name: Unknown evaluator 'answer-lenght'. Did you mean 'answer-length'?" in out
    assert "stages[1].evaluators[1].name" in out and "which failed to load (import)" in out and "frobnicate" in out
    assert "Traceback" not in out + done.stderr


def test_cli_commands_import_no_torch(run_cli, specs):
    code = textwrap.dedent(f"""
        import sys
        import mmalign_core.cli as cli
        codes = [cli.main(["--help"]), cli.main(["validate", "--help"]), cli.main(["plugins", "--known"]),
                 cli.main(["schema"]), cli.main(["validate", {str(specs["good"])!r}]),
                 cli.main(["validate", {str(specs["bad"])!r}])]
        assert codes == [0, 0, 0, 0, 0, 2], codes
        heavy = [m for m in ("torch", "transformers") if m in sys.modules]
        assert not heavy, "imported: " + ", ".join(heavy)
        print("NO-TORCH-OK")
    """)
    done = run_cli(code=code)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "NO-TORCH-OK" in done.stdout
    assert '"answer-length"' in done.stdout  # the schema lists the third-party evaluator
    assert "OK " in done.stdout and "example-eval" in done.stdout
