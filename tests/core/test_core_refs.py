"""NestedComponent: components named inside a component's config are resolved and validated like top-level ones."""
from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import Field, ValidationError

from mmalign_core import ComponentConfig, JudgeEntry, NestedComponent, hookimpl
from mmalign_core.testing import plugins_with


class _ToyJudgeConfig(ComponentConfig):
    """A judge that always says the same."""

    reply: str = Field("Response 1", description="What it answers.")
    temperature: float = Field(0.0, ge=0, description="Unused; a field to misspell.")


class _ToyJudge:
    def __init__(self, config: _ToyJudgeConfig):
        self.config = config

    def complete(self, requests, ctx):
        return [self.config.reply for _ in requests]

    def describe(self):
        return {"judge": "toy", "reply": self.config.reply}


def make_toy_judge(config: _ToyJudgeConfig) -> _ToyJudge:
    return _ToyJudge(config)


class _ToyPlugin:
    @hookimpl
    def mmalign_judges(self):
        return [JudgeEntry(name="toy-judge", summary="Always the same reply.", config=_ToyJudgeConfig,
                           factory=f"{__name__}:make_toy_judge", capabilities=frozenset({"pairwise"}))]


class JudgeRef(NestedComponent):
    """The judge of a toy evaluator."""

    kind: ClassVar[str] = "judge"


class PairwiseJudgeRef(NestedComponent):
    """A judge that must compare answers."""

    kind: ClassVar[str] = "judge"
    needs_any: ClassVar[tuple[str, ...]] = ("pairwise",)


class ScalarJudgeRef(NestedComponent):
    """A judge that must not be pairwise."""

    kind: ClassVar[str] = "judge"
    refuses: ClassVar[tuple[str, ...]] = ("pairwise",)


class EvaluatorConfig(ComponentConfig):
    """An evaluator config that names a judge."""

    judge: JudgeRef = Field(description="The judge.")


@pytest.fixture()
def plugins():
    return plugins_with(_ToyPlugin(), "toy")


def test_resolves_qualifies_and_writes_defaults(plugins) -> None:
    cfg = EvaluatorConfig.model_validate({"judge": {"name": "toy-judge"}}, context={"plugins": plugins})
    assert cfg.judge.name == "toy:toy-judge"
    assert cfg.judge.config == {"reply": "Response 1", "temperature": 0.0}
    judge = cfg.judge.build(plugins)
    assert judge.complete([1, 2], None) == ["Response 1", "Response 1"]


def test_errors_name_the_problem(plugins) -> None:
    with pytest.raises(ValidationError, match="(?s)judge.*Did you mean 'toy-judge'"):
        EvaluatorConfig.model_validate({"judge": {"name": "toy-jugde"}}, context={"plugins": plugins})
    with pytest.raises(ValidationError, match=r"invalid config for judge 'toy:toy-judge': config.temprature: unknown field; did you mean 'temperature'"):
        EvaluatorConfig.model_validate({"judge": {"name": "toy-judge", "config": {"temprature": 1}}}, context={"plugins": plugins})
    with pytest.raises(ValidationError, match=r"config.temperature: Input should be greater than or equal to 0"):
        EvaluatorConfig.model_validate({"judge": {"name": "toy-judge", "config": {"temperature": -1}}}, context={"plugins": plugins})


def test_capability_rules(plugins) -> None:
    PairwiseJudgeRef.model_validate({"name": "toy-judge"}, context={"plugins": plugins})
    with pytest.raises(ValidationError, match="cannot be used here: it is or needs pairwise"):
        ScalarJudgeRef.model_validate({"name": "toy-judge"}, context={"plugins": plugins})


def test_the_manager_under_validation_is_used_not_the_process_wide_one(plugins) -> None:
    """validate_spec passes its manager: a judge only it knows resolves, and one only the process knows does not."""
    from mmalign_core.testing import plugins_with as isolated

    with pytest.raises(ValidationError, match="toy-judge"):
        EvaluatorConfig.model_validate({"judge": {"name": "toy-judge"}})  # the process-wide manager has no toy plugin
    bare = isolated(_ToyPlugin(), "toy")
    assert EvaluatorConfig.model_validate({"judge": {"name": "toy-judge"}}, context={"plugins": bare}).judge.name == "toy:toy-judge"
    from mmalign_core.manager import get_plugins

    if any(e.name == "scripted-judge" for e in get_plugins().entries("judge")):  # the evals plugin is installed
        EvaluatorConfig.model_validate({"judge": {"name": "scripted-judge"}})
        with pytest.raises(ValidationError, match="scripted-judge"):
            EvaluatorConfig.model_validate({"judge": {"name": "scripted-judge"}}, context={"plugins": bare})
