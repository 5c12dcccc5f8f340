"""The CLI in-process, over an isolated manager (exit codes, messages, formats)."""
from __future__ import annotations

import json

import pytest

import mmalign_core.runner as runner_module
from mmalign_core import manager as manager_module
from mmalign_core.cli import main
from mmalign_core.errors import RunError
from mmalign_core.known import parse_known
from mmalign_core.manager import create_plugins
from mmalign_core.registry import PluginInfo



def _write(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


@pytest.fixture()
def use(monkeypatch):
    """Make the CLI use a given manager."""

    def install(plugins):
        monkeypatch.setattr(manager_module, "get_plugins", lambda: plugins)
        return plugins

    return install


@pytest.mark.parametrize("argv", [[], ["run"], ["validate"], ["plugins"], ["schema"], ["registry"], ["registry", "check"]])
def test_help_everywhere(argv, capsys):
    assert main([*argv, "--help"]) == 0
    assert "usage: mmalign" in capsys.readouterr().out


def test_no_command_and_bad_usage(capsys):
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["run", "x.json", "--resume", "--overwrite"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_validate_ok(use, toy, spec_factory, tmp_path, capsys):
    use(toy)
    assert main(["validate", _write(tmp_path / "s.json", spec_factory())]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK ") and "stages[1].loss" in out and "toy" in out


INVALID = {
    "unknown-component": (lambda s: s["stages"][1]["loss"].update(name="dpoo"), "stages[1].loss.name", "Did you mean 'dpo'?"),
    "bad-type": (lambda s: s["stages"][1]["loss"]["config"].update(beta="high"), "stages[1].loss.config.beta", "valid number"),
    "extra-field": (lambda s: s["stages"][0]["train"].update(lrr=1), "stages[0].train.lrr", "unknown field 'lrr'"),
    "missing-field": (lambda s: s["stages"][1].pop("data"), "stages[1].data", "required field is missing"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_validate_reports_path_and_exits_2(case, use, toy, spec_factory, tmp_path, capsys):
    use(toy)
    data = spec_factory()
    change, path, text = INVALID[case]
    change(data)
    assert main(["validate", _write(tmp_path / "s.json", data)]) == 2
    out = capsys.readouterr()
    assert f"{path}: " in out.out and text in out.out and "Traceback" not in out.out + out.err


def test_validate_json_report(use, toy, spec_factory, tmp_path, capsys):
    use(toy)
    data = spec_factory()
    data["stages"][1]["loss"]["config"]["beta"] = 0
    assert main(["validate", "--json", _write(tmp_path / "s.json", data)]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["problems"][0]["path"] == "stages[1].loss.config.beta" and report["problems"][0]["plugin"] == "toy"


def test_bad_input_is_a_message_not_a_traceback(use, toy, tmp_path, capsys):
    use(toy)
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": ')
    assert main(["validate", str(bad)]) == 2
    assert main(["validate", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "invalid JSON at line 1, column 10" in err and "no such file" in err and "Traceback" not in err


def test_plugins_table_json_and_known(use, toy_plugin_fn, capsys):
    plugins = create_plugins(
        ("toy", toy_plugin_fn()), ("gone", "mmalign_no_such_module_xyz"),
        known=parse_known({"plugins": {"gone": {"distribution": "mmalign-gone", "entry_point": "gone", "status": "official",
                                                "summary": "Gone.", "components": {"judge": ["gone-judge"]}},
                                       "soon": {"distribution": "mmalign-soon", "entry_point": "soon", "status": "planned",
                                                "summary": "Soon.", "components": {"judge": ["soon-judge"]}}}}),
    )
    use(plugins)
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "KIND" in out and "toy-model" in out and "dpo" in out
    assert "gone-judge" in out and "broken" in out  # components of a broken plugin, from the registry
    assert "Broken plugins" in out and "ModuleNotFoundError" in out
    assert "soon-judge" not in out
    assert main(["plugins", "--known", "--traceback"]) == 0
    out = capsys.readouterr().out
    assert "soon-judge" in out and "not installed (planned)" in out and "Traceback" in out
    assert main(["plugins", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    row = next(r for r in report["components"] if r["name"] == "dpo")
    assert row["plugin"] == "toy" and row["status"] == "ok"
    assert {p["name"]: p["status"] for p in report["plugins"]} == {"core": "ok", "toy": "ok", "gone": "broken"}


def test_schema_to_file(use, toy, tmp_path, capsys):
    use(toy)
    target = tmp_path / "schema.json"
    assert main(["schema", "-o", str(target)]) == 0
    assert "LossRef" in json.loads(target.read_text())["$defs"]
    assert main(["schema", "-o", str(tmp_path / "no" / "dir" / "s.json")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_registry_check(use, toy, tmp_path, capsys):
    use(toy)
    reg = tmp_path / "registry.toml"
    reg.write_text(
        '[plugins.toy]\ndistribution = "x"\nentry_point = "toy"\nstatus = "third-party"\nsummary = "Toy."\n'
        'components = { model = ["toy-model", "toy-blind"], preference_source = ["toy-pairs", "toy-captions"], '
        'loss = ["dpo", "sft"], evaluator = ["gen-eval", "probe"] }\n'
    )
    assert main(["registry", "check", "--file", str(reg)]) == 0
    reg.write_text(reg.read_text().replace('"probe"', '"probe", "pope"'))
    assert main(["registry", "check", "--file", str(reg)]) == 1
    assert "declares evaluator 'pope'" in capsys.readouterr().out
    reg.write_text(reg.read_text() + "colour = 1\n")
    assert main(["registry", "check", "--file", str(reg)]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err


def test_run_validates_then_calls_the_runner(use, toy, spec_factory, tmp_path, monkeypatch):
    use(toy)
    calls = []
    monkeypatch.setattr(runner_module, "run_spec", lambda validated, **kw: calls.append((validated, kw)) or tmp_path)
    spec = _write(tmp_path / "s.json", spec_factory())
    assert main(["run", spec, "--output-dir", str(tmp_path / "out"), "--resume"]) == 0
    validated, kwargs = calls[0]
    assert validated.spec.name == "toy-run"
    assert kwargs == {"output_dir": tmp_path / "out", "resume": True, "overwrite": False}


def test_run_stops_on_an_invalid_spec(use, toy, spec_factory, tmp_path, monkeypatch, capsys):
    use(toy)
    monkeypatch.setattr(runner_module, "run_spec", lambda *a, **k: pytest.fail("the runner must not start"))
    data = spec_factory()
    data["model"]["name"] = "toy-modl"
    assert main(["run", _write(tmp_path / "s.json", data)]) == 2
    err = capsys.readouterr().err
    assert "model.name" in err and "Did you mean 'toy-model'?" in err


def test_run_errors_exit_1(use, toy, spec_factory, tmp_path, monkeypatch, capsys):
    use(toy)

    def fail(*args, **kwargs):
        raise RunError("output directory already holds a run")

    monkeypatch.setattr(runner_module, "run_spec", fail)
    assert main(["run", _write(tmp_path / "s.json", spec_factory())]) == 1
    assert "already holds a run" in capsys.readouterr().err


def test_plugin_info_origin():
    assert PluginInfo(name="x", distribution="d", version="1").origin == "d 1"
    assert PluginInfo(name="x", module="m").origin == "m"
