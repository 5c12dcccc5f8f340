"""Registration of the shapes plugin: entry records, entry point, light imports, run checks."""
from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from mmalign_core import ComponentConfig, ModelEntry, hookimpl
from mmalign_core.entries import EvaluatorEntry, SourceEntry, validate_entry
from mmalign_core.manager import create_plugins
from mmalign_core.spec import check_spec
from mmalign_core.spec_models import RunSpec
from mmalign_shapes import plugin
from mmalign_shapes.config import CHAIR_METRICS, POPE_METRICS


def entries():
    return [*plugin.mmalign_preference_sources(), *plugin.mmalign_evaluators()]


def test_entries_are_valid_and_named():
    found = {e.name: e for e in entries()}
    assert set(found) == {"shapes-sft", "shapes-pairs", "shapes-pope", "shapes-chair"}
    for entry in found.values():
        assert validate_entry(entry) == []
    assert isinstance(found["shapes-sft"], SourceEntry) and found["shapes-sft"].capabilities == {"sft", "static"}
    assert found["shapes-pairs"].capabilities == {"pairs", "static"}
    for name, metrics in (("shapes-pope", POPE_METRICS), ("shapes-chair", CHAIR_METRICS)):
        assert isinstance(found[name], EvaluatorEntry)
        assert found[name].requires == {"generate"}
        assert found[name].metrics == metrics and len(set(metrics)) == len(metrics)


def test_factories_build_with_default_configs():
    for entry in entries():
        component = entry.build({"n_images": 2} if entry.kind == "evaluator" else None)
        assert component.config == entry.config.model_validate({"n_images": 2} if entry.kind == "evaluator" else {})
        if entry.kind == "preference_source":
            assert len(component) > 0 and len(component.fingerprint()) == 16
        else:
            assert callable(component.evaluate)


def test_default_configs_round_trip_through_json():
    for entry in entries():
        cfg = entry.config()
        again = entry.config.model_validate(json.loads(cfg.model_dump_json()))
        assert again == cfg
        entry.config.model_json_schema()


def test_entry_point_is_registered():
    eps = [ep for ep in entry_points(group="mmalign") if ep.name == "shapes"]
    assert len(eps) == 1 and eps[0].value == "mmalign_shapes.plugin"


def test_no_torch_anywhere():
    code = (
        "import sys\n"
        "import mmalign_shapes.plugin\n"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'plugin.py pulled in heavy modules'\n"
        "import mmalign_shapes.world, mmalign_shapes.sources, mmalign_shapes.evaluators, mmalign_shapes.injection\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _spec(sft_world: dict, eval_world: dict, **pope) -> RunSpec:
    return RunSpec.model_validate(
        {
            "name": "shapes-check",
            "model": {"name": "tiny"},
            "stages": [
                {"type": "sft", "data": {"name": "shapes-sft", "config": {"world": sft_world}}},
                {
                    "type": "evaluate",
                    "evaluators": [
                        {"name": "shapes:shapes-pope", "config": {"world": eval_world, **pope}},
                        {"name": "shapes-chair", "config": {"world": eval_world}},
                        {"name": "other-plugin:shapes-chair", "config": {"world": {"anchors": []}}},
                    ],
                },
            ],
        }
    )


def test_run_check_accepts_a_consistent_run():
    assert plugin.mmalign_check_run(spec=_spec({}, {"noise_std": 5.0}), resolved={}) == []


def test_run_check_flags_a_different_world_and_answers():
    problems = plugin.mmalign_check_run(spec=_spec({}, {"anchors": [["red circle", "green square"]]}), resolved={})
    assert [(p.path, p.severity) for p in problems] == [
        ("stages[1].evaluators[0].config.world", "error"),
        ("stages[1].evaluators[1].config.world", "error"),
    ]
    assert "different shapes world" in problems[0].message
    problems = plugin.mmalign_check_run(spec=_spec({}, {}, yes_answer="yes"), resolved={})
    assert [(p.path, p.severity) for p in problems] == [("stages[1].evaluators[0].config.yes_answer", "warning")]
    assert "'yes' differs from the SFT data's 'Yes.'" in problems[0].message


class _FakeModelPlugin:
    """Registers a model that can generate, so a spec resolves without any real model plugin."""

    @hookimpl
    def mmalign_models(self):
        return [
            ModelEntry(
                name="fake-model",
                summary="A stand-in model.",
                config=ComponentConfig,
                factory="mmalign_core.testing.doubles:ScriptedModel",
                capabilities={"generate"},
            )
        ]


def test_run_check_through_the_core_validator():
    plugins = create_plugins(("shapes", plugin), ("fake", _FakeModelPlugin()))
    data = {
        "name": "shapes-check",
        "model": {"name": "fake-model"},
        "stages": [
            {"type": "evaluate", "evaluators": [{"name": "shapes-pope", "config": {"n_images": 4}}]},
            {"type": "evaluate", "evaluators": [{"name": "shapes:shapes-chair", "config": {"world": {"anchors": []}}}]},
            {"type": "evaluate", "evaluators": [{"name": "shapes-chair", "config": {"world": {"shapes": ["star", "cross"], "anchors": [["red star", "blue cross"]]}}}]},
        ],
    }
    validated, problems = check_spec(data, plugins)
    assert validated is None
    paths = [p.path for p in problems]
    # the invalid chair config is reported by config validation; the valid but different world by the run check
    assert any(p.startswith("stages[1].evaluators[0].config") for p in paths)
    data["stages"].pop(1)
    validated, problems = check_spec(data, plugins)
    assert validated is None
    assert [(p.path, p.plugin) for p in problems] == [("stages[1].evaluators[0].config.world", "shapes")]
    data["stages"].pop(1)
    validated, problems = check_spec(data, plugins)
    assert validated is not None and problems == []


@pytest.mark.parametrize("bad", [{"n_images": 0}, {"decision": "vote"}, {"extra": 1}])
def test_invalid_evaluator_configs_are_rejected(bad):
    from pydantic import ValidationError

    from mmalign_shapes.config import ShapesPopeConfig

    with pytest.raises(ValidationError):
        ShapesPopeConfig.model_validate(bad)


def test_core_contract_checks():
    """The core's testing kit: entries, sources (with image loading) and both evaluators."""
    from mmalign_core.testing import ScriptedModel, check_evaluator, check_plugin, check_source

    plugins = check_plugin("mmalign_shapes.plugin", name="shapes")
    pairs = check_source(plugins.resolve("preference_source", "shapes-pairs"), {"n_pairs": 20, "yes_no_fraction": 0.3}, limit=20)
    assert len(pairs["pairs"]) == 20
    sft = check_source(plugins.resolve("preference_source", "shapes-sft"), {"n_examples": 20}, limit=20)
    assert len(sft["sft"]) == 20
    pope = check_evaluator(plugins.resolve("evaluator", "shapes-pope"), ScriptedModel("No."), {"n_images": 4, "stats_scenes": 100})
    assert pope.metrics["pope_yes_ratio"] == 0.0
    chair = check_evaluator(
        plugins.resolve("evaluator", "shapes-chair"), ScriptedModel("a red circle."), {"n_images": 4, "n_absent_images": 4}
    )
    assert chair.metrics["objects_per_caption"] == 1.0
