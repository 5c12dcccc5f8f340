"""The contract checks fail, with a useful message, on deliberately broken components."""
from __future__ import annotations

import dataclasses
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from mmalign_core import ComponentConfig, EvaluatorEntry, JudgeEntry, LossEntry, SourceEntry
from mmalign_core.entries import EntryError
from mmalign_core.hookspecs import hookimpl
from mmalign_core.protocols import LossOutput
from mmalign_core.types import EvalResult, ImageRef, PreferencePair
from mmalign_core.testing import (
    ContractError,
    PluginRegistrationError,
    ScriptedModel,
    check_entry,
    check_evaluator,
    check_judge,
    check_loss,
    check_plugin,
    check_source,
    make_image_ref,
)

HERE = __name__  # factories below are "<this module>:<name>"


class EmptyConfig(ComponentConfig):
    """No settings."""


def loss_entry(factory: str, **kw) -> LossEntry:
    kw.setdefault("requires", {"reference", "rejected"})
    kw.setdefault("config", EmptyConfig)
    return LossEntry(name="toy", summary="A toy loss.", factory=f"{HERE}:{factory}", **kw)


def problems_of(excinfo: pytest.ExceptionInfo) -> str:
    return "\n".join(excinfo.value.problems)


# ------------------------------------------------------------------------- entries
class Inner(ComponentConfig):
    """A nested block whose field lacks a description (the core's entry validation sees only the top level)."""

    size: int = 3


class NestedUndocumented(ComponentConfig):
    """Top-level fields are described."""

    inner: Inner = Field(default_factory=Inner, description="A nested block.")


class LooseInner(BaseModel):
    """Accepts unknown keys silently."""

    size: int = Field(3, description="A size.")


class NestedLoose(ComponentConfig):
    """Top level forbids unknown keys; the nested block does not."""

    inner: LooseInner = Field(default_factory=LooseInner, description="A nested block.")


class NoDefault(ComponentConfig):
    """A required field: `{"name": "toy"}` alone would be an invalid reference."""

    beta: float = Field(description="Required, no default.")
    mode: Literal["a", "b"] = Field("a", description="Fine.")


def forge(cls, **fields):
    """An entry record that skipped the core's own validation (e.g. built by an older core)."""
    entry = object.__new__(cls)
    defaults = {"capabilities": frozenset(), "requires": frozenset(), "plugin": ""}
    for key, value in {**defaults, **fields}.items():
        object.__setattr__(entry, key, value)
    return entry


def test_field_without_description_is_rejected_at_every_level() -> None:
    class Undocumented(ComponentConfig):
        """Top-level field without a description."""

        beta: float = 0.1

    with pytest.raises(EntryError, match="beta"):  # the core refuses to build such an entry ...
        loss_entry("GoodLoss", config=Undocumented)
    forged = forge(LossEntry, name="toy", summary="A toy loss.", config=Undocumented, factory=f"{HERE}:GoodLoss", metrics=())
    with pytest.raises(ContractError, match="config field 'beta' has no description"):  # ... and so does the kit
        check_entry(forged)
    nested = loss_entry("GoodLoss", config=NestedUndocumented)  # passes the core, not the kit
    with pytest.raises(ContractError, match=r"config field 'inner\.size' has no description"):
        check_entry(nested)


def test_nested_config_must_forbid_unknown_keys() -> None:
    with pytest.raises(ContractError, match=r"LooseInner \(at 'inner'\) must set extra='forbid'"):
        check_entry(loss_entry("GoodLoss", config=NestedLoose))


def test_config_must_build_from_defaults() -> None:
    with pytest.raises(ContractError, match="fields without a default: beta"):
        check_entry(loss_entry("GoodLoss", config=NoDefault))


