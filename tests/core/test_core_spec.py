"""Run-spec loading and two-phase validation."""
from __future__ import annotations

import copy
import json

import pytest
from pydantic import Field

from mmalign_core import ComponentConfig, LossEntry
from mmalign_core.errors import Problem, SpecLoadError, SpecValidationError
from mmalign_core.manager import create_plugins
from mmalign_core.spec import check_spec, format_path, load_spec, validate_spec


def _problems(data, plugins):
    validated, problems = check_spec(data, plugins)
    assert validated is None, "expected the spec to be invalid"
    return {p.path: p for p in problems if p.severity == "error"}


def test_valid_spec_resolves_every_component(toy, spec_factory):
    validated = validate_spec(spec_factory(), toy)
    assert list(validated.components) == [
        "model", "stages[0].data", "stages[0].loss", "stages[1].data", "stages[1].loss",
        "stages[2].evaluators[0]", "stages[2].evaluators[1]",
    ]
    entry, config = validated.component("stages[1].loss")  # unpacks as (entry, config)
    assert entry.qualified_name == "toy:dpo" and config.beta == 0.2
    assert validated.loss(0).entry.name == "sft"  # the default loss of an sft stage
    assert validated.model.config.hidden == 8  # defaults filled in
    assert [c.entry.name for c in validated.evaluators(2)] == ["gen-eval", "probe"]
    assert validated.entries["stages[0].data"].name == "toy-captions"
    assert validated.resolved_config("model") == {"hidden": 8, "mode": "fast"}


def test_resolved_spec_and_hash(toy, spec_factory):
    validated = validate_spec(spec_factory(), toy)
    resolved = validated.resolved
    assert resolved["model"] == {"name": "toy:toy-model", "config": {"hidden": 8, "mode": "fast"}}
    assert resolved["stages"][0]["loss"] == {"name": "toy:sft", "config": {}}
    assert resolved["stages"][0]["train"]["lr"] == 1e-5
    assert len(validated.spec_hash) == 64
    json.loads(validated.canonical_json())
    # Writing a default or the qualified name gives the same resolved spec, hence the same hash.
    explicit = spec_factory()
    explicit["model"] = {"name": "toy:toy-model", "config": {"hidden": 8}}
    assert validate_spec(explicit, toy).spec_hash == validated.spec_hash
    changed = spec_factory()
    changed["stages"][1]["loss"]["config"]["beta"] = 0.3
    assert validate_spec(changed, toy).spec_hash != validated.spec_hash


def test_all_problems_at_once_with_json_paths(toy, spec_factory):
    data = spec_factory(colour="red")
    data["stages"][0]["train"]["lr"] = "fast"
    data["stages"][1]["loss"]["config"] = {"beta": -1, "gamma": 2}
    data["stages"][2]["evaluators"].append({"name": "gen-evl"})
    del data["model"]["name"]
    problems = _problems(data, toy)
    assert set(problems) == {
        "colour", "model.name", "stages[0].train.lr", "stages[1].loss.config.beta",
        "stages[1].loss.config.gamma", "stages[2].evaluators[2].name",
    }
    assert problems["stages[0].train.lr"].message.startswith("Input should be a valid number")
    assert '(got "fast")' in problems["stages[0].train.lr"].message
    assert problems["model.name"].message == "required field is missing"
    assert problems["stages[1].loss.config.beta"].plugin == "toy"
    assert problems["stages[1].loss.config.gamma"].message.startswith("unknown field 'gamma'")
    assert problems["stages[1].loss.config.gamma"].plugin == "toy"
    assert "Did you mean 'gen-eval'?" in problems["stages[2].evaluators[2].name"].message
    assert problems["colour"].plugin is None


def test_extra_field_suggests_a_close_one(toy, spec_factory):
    data = spec_factory()
    data["stages"][1]["train"]["lrr"] = 1e-4
    problem = _problems(data, toy)["stages[1].train.lrr"]
    assert "unknown field 'lrr'. Did you mean 'lr'?" in problem.message and "Allowed fields:" in problem.message


def test_missing_and_bad_stage_fields(toy, spec_factory):
    data = spec_factory()
    del data["stages"][1]["data"]
    data["stages"][2] = {"type": "evaluat", "evaluators": []}
    data["stages"].append({"evaluators": []})
    problems = _problems(data, toy)
    assert problems["stages[1].data"].message == "required field is missing"
    assert "does not match any of the expected tags" in problems["stages[2]"].message
    assert "discriminator" in problems["stages[3]"].message


def test_stage_validator_errors_read_cleanly(toy, spec_factory):
    data = spec_factory()
    data["stages"][0]["train"] = {"steps": 2, "epochs": 1}
    problem = _problems(data, toy)["stages[0].train"]
    assert problem.message.startswith("set either 'steps' or 'epochs'")


def test_components_are_checked_when_the_envelope_fails(toy, spec_factory):
    data = spec_factory(seed="zero")
    data["model"]["config"] = {"mode": "medium"}
    problems = _problems(data, toy)
    assert {"seed", "model.config.mode"} <= set(problems)


