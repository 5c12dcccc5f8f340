"""The JSON Schema assembled from installed plugins."""
from __future__ import annotations

import json

import pytest

from mmalign_core.manager import create_plugins
from mmalign_core.schema import build_schema


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_component_names_and_configs_are_constrained(toy):
    schema = build_schema(toy)
    json.dumps(schema)
    defs = schema["$defs"]
    assert "ComponentRef" not in defs
    assert schema["properties"]["model"]["$ref"] == "#/$defs/ModelRef"
    assert defs["AlignStage"]["properties"]["loss"]["default"] == {"name": "losses:dpo", "config": {}}  # qualified (issue 12.6)
    assert defs["EvaluateStage"]["properties"]["evaluators"]["items"] == {"$ref": "#/$defs/EvaluatorRef"}
    losses = {alt["title"]: alt for alt in defs["LossRef"]["oneOf"]}
    dpo = losses["toy:dpo"]
    assert dpo["properties"]["name"]["enum"] == ["dpo", "toy:dpo"]
    assert dpo["additionalProperties"] is False
    config = defs[dpo["properties"]["config"]["$ref"].split("/")[-1]]
    assert config["properties"]["beta"]["exclusiveMinimum"] == 0 and config["additionalProperties"] is False
    for ref in _refs(schema):  # every reference resolves
        assert ref.split("/")[-1] in defs, ref


def test_conflicting_names_only_in_qualified_form(toy_plugin_fn):
    schema = build_schema(create_plugins(("a", toy_plugin_fn()), ("b", toy_plugin_fn())))
    names = [alt["properties"]["name"]["enum"] for alt in schema["$defs"]["LossRef"]["oneOf"]]
    assert ["a:dpo"] in names and ["b:dpo"] in names


def test_kind_without_components():
    schema = build_schema(create_plugins())
    assert schema["$defs"]["LossRef"]["not"] == {}


def test_schema_accepts_valid_and_rejects_invalid_specs(toy, spec_factory):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(build_schema(toy))
    assert not list(validator.iter_errors(spec_factory()))
    bad = spec_factory()
    bad["stages"][1]["loss"] = {"name": "dpo", "config": {"beta": "high"}}
    assert list(validator.iter_errors(bad))
    bad = spec_factory()
    bad["stages"][1]["loss"] = {"name": "nope"}
    assert list(validator.iter_errors(bad))
