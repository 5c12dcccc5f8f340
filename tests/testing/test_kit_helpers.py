"""The fixtures, the ScriptedModel double and the synthetic data of the kit."""
from __future__ import annotations

import pytest

from mmalign_core import LossEntry, hookimpl
from mmalign_core.manager import get_plugins
from mmalign_core.protocols import GenerativeModel
from mmalign_core.types import GenerationRequest, ImageRef
from mmalign_core.testing import (
    ScriptedModel,
    make_context,
    make_image_ref,
    make_loss_inputs,
    make_pairs,
    make_requests,
    make_sft_examples,
)


def test_mmalign_plugins_holds_only_the_core(mmalign_plugins) -> None:
    assert [(p.name, p.status) for p in mmalign_plugins.infos()] == [("core", "ok")]
    assert mmalign_plugins.entries() == []


class ToyPlugin:
    @hookimpl
    def mmalign_losses(self):
        from mmalign_losses.config import DPOConfig

        return [LossEntry(name="toy-dpo", summary="DPO under another name.", config=DPOConfig,
                          factory="mmalign_losses.dpo:DPOLoss", requires={"reference", "rejected"})]


def test_register_plugin_is_isolated(register_plugin, monkeypatch) -> None:
    monkeypatch.setenv("MMALIGN_DISABLE_PLUGINS", "toy")  # the environment does not reach isolated managers
    plugins = register_plugin(ToyPlugin(), name="toy")
    assert plugins.resolve("loss", "toy-dpo").qualified_name == "toy:toy-dpo"
    assert [p.name for p in plugins.infos()] == ["core", "toy"]
    other = register_plugin(ToyPlugin(), name="toy")
    assert other is not plugins
    assert get_plugins().registry.get("loss", "toy-dpo") is None


def test_register_plugin_by_module_path_and_with_others(register_plugin) -> None:
    plugins = register_plugin("mmalign_losses.plugin", others=[("toy", ToyPlugin())])
    assert plugins.resolve("loss", "dpo").plugin == "mmalign_losses.plugin"
    assert plugins.resolve("loss", "toy-dpo").plugin == "toy"


def test_scripted_model_generates_and_scores() -> None:
    model = ScriptedModel(lambda r: "Yes." if "circle" in r.prompt else "No.")
    assert isinstance(model, GenerativeModel)
    requests = [GenerationRequest(prompt="Is there a circle?", images=[make_image_ref(0)]),
                GenerationRequest(prompt="Is there a star?")]
    assert model.generate(requests, max_new_tokens=4) == ["Yes.", "No."]
    yes, no = model.continuation_logprobs([requests[0]] * 2, ["Yes.", "No."])
    assert yes > no
    assert [c[0] for c in model.calls] == ["generate", "continuation_logprobs"]
    assert model.calls[0][2]["max_new_tokens"] == 4
    assert [a for _, a in model.generated] == ["Yes.", "No."]
    assert model.fingerprint() == ScriptedModel("x").fingerprint()
    model.module.eval()


def test_scripted_model_custom_score_and_request_checks() -> None:
    model = ScriptedModel("A cat.", score=lambda request, text: -float(len(text)))
    assert model.continuation_logprobs(make_requests(1), ["abc"]) == [-3.0]
    with pytest.raises(ValueError, match="1 requests but 2 continuations"):
        model.continuation_logprobs(make_requests(1), ["a", "b"])
    with pytest.raises(TypeError, match="GenerationRequest"):
        model.generate(["Describe the image."])
    with pytest.raises(ValueError, match="empty prompt"):
        model.generate([GenerationRequest(prompt=" ")])
    with pytest.raises(FileNotFoundError):
        model.generate([GenerationRequest(prompt="x", images=[ImageRef("/no/such.png")])])
    with pytest.raises(NotImplementedError, match="only supports generation"):
        model.pair_logps(make_pairs(1))
    lax = ScriptedModel(lambda r: 3, check_requests=False)
    with pytest.raises(TypeError, match="returned int"):
        lax.generate(["anything"])


def test_synthetic_data_is_valid(tmp_path) -> None:
    pairs = make_pairs(3)
    assert len({p.id for p in pairs}) == 3 and all(p.chosen != p.rejected for p in pairs)
    image = pairs[0].images[0].load()
    assert image.mode == "RGB" and image.size == (16, 16)
    assert [e.response for e in make_sft_examples(2)] == [p.chosen for p in pairs[:2]]
    ctx = make_context(tmp_path, seed=3)
    assert ctx.seed == 3 and ctx.output_dir.is_dir() and ctx.cache_dir.is_dir()


def test_loss_inputs_follow_the_requirements() -> None:
    full = make_loss_inputs(3)
    assert full.policy.chosen.shape == (3,) and full.policy.chosen.requires_grad
    assert full.reference is not None and not full.reference.chosen.requires_grad
    assert bool((full.policy.chosen < 0).all()) and bool((full.policy.chosen_tokens >= 1).all())
    sft = make_loss_inputs(2, rejected=False, reference=False)
    assert sft.policy.rejected is None and sft.reference is None
    assert type(sft.pairs[0]).__name__ == "SFTExample"
    again = make_loss_inputs(3)
    assert full.policy.chosen.tolist() == again.policy.chosen.tolist()
