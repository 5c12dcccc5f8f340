"""shapes-pope and shapes-chair against scripted fake models with known answers."""
from __future__ import annotations

import re
from typing import Callable, Sequence

import pytest

from mmalign_core import EvalResult, GenerationRequest
from mmalign_core.protocols import Context
from mmalign_shapes.config import CHAIR_METRICS, POPE_METRICS, ShapesChairConfig, ShapesPopeConfig, WorldConfig
from mmalign_shapes.evaluators import ShapesChairEvaluator, ShapesPopeEvaluator, make_chair_evaluator, make_pope_evaluator
from mmalign_shapes.text import ShapeObject
from mmalign_shapes.world import Scene, ShapesWorld

QUESTION = re.compile(r"^Is there an? (\w+ \w+) in the image\?$")


class ScriptedModel:
    """Implements the two model-protocol calls the evaluators use, from ground truth.

    ``caption(scene)`` gives the caption for a "Describe the image." request;
    ``says_yes(scene, obj)`` decides yes/no questions, both in log-prob and in
    generate mode. Every call is recorded.
    """

    def __init__(
        self,
        world: ShapesWorld,
        caption: Callable[[Scene], str] = lambda s: s.caption,
        says_yes: Callable[[Scene, ShapeObject], bool] = lambda s, o: o in s,
        yes_text: str = "Yes.",
        no_text: str = "No.",
    ):
        self.world = world
        self.caption = caption
        self.says_yes = says_yes
        self.yes_text, self.no_text = yes_text, no_text
        self.calls: list[tuple[str, int, int]] = []

    def _scene(self, request: GenerationRequest) -> Scene:
        assert len(request.images) == 1
        return self.world.scene_from_key(request.images[0].key)

    def _question(self, request: GenerationRequest) -> ShapeObject | None:
        m = QUESTION.match(request.prompt)
        return self.world.object(m.group(1)) if m else None

    def generate(self, requests: Sequence[GenerationRequest], *, max_new_tokens: int = 64, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 16) -> list[str]:
        assert not do_sample
        self.calls.append(("generate", len(requests), batch_size))
        out = []
        for r in requests:
            obj = self._question(r)
            if obj is None:
                assert r.prompt == "Describe the image."
                out.append(self.caption(self._scene(r)))
            else:
                out.append(self.yes_text if self.says_yes(self._scene(r), obj) else self.no_text)
        return out

    def continuation_logprobs(self, requests: Sequence[GenerationRequest], continuations: Sequence[str], *,
                              batch_size: int = 32) -> list[float]:
        assert len(requests) == len(continuations)
        self.calls.append(("logprobs", len(requests), batch_size))
        out = []
        for r, c in zip(requests, continuations):
            obj = self._question(r)
            assert obj is not None and c in ("Yes.", "No.")
            yes = self.says_yes(self._scene(r), obj)
            out.append(-0.1 if (c == "Yes.") == yes else -3.0)
        return out


class RecordingProgress:
    def __init__(self):
        self.descs: list[str] = []

    def __call__(self, iterable, desc: str = "", total: int | None = None):
        self.descs.append(desc)
        assert total == len(iterable)
        return iterable


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld()


def small_pope(**kw) -> ShapesPopeEvaluator:
    return make_pope_evaluator(ShapesPopeConfig(n_images=40, stats_scenes=1000, batch_size=16, **kw))


def small_chair(**kw) -> ShapesChairEvaluator:
    return make_chair_evaluator(ShapesChairConfig(n_images=40, n_absent_images=40, batch_size=16, **kw))


def check_declared(result: EvalResult, declared: tuple[str, ...]) -> None:
    assert set(result.metrics) == set(declared)
    assert set(result.higher_is_better) == set(declared)
    assert all(isinstance(v, float) for v in result.metrics.values())


