"""The contract checks pass on the official plugins."""
from __future__ import annotations

import pytest

from mmalign_core.testing import (
    ScriptedModel,
    check_entry,
    check_evaluator,
    check_loss,
    check_plugin,
    check_source,
    make_loss_inputs,
)


@pytest.fixture
def losses(register_plugin):
    return register_plugin("mmalign_losses.plugin", name="losses")


def test_dpo_meets_the_loss_contract(losses) -> None:
    entry = losses.resolve("loss", "dpo")
    out = check_loss(entry)
    assert set(entry.metrics) <= set(out.metrics)
    check_loss(entry, {"beta": 0.5, "reduction": "mean"}, batch_size=3)


def test_sft_meets_the_loss_contract(losses) -> None:
    entry = losses.resolve("loss", "sft")
    assert "rejected" not in entry.requires  # so check_loss hands it rejected=None, as an SFT stage does
    check_loss(entry)
    check_loss(entry, {"average": "sequence"})


def test_dpo_output_is_the_one_the_runner_would_see(losses) -> None:
    """check_loss uses the same synthetic inputs a test can build itself."""
    entry = losses.resolve("loss", "dpo")
    inputs = make_loss_inputs(4, seed=7)
    out = entry.build()(inputs)
    out.loss.backward()
    assert inputs.policy.chosen.grad is not None and inputs.reference.chosen.grad is None


def test_tiny_llava_entry() -> None:
    plugins = check_plugin("mmalign_tiny.plugin", name="tiny")
    check_entry(plugins.resolve("model", "tiny-llava"))


def test_every_entry_of_the_official_plugins() -> None:
    for module, name in [("mmalign_losses.plugin", "losses"), ("mmalign_tiny.plugin", "tiny")]:
        plugins = check_plugin(module, name=name)
        assert plugins.entries_of(name)


# ---------------------------------------------------------------- shapes (optional)
@pytest.fixture
def shapes(register_plugin):
    pytest.importorskip("mmalign_shapes.plugin", reason="mmalign-shapes is not installed")
    return register_plugin("mmalign_shapes.plugin", name="shapes")


def test_shapes_sources(shapes) -> None:
    pairs = check_source(shapes.resolve("preference_source", "shapes-pairs"), {"n_pairs": 6}, limit=6)
    assert len(pairs["pairs"]) == 6
    sft = check_source(shapes.resolve("preference_source", "shapes-sft"), {"n_examples": 6}, limit=6)
    assert len(sft["sft"]) == 6


def test_shapes_evaluators_with_a_scripted_model(shapes) -> None:
    always_yes = ScriptedModel("Yes.")
    pope = check_evaluator(shapes.resolve("evaluator", "shapes-pope"), always_yes, {"n_images": 3, "stats_scenes": 100})
    assert pope.metrics["pope_yes_ratio"] == 1.0
    captioner = ScriptedModel(lambda request: "a red circle and a blue square.")
    chair = check_evaluator(shapes.resolve("evaluator", "shapes-chair"), captioner, {"n_images": 3, "n_absent_images": 3})
    assert set(chair.metrics) == set(shapes.resolve("evaluator", "shapes-chair").metrics)
    assert captioner.generated, "the evaluator asked the scripted model for captions"