def test_factory_must_import_and_take_the_config() -> None:
    with pytest.raises(ContractError, match="cannot be imported: ModuleNotFoundError"):
        check_entry(LossEntry(name="toy", summary="A toy loss.", config=EmptyConfig, factory="no_such_module_xyz:Loss"))
    with pytest.raises(ContractError, match="cannot be imported: AttributeError"):
        check_entry(loss_entry("NoSuchAttr"))
    with pytest.raises(ContractError, match=r"cannot be called as factory\(config\)"):
        check_entry(loss_entry("make_without_arguments"))


def test_bad_names_summary_and_requirements_are_all_listed() -> None:
    forged = forge(
        LossEntry, name="Toy_Loss", summary="two\nlines", config=EmptyConfig, factory=f"{HERE}:GoodLoss",
        requires=frozenset({"reference", "rejected", "judge"}), metrics=("loss", "loss"),
    )
    with pytest.raises(ContractError) as excinfo:
        check_entry(forged)
    text = problems_of(excinfo)
    for fragment in ["kebab-case", "one non-empty line", "'judge'", "declared twice: loss"]:
        assert fragment in text


def test_evaluator_and_source_declarations() -> None:
    ev = EvaluatorEntry(name="toy", summary="A toy evaluator.", config=EmptyConfig, factory=f"{HERE}:GoodEvaluator")
    with pytest.raises(ContractError, match="must declare the metric names"):
        check_entry(ev)
    src = SourceEntry(name="toy", summary="A toy source.", config=EmptyConfig, factory=f"{HERE}:GoodSource",
                      capabilities={"static", "online"})
    with pytest.raises(ContractError) as excinfo:
        check_entry(src)
    assert "'pairs' and/or 'sft'" in problems_of(excinfo) and "both 'static' and 'online'" in problems_of(excinfo)


def make_without_arguments():
    return GoodLoss(EmptyConfig())


# ---------------------------------------------------------------------------- loss
class GoodLoss:
    def __init__(self, config):
        self.config = config

    def margins(self, inputs):
        pol, ref = inputs.policy, inputs.reference
        return (pol.chosen - ref.chosen) - (pol.rejected - ref.rejected)

    def __call__(self, inputs):
        import torch.nn.functional as F

        loss = -F.logsigmoid(0.1 * self.margins(inputs)).mean()
        return LossOutput(loss=loss, metrics={"loss": float(loss.detach())})


class NonScalarLoss(GoodLoss):
    def __call__(self, inputs):
        import torch.nn.functional as F

        losses = -F.logsigmoid(0.1 * self.margins(inputs))  # forgot .mean()
        return LossOutput(loss=losses, metrics={"loss": float(losses.detach().mean())})


class DetachedLoss(GoodLoss):
    def __call__(self, inputs):
        out = super().__call__(inputs)
        return LossOutput(loss=out.loss.detach(), metrics=out.metrics)


class NaNLoss(GoodLoss):
    def __call__(self, inputs):
        out = super().__call__(inputs)
        return LossOutput(loss=out.loss * float("nan"), metrics=out.metrics)


class TensorMetricLoss(GoodLoss):
    def __call__(self, inputs):
        out = super().__call__(inputs)
        return LossOutput(loss=out.loss, metrics={"loss": out.loss})


class ChosenOnlyLoss(GoodLoss):
    """Declares 'rejected' but never looks at it."""

    def __call__(self, inputs):
        loss = -inputs.policy.chosen.mean()
        return LossOutput(loss=loss, metrics={"loss": float(loss.detach())})


class TupleLoss(GoodLoss):
    def __call__(self, inputs):
        out = super().__call__(inputs)
        return out.loss, out.metrics


def test_good_loss_passes() -> None:
    out = check_loss(loss_entry("GoodLoss", metrics=("loss",)))
    assert out.loss.dim() == 0