# ------------------------------------------------------------------ POPE
def test_pope_perfect_model(world):
    evaluator = small_pope()
    progress = RecordingProgress()
    model = ScriptedModel(world)
    result = evaluator.evaluate(model, Context(progress=progress))
    check_declared(result, POPE_METRICS)
    for split in ("random", "popular", "adversarial"):
        assert result.metrics[f"pope_{split}_accuracy"] == 1.0
        assert result.metrics[f"pope_{split}_precision"] == 1.0
        assert result.metrics[f"pope_{split}_recall"] == 1.0
        assert result.metrics[f"pope_{split}_f1"] == 1.0
        assert result.metrics[f"pope_{split}_yes_ratio"] == 0.5
    assert result.metrics["pope_f1"] == 1.0 and result.metrics["pope_yes_ratio"] == 0.5
    assert result.higher_is_better["pope_f1"] and not result.higher_is_better["pope_yes_ratio"]
    assert progress.descs and set(progress.descs) == {"shapes-pope"}
    assert all(kind == "logprobs" and bs == 16 and n <= 32 for kind, n, bs in model.calls)
    assert result.n == len(result.records) == sum(result.details["questions_per_split"].values())


def test_pope_always_yes(world):
    result = small_pope().evaluate(ScriptedModel(world, says_yes=lambda s, o: True), Context())
    for split in ("random", "popular", "adversarial"):
        assert result.metrics[f"pope_{split}_yes_ratio"] == 1.0
        assert result.metrics[f"pope_{split}_precision"] == 0.5
        assert result.metrics[f"pope_{split}_recall"] == 1.0
        assert result.metrics[f"pope_{split}_accuracy"] == 0.5
        assert result.metrics[f"pope_{split}_f1"] == pytest.approx(2 / 3)
    assert result.metrics["pope_f1"] == pytest.approx(2 / 3)
    assert result.metrics["pope_yes_ratio"] == 1.0


def test_pope_always_no(world):
    result = small_pope().evaluate(ScriptedModel(world, says_yes=lambda s, o: False), Context())
    assert result.metrics["pope_random_precision"] == 0.0
    assert result.metrics["pope_random_recall"] == 0.0
    assert result.metrics["pope_f1"] == 0.0
    assert result.metrics["pope_accuracy"] == 0.5
    assert result.metrics["pope_yes_ratio"] == 0.0


def test_pope_splits_are_balanced_and_adversarial_targets_the_partner(world):
    evaluator = small_pope(absent_fraction=1.0)
    questions = evaluator.questions()
    for split in ("random", "popular", "adversarial"):
        labels = [q.label for q in questions if q.split == split]
        assert sum(labels) * 2 == len(labels)
    for q in questions:
        assert (q.obj in q.scene) is q.label
    for scene in evaluator.scenes():
        negatives = [q.obj for q in questions if q.split == "adversarial" and q.scene == scene and not q.label]
        assert world.partner_of[scene.focus] in negatives
        popular = [q.obj for q in questions if q.split == "popular" and q.scene == scene and not q.label]
        assert popular[0] in set(world.partner_of.values())


def test_pope_prior_model_fails_adversarial_more(world):
    """A model that says yes to present objects and to the missing partners of present anchors."""
    prior = lambda s, o: o in s or o in world.absent_partners(s.objects)  # noqa: E731
    result = small_pope(absent_fraction=1.0).evaluate(ScriptedModel(world, says_yes=prior), Context())
    assert result.metrics["pope_adversarial_recall"] == 1.0
    assert result.metrics["pope_adversarial_accuracy"] < result.metrics["pope_random_accuracy"]
    assert result.metrics["pope_adversarial_yes_ratio"] > result.metrics["pope_random_yes_ratio"]


def test_pope_generate_decision(world):
    evaluator = small_pope(decision="generate")
    model = ScriptedModel(world, yes_text="Yes, there is.", no_text="I do not see it.")
    result = evaluator.evaluate(model, Context())
    check_declared(result, POPE_METRICS)
    assert result.metrics["pope_f1"] == 1.0
    assert all(kind == "generate" for kind, _, _ in model.calls)
    # answers without any yes/no word count as "no"
    mumbling = ScriptedModel(world, yes_text="a red circle.", no_text="hmm")
    result = evaluator.evaluate(mumbling, Context())
    assert result.metrics["pope_yes_ratio"] == 0.0
    assert result.details["unparsed_answers"] == result.details["unique_probes"]


def test_pope_is_deterministic_and_disjoint_from_training(world):
    a = [(q.split, q.scene.key, q.obj) for q in small_pope().questions()]
    b = [(q.split, q.scene.key, q.obj) for q in small_pope().questions()]
    assert a == b
    assert all(key.split(":")[1] in ("eval", "eval+absent") for _, key, _ in a)
    assert a != [(q.split, q.scene.key, q.obj) for q in small_pope(seed=1).questions()]