def test_data_capabilities(toy, spec_factory):
    data = spec_factory()
    data["stages"][1]["data"]["name"] = "toy-captions"
    problem = _problems(data, toy)["stages[1].data"]
    assert "cannot feed an 'align' stage" in problem.message and "'pairs'" in problem.message
    assert problem.plugin == "toy"
    ok = spec_factory()
    ok["stages"][0]["data"]["name"] = "toy-pairs"  # sft may read the chosen side of pairs
    validate_spec(ok, toy)


def test_requirements_must_be_provided(toy, spec_factory):
    data = spec_factory()
    data["model"]["name"] = "toy-blind"
    data["stages"][0]["loss"] = {"name": "dpo"}
    problems = _problems(data, toy)
    assert "requires 'generate'" in problems["stages[2].evaluators[0]"].message
    assert "'toy-blind' lacks capability 'generate'" in problems["stages[2].evaluators[0]"].message
    assert "requires 'reference' and 'rejected'" in problems["stages[0].loss"].message  # only align stages have them


def test_check_run_hook_results_are_added(make_plugin_fn, toy_plugin_fn, spec_factory):
    def check(spec, resolved):
        assert resolved["stages[1].loss"].name == "dpo"
        return [Problem("stages[1]", "needs more data", severity="warning"), "judge unavailable"]

    plugins = create_plugins(("toy", toy_plugin_fn()), ("checker", make_plugin_fn(mmalign_check_run=check)))
    validated, problems = check_spec(spec_factory(), plugins)
    assert validated is None
    assert [(p.path, p.plugin, p.severity) for p in problems] == [("stages[1]", "checker", "warning"), ("", "checker", "error")]


def test_builtin_checks(toy, spec_factory):
    data = spec_factory(device="gpu")
    data["stages"][1]["name"] = "sft"  # numbered 'sft-2' ...
    data["stages"][2]["name"] = "sft-2"  # ... so this one clashes
    data["stages"][1]["train"]["max_examples"] = 1
    data["stages"][2]["evaluators"].append({"name": "probe"})
    validated, problems = check_spec(data, toy)
    found = {(p.path, p.severity, p.plugin) for p in problems}
    assert ("device", "error", "core") in found
    assert ("stages[2].name", "error", "core") in found
    assert ("stages[1].train.batch_size", "warning", "core") in found
    assert ("stages[2].evaluators[2]", "warning", "core") in found
    data["stages"][2]["name"] = "a/b"
    _, problems = check_spec(data, toy)
    assert any(p.path == "stages[2].name" and "folder" in p.message for p in problems)


def test_warnings_do_not_block(toy, spec_factory):
    data = spec_factory()
    data["stages"][1]["train"]["max_examples"] = 1
    validated = validate_spec(data, toy)
    assert [w.path for w in validated.warnings] == ["stages[1].train.batch_size"]


def test_validate_spec_raises_with_every_problem(toy, spec_factory):
    data = spec_factory(extra=1, seed="x")
    with pytest.raises(SpecValidationError) as err:
        validate_spec(data, toy, source="run.json")
    assert len(err.value.problems) == 2
    assert str(err.value).startswith("run.json: 2 problems in the run spec:")


def test_union_labels_and_odd_keys_are_cleaned(toy):
    class UnionConfig(ComponentConfig):
        """Union field."""

        size: int | list[int] = Field(1, description="A size or sizes.")

    entry = LossEntry(name="union", summary="u.", config=UnionConfig, factory="a:b")
    plugins = create_plugins(("u", _plugin_with(entry)))
    data = {"name": "r", "model": {"name": "m"}, "stages": [{"type": "align", "data": {"name": "d"},
                                                             "loss": {"name": "union", "config": {"size": "big", "a b": 1}}}]}
    _, problems = check_spec(data, plugins)
    paths = {p.path for p in problems}
    assert "stages[0].loss.config.size" in paths and 'stages[0].loss.config["a b"]' in paths


def _plugin_with(entry):
    import types

    from mmalign_core import hookimpl

    plugin = types.SimpleNamespace()
    plugin.mmalign_losses = hookimpl(lambda: [entry])
    return plugin


def test_format_path():
    assert format_path(("stages", 1, "loss", "config", "beta")) == "stages[1].loss.config.beta"
    assert format_path(()) == ""


def test_load_spec_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "name": "x",\n  "model": {"name": "m",}\n}')
    with pytest.raises(SpecLoadError, match=r"bad.json: invalid JSON at line 3, column"):
        load_spec(bad)
    dup = tmp_path / "dup.json"
    dup.write_text('{"name": "a", "name": "b"}')
    with pytest.raises(SpecLoadError, match="duplicate key 'name'"):
        load_spec(dup)
    arr = tmp_path / "arr.json"
    arr.write_text("[]")
    with pytest.raises(SpecLoadError, match="must be a JSON object"):
        load_spec(arr)
    with pytest.raises(SpecLoadError, match="no such file"):
        load_spec(tmp_path / "missing.json")
    nan = tmp_path / "nan.json"
    nan.write_text('{"seed": NaN}')
    with pytest.raises(SpecLoadError, match="NaN"):
        load_spec(nan)


def test_validation_does_not_mutate_input(toy, spec_factory):
    data = spec_factory()
    before = copy.deepcopy(data)
    validate_spec(data, toy)
    assert data == before