@pytest.mark.parametrize(
    "factory, message",
    [
        ("NonScalarLoss", r"loss must be a scalar \(0-dim\) tensor, got shape \[4\]"),
        ("DetachedLoss", "loss has no gradient graph"),
        ("NaNLoss", "loss is not finite"),
        ("TensorMetricLoss", "metric 'loss' is a tensor"),
        ("ChosenOnlyLoss", "no gradient reaches the policy's rejected log-probs"),
        ("TupleLoss", "it returned tuple, not mmalign_core.protocols.LossOutput"),
    ],
)
def test_broken_losses_fail(factory: str, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        check_loss(loss_entry(factory))


def test_declared_metric_must_be_logged() -> None:
    with pytest.raises(ContractError, match="declared metrics missing from LossOutput.metrics: rewards/margin"):
        check_loss(loss_entry("GoodLoss", metrics=("loss", "rewards/margin")))


def test_undeclared_requirement_is_explained() -> None:
    """A loss that reads rejected answers without declaring it gets rejected=None, as in a run."""
    with pytest.raises(ContractError, match="must declare requires=") as excinfo:
        check_loss(loss_entry("GoodLoss", requires=set()))
    assert "AttributeError" in problems_of(excinfo) or "TypeError" in problems_of(excinfo)


def test_wrong_kind_is_a_usage_error() -> None:
    with pytest.raises(TypeError, match="check_loss"):
        check_loss(EvaluatorEntry(name="toy", summary="x", config=EmptyConfig, factory=f"{HERE}:GoodEvaluator", metrics=("m",)))


# ------------------------------------------------------------------------ evaluator
class GoodEvaluator:
    metrics = {"accuracy": 1.0}
    higher = {"accuracy": True}

    def __init__(self, config):
        self.config = config

    def evaluate(self, model, ctx):
        from mmalign_core.types import GenerationRequest

        answers = model.generate([GenerationRequest(prompt="Is there a circle?", images=[make_image_ref(0)])])
        return EvalResult(metrics=dict(self.metrics), higher_is_better=dict(self.higher), n=len(answers),
                          records=[{"answer": a} for a in answers])


class UndeclaredMetricEvaluator(GoodEvaluator):
    metrics = {"accuracy": 1.0, "f1": 0.5}
    higher = {"accuracy": True, "f1": True}


class MissingDirectionEvaluator(GoodEvaluator):
    higher = {}


class NaNEvaluator(GoodEvaluator):
    metrics = {"accuracy": float("nan")}


class BadImageEvaluator(GoodEvaluator):
    def evaluate(self, model, ctx):
        from mmalign_core.types import GenerationRequest

        model.generate([GenerationRequest(prompt="Describe.", images=["/no/such/image.png"])])
        return super().evaluate(model, ctx)


def evaluator_entry(factory: str) -> EvaluatorEntry:
    return EvaluatorEntry(name="toy", summary="A toy evaluator.", config=EmptyConfig, factory=f"{HERE}:{factory}",
                          requires={"generate"}, metrics=("accuracy",))


def test_good_evaluator_passes() -> None:
    model = ScriptedModel("yes")
    result = check_evaluator(evaluator_entry("GoodEvaluator"), model)
    assert result.records == [{"answer": "yes"}] and len(model.generated) == 1


@pytest.mark.parametrize(
    "factory, message",
    [
        ("UndeclaredMetricEvaluator", "reports undeclared metrics: f1"),
        ("MissingDirectionEvaluator", "higher_is_better does not say how to read: accuracy"),
        ("NaNEvaluator", "metric 'accuracy' is not finite"),
        ("BadImageEvaluator", "GenerationRequest.images must hold ImageRef objects, got str"),
    ],
)
def test_broken_evaluators_fail(factory: str, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        check_evaluator(evaluator_entry(factory), ScriptedModel("yes"))


def test_evaluator_needing_generation_rejects_a_model_without_it() -> None:
    with pytest.raises(ContractError, match="requires 'generate'"):
        check_evaluator(evaluator_entry("GoodEvaluator"), object())


# --------------------------------------------------------------------------- source
class GoodSource:
    chosen = "A red square."
    rejected = "A blue square."

    def __init__(self, config):
        self.config = config

    def item(self, i):
        return PreferencePair(id=f"p{i}", prompt="Describe the image.", chosen=self.chosen, rejected=self.rejected,
                              images=[make_image_ref(i)])

    def pairs(self, ctx):
        for i in range(3):
            yield self.item(i)

    def fingerprint(self):
        return "toy-v1"


class SameAnswerSource(GoodSource):
    rejected = GoodSource.chosen


class PathImageSource(GoodSource):
    def item(self, i):
        pair = super().item(i)
        return dataclasses.replace(pair, images=["picture.png"])


class MissingImageSource(GoodSource):
    def item(self, i):
        return dataclasses.replace(super().item(i), images=[ImageRef("/no/such/image.png")])


class DuplicateIdSource(GoodSource):
    def item(self, i):
        return dataclasses.replace(super().item(i), id="same")


class RandomFingerprintSource(GoodSource):
    def fingerprint(self):
        import uuid

        return uuid.uuid4().hex


class ShuffledSource(GoodSource):
    """Each instance yields another order (as one seeded from the clock, not from ctx.seed, would)."""

    built = 0

    def __init__(self, config):
        super().__init__(config)
        ShuffledSource.built += 1
        self.shift = ShuffledSource.built

    def pairs(self, ctx):
        for i in range(3):
            yield self.item((i + self.shift) % 3)


class EmptySource(GoodSource):
    def pairs(self, ctx):
        return iter(())


def source_entry(factory: str) -> SourceEntry:
    return SourceEntry(name="toy", summary="A toy source.", config=EmptyConfig, factory=f"{HERE}:{factory}",
                       capabilities={"pairs", "static"})


def test_good_source_passes(mmalign_context) -> None:
    found = check_source(source_entry("GoodSource"))
    assert [p.id for p in found["pairs"]] == ["p0", "p1", "p2"]
    assert check_source(source_entry("GoodSource"), ctx=mmalign_context, limit=2)["pairs"][1].id == "p1"


@pytest.mark.parametrize(
    "factory, message",
    [
        ("SameAnswerSource", "chosen and rejected are the same text"),
        ("PathImageSource", "images\\[0\\] is a str, not an ImageRef"),
        ("MissingImageSource", "images\\[0\\] \\(path:/no/such/image.png\\) does not load: FileNotFoundError"),
        ("DuplicateIdSource", "share the id 'same'"),
        ("RandomFingerprintSource", "fingerprint\\(\\) is not stable"),
        ("ShuffledSource", "a static source must yield the same examples"),
        ("EmptySource", "yielded no examples"),
    ],
)
def test_broken_sources_fail(factory: str, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        check_source(source_entry(factory))


# ---------------------------------------------------------------------------- judge
class GoodJudge:
    """Answers every judging prompt with its length."""

    def __init__(self, config):
        self.config = config

    def complete(self, requests, ctx):
        return [f"Rating: {len(r.prompt) % 7}" for r in requests]

    def describe(self):
        return {"judge": "good", "version": 1}


class OneReplyShortJudge(GoodJudge):
    def complete(self, requests, ctx):
        return super().complete(requests, ctx)[:-1]


class NonStringJudge(GoodJudge):
    def complete(self, requests, ctx):
        return [{"score": 1} for _ in requests]


class RaisingJudge(GoodJudge):
    def complete(self, requests, ctx):
        raise RuntimeError("the judge service is down")


class UnstableIdentityJudge(GoodJudge):
    calls = 0

    def describe(self):
        UnstableIdentityJudge.calls += 1
        return {"judge": "unstable", "call": UnstableIdentityJudge.calls}


class OpaqueIdentityJudge(GoodJudge):
    def describe(self):
        return {"judge": object()}


class NoDescribeJudge:
    def __init__(self, config):
        pass

    def complete(self, requests, ctx):
        return ["ok" for _ in requests]


class NotAJudge:
    def __init__(self, config):
        pass


def judge_entry(factory: str) -> JudgeEntry:
    return JudgeEntry(name="toy", summary="A toy judge.", config=EmptyConfig, factory=f"{HERE}:{factory}")


def test_good_judge_passes(mmalign_context) -> None:
    from mmalign_core.testing import make_requests

    assert isinstance(check_judge(judge_entry("GoodJudge")), GoodJudge)
    assert isinstance(check_judge(judge_entry("GoodJudge"), requests=make_requests(3), ctx=mmalign_context), GoodJudge)


@pytest.mark.parametrize(
    "factory, message",
    [
        ("NotAJudge", r"without a complete\(requests, ctx\) method and a describe\(\) method"),
        ("NoDescribeJudge", r"without a describe\(\) method"),
        ("OneReplyShortJudge", "returned 2 replies for 3 requests"),
        ("NonStringJudge", "replies must be str, got dict"),
        ("RaisingJudge", r"complete\(requests, ctx\) raised RuntimeError: the judge service is down"),
        ("UnstableIdentityJudge", r"describe\(\) is not stable"),
        ("OpaqueIdentityJudge", r"describe\(\) does not serialise to JSON"),
    ],
)
def test_broken_judges_fail(factory: str, message: str) -> None:
    from mmalign_core.testing import make_requests

    with pytest.raises(ContractError, match=message):
        check_judge(judge_entry(factory), requests=make_requests(3))


# -------------------------------------------------------------------------- plugins
class BrokenPlugin:
    @hookimpl
    def mmalign_losses(self):
        raise RuntimeError("cannot list my losses")


class NestedUndocumentedPlugin:
    @hookimpl
    def mmalign_losses(self):
        return [loss_entry("GoodLoss", config=NestedUndocumented)]


def test_register_plugin_surfaces_load_errors(register_plugin) -> None:
    with pytest.raises(PluginRegistrationError, match="RuntimeError: cannot list my losses"):
        register_plugin(BrokenPlugin(), name="broken")
    plugins = register_plugin(BrokenPlugin(), name="broken", strict=False)
    assert plugins.info("broken").status == "broken"


def test_check_plugin_reports_every_entry() -> None:
    with pytest.raises(ContractError, match=r"loss 'bad:toy': config field 'inner\.size' has no description"):
        check_plugin(NestedUndocumentedPlugin(), name="bad")


class _EmbedderCfg(ComponentConfig):
    """Which way the embedder is broken."""

    fault: str = Field("none", description="none | unnormalised | batch | unstable")


class _Embedder:
    def __init__(self, config: _EmbedderCfg):
        self.fault = config.fault
        self.calls = 0

    def describe(self) -> dict:
        self.calls += 1
        return {"embedder": "toy", "call": self.calls} if self.fault == "unstable" else {"embedder": "toy"}

    def embed(self, texts):
        import numpy as np

        rows = np.array([[len(t) + 1.0, t.count("a") + 1.0, 1.0] for t in texts], dtype=np.float32).reshape(len(texts), 3)
        if self.fault == "batch":  # batch statistics leak into each row
            rows = rows - rows.mean(axis=0, keepdims=True) + 0.5
        if self.fault != "unnormalised":
            rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return rows


def make_toy_embedder(config: _EmbedderCfg) -> _Embedder:
    return _Embedder(config)


def _embedder_entry():
    from mmalign_core import EmbedderEntry

    return EmbedderEntry(name="toy-embedder", summary="A deliberately breakable embedder.", config=_EmbedderCfg,
                         factory=f"{HERE}:make_toy_embedder")


@pytest.mark.parametrize("fault, message", [
    ("unnormalised", "norm 1"),
    ("batch", "depends on the other texts"),
    ("unstable", r"describe\(\) is not stable"),
])
def test_broken_embedders_fail(fault: str, message: str) -> None:
    from mmalign_core.testing import check_embedder

    entry = _embedder_entry()
    assert check_embedder(entry) is not None  # the unbroken one passes
    with pytest.raises(ContractError, match=message):
        check_embedder(entry, {"fault": fault})