# ------------------------------------------------------------------ CHAIR
def test_chair_perfect_model(world):
    progress = RecordingProgress()
    model = ScriptedModel(world)
    result = small_chair().evaluate(model, Context(progress=progress))
    check_declared(result, CHAIR_METRICS)
    m = result.metrics
    assert m["chair_i"] == 0.0 and m["chair_s"] == 0.0 and m["recall"] == 1.0
    assert m["absent_chair_i"] == 0.0 and m["absent_recall"] == 1.0
    assert m["partner_hallucination"] == 0.0 and m["control_hallucination"] == 0.0
    evaluator = small_chair()
    natural = [s for s in evaluator.scenes() if not s.absent]
    assert m["objects_per_caption"] == pytest.approx(sum(len(s.objects) for s in natural) / len(natural))
    assert set(progress.descs) == {"shapes-chair"}
    assert all(kind == "generate" and bs == 16 and n <= 16 for kind, n, bs in model.calls)
    assert result.n == len(result.records) == 80
    record = result.records[0]
    assert set(record) >= {"id", "caption", "truth", "parsed", "hallucinated"}
    directions = result.higher_is_better
    assert not directions["chair_i"] and not directions["partner_hallucination"] and directions["recall"]


def test_chair_partner_naming_model(world):
    """Captions that always add the missing partner of every present anchor."""
    def with_partners(scene: Scene) -> str:
        return world.caption([*scene.objects, *world.absent_partners(scene.objects)])

    evaluator = small_chair()
    result = evaluator.evaluate(ScriptedModel(world, caption=with_partners), Context())
    m = result.metrics
    assert m["partner_hallucination"] == 1.0
    assert m["control_hallucination"] == 0.0
    assert m["absent_recall"] == 1.0 and m["recall"] == 1.0
    # CHAIR by hand: added partners over all mentions, per set
    for absent, key_i, key_o in ((False, "chair_i", "objects_per_caption"), (True, "absent_chair_i", "absent_objects_per_caption")):
        scenes = [s for s in evaluator.scenes() if s.absent is absent]
        added = sum(len(world.absent_partners(s.objects)) for s in scenes)
        mentions = sum(len(s.objects) for s in scenes) + added
        assert m[key_i] == pytest.approx(added / mentions)
        assert m[key_o] == pytest.approx(mentions / len(scenes))
    assert m["absent_chair_i"] > 0
    scenes = [s for s in evaluator.scenes() if not s.absent]
    with_error = sum(bool(world.absent_partners(s.objects)) for s in scenes)
    assert m["chair_s"] == pytest.approx(with_error / len(scenes))
    assert result.details["partner_trials"] >= 40 and result.details["control_trials"] > 0


def test_chair_control_model(world):
    """Naming every partner whose anchor is absent: control 1, partner 0."""
    def non_partner(scene: Scene) -> str:
        extra = [p for a, p in world.partner_of.items() if a not in scene and p not in scene]
        return world.caption([*scene.objects, *extra])

    result = small_chair().evaluate(ScriptedModel(world, caption=non_partner), Context())
    assert result.metrics["partner_hallucination"] == 0.0
    assert result.metrics["control_hallucination"] == 1.0


def test_chair_silent_and_half_recall_models(world):
    result = small_chair().evaluate(ScriptedModel(world, caption=lambda s: "I cannot tell."), Context())
    m = result.metrics
    assert m["recall"] == 0.0 and m["absent_recall"] == 0.0
    assert m["chair_i"] == 0.0 and m["chair_s"] == 0.0 and m["objects_per_caption"] == 0.0

    evaluator = small_chair()
    first_only = ScriptedModel(world, caption=lambda s: world.caption(s.objects[:1]))
    m = evaluator.evaluate(first_only, Context()).metrics
    natural = [s for s in evaluator.scenes() if not s.absent]
    assert m["recall"] == pytest.approx(len(natural) / sum(len(s.objects) for s in natural))
    assert m["objects_per_caption"] == 1.0


def test_chair_sets_are_held_out(world):
    evaluator = small_chair()
    scenes = evaluator.scenes()
    assert sum(s.absent for s in scenes) == 40
    for s in scenes:
        assert s.split == "eval"
        if s.absent:
            assert world.partner_of[s.focus] not in s


def test_chair_needs_anchors():
    with pytest.raises(ValueError):
        ShapesChairConfig(world=WorldConfig(anchors=[]))
