"""The judges: the verdict parser, shapes-oracle, vlm-judge (model and self), reward-model training, contracts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmalign_core.manager import get_plugins
from mmalign_core.testing import ScriptedModel, check_judge, check_source, make_image_ref
from mmalign_core.types import GenerationRequest
from mmalign_online.config import DEFAULT_TEMPLATE, RewardTrainConfig, VLMJudgeConfig
from mmalign_online.judges import VLMJudge
from mmalign_online.verdict import (
    Comparison,
    compare_with,
    extract_pairwise,
    pairwise_prompt,
    parse_verdict,
    render_verdict,
)


@pytest.mark.parametrize("text, choice", [
    ("Response 2 is better because it is accurate.", 2),
    ("response 1 was more accurate", 1),
    ("**Response 1** is better.", 1),
    ("Response (2) is clearly better", 2),
    ("Response #1 is superior.", 1),
    ("Response 1 is worse than response 2.", 2),
    ("Response 2 is not better than Response 1.", 1),
    ("I prefer Response 2.", 2),
    ("The second response is better.", 2),
    ("The first one is worse.", 2),
    ("2", 2),
    ("Response 1.", 1),
    ("Better response: 2", 2),
    ("Response 1 has fewer hallucinations than Response 2.", 1),
    ("Response 2 has more hallucinations.", 1),
    ("Response 1 is more hallucinated than Response 2", 2),
    ("Response 2 is less hallucinated", 2),
    ("Looking at the image, Response 2 describes it.", 2),  # the paper's fallback: the first response named
    ("I think answer one is best", 1),
    ("Response 1 is better than Response 2, but Response 2 is more detailed.", 1),  # the first decision counts
])
def test_parser_reads_verdicts(text: str, choice: int) -> None:
    assert parse_verdict(text) == (choice, "ok")


@pytest.mark.parametrize("text", ["Both responses are equally good.", "It's a tie.", "Neither response is correct.",
                                  "There is no clear winner here."])
def test_parser_reads_ties(text: str) -> None:
    assert parse_verdict(text) == (None, "tie")


@pytest.mark.parametrize("text", ["", "   ", "a red circle and a blue square.", "I cannot see the image.", None])
def test_parser_flags_unreadable_replies(text) -> None:
    assert parse_verdict(text) == (None, "unparsable")


def test_prompt_round_trip_and_rendered_verdicts() -> None:
    prompt = pairwise_prompt("Describe the image.", "a red circle.", "a blue\nsquare.")
    assert extract_pairwise(prompt) == ("Describe the image.", "a red circle.", "a blue\nsquare.")
    assert prompt.startswith("You are an expert annotator") and "Response 1: a red circle." in prompt
    assert parse_verdict(render_verdict(2, "why")) == (2, "ok") and parse_verdict(render_verdict(None)) == (None, "tie")
    with pytest.raises(ValueError, match="response_2"):
        VLMJudgeConfig.model_validate({"self": True, "template": "{instructions} {question} {response_1}"})
    with pytest.raises(ValueError, match="placeholder"):
        VLMJudgeConfig.model_validate({"self": True, "template": DEFAULT_TEMPLATE + " {score}"})


# ------------------------------------------------------------------------------ shapes oracle
def _oracle_and_scene(**cfg):
    from mmalign_shapes.world import ShapesWorld

    judge = get_plugins().resolve("judge", "shapes-oracle").build(cfg)
    world = ShapesWorld(judge.world.config)
    scene = world.scene("align", 0, 3)
    return judge, world, scene


def test_oracle_prefers_fewer_hallucinated_objects(ctx) -> None:
    judge, world, scene = _oracle_and_scene()
    req = GenerationRequest("Describe the image.", [world.image_ref(scene)])
    absent = [o for o in world.objects if o not in scene.objects]
    truth = world.caption(scene.objects)
    halluc = world.caption(list(scene.objects) + absent[:1])
    short = world.caption(scene.objects[:1])
    v = judge.compare([Comparison(req, [halluc, truth]), Comparison(req, [truth, truth + " "]), Comparison(req, [short, halluc])], ctx)
    assert (v[0].best, v[0].worst, v[0].status) == (1, 0, "ok")
    assert v[1].status == "tie"
    assert v[2].best == 0  # hallucination first: saying less beats naming an absent object
    balanced, _, _ = _oracle_and_scene(criterion="balanced")
    if len(scene.objects) >= 3:
        assert balanced.compare([Comparison(req, [short, halluc])], ctx)[0].best == 1
    # The text surface answers pairwise prompts in the parsed format.
    [reply] = judge.complete([GenerationRequest(pairwise_prompt("Describe the image.", halluc, truth), req.images)], ctx)
    assert parse_verdict(reply) == (2, "ok")
    # Yes/no questions: the correct answer wins.
    obj = scene.objects[0]
    q = GenerationRequest(f"Is there a {obj.name} in the image?", req.images)
    assert judge.compare([Comparison(q, ["No.", "Yes."])], ctx)[0].best == 1


def test_oracle_refuses_another_worlds_images(ctx) -> None:
    judge, _, _ = _oracle_and_scene(world={"cooccurrence": 0.5})
    from mmalign_shapes.world import ShapesWorld

    other = ShapesWorld()
    req = GenerationRequest("Describe the image.", [other.image_ref(other.scene("align", 0, 0))])
    with pytest.raises(ValueError, match="same 'world'"):
        judge.compare([Comparison(req, ["a", "b"])], ctx)


# ---------------------------------------------------------------------------------- vlm judge
def test_vlm_judge_self_generate_and_logprob_modes(ctx) -> None:
    policy = ScriptedModel(lambda r: "Response 2 is better, it matches the picture.")
    judge = VLMJudge(VLMJudgeConfig.model_validate({"self": True}))
    item = Comparison(GenerationRequest("Describe.", [make_image_ref(0)]), ["a red square.", "a blue square."])
    [v] = judge.compare([item], ctx, policy=policy)
    assert (v.best, v.status) == (1, "ok")
    sent = policy.generated[0][0]
    assert "Response 1: a red square." in sent.prompt and sent.images == item.request.images
    assert policy.calls[0][2]["do_sample"] is False
    with pytest.raises(ValueError, match="current policy"):
        judge.compare([item], ctx)  # no policy given
    scorer = ScriptedModel("", score=lambda req, cont: -1.0 if cont.startswith("Response 1") else -3.0)
    lp = VLMJudge(VLMJudgeConfig.model_validate({"self": True, "decision": "logprob"}))
    [v] = lp.compare([item], ctx, policy=scorer)
    assert (v.best, v.worst, v.reply) == (0, 1, "Response 1 is better.")
    tie = VLMJudge(VLMJudgeConfig.model_validate({"self": True, "decision": "logprob", "tie_margin": 5.0}))
    assert tie.compare([item], ctx, policy=scorer)[0].status == "tie"


def test_vlm_judge_with_a_model_component_on_the_tiny_llava(ctx, tiny_dir: Path) -> None:
    entry = get_plugins().resolve("judge", "vlm-judge")
    config = {"model": {"name": "tiny-llava", "config": {"path": str(tiny_dir)}}, "max_new_tokens": 4,
              "instructions": "Which response is right?"}
    judge = check_judge(entry, config, requests=[GenerationRequest("Hello?", [make_image_ref(0, 48)])], ctx=ctx)
    assert judge.describe()["model"]["name"] == "tiny:tiny-llava"  # stored qualified
    item = Comparison(GenerationRequest("Describe.", [make_image_ref(0, 48)]), ["a red square.", "a blue square."])
    [v] = judge.compare([item], ctx)
    assert v.status in ("ok", "tie", "unparsable")  # a random model's reply; it must not crash
    lp = entry.build({**config, "decision": "logprob"})
    [v] = lp.compare([item], ctx)
    assert v.status == "ok" and v.scores is not None


def test_judges_without_compare_go_through_complete(ctx) -> None:
    judge = get_plugins().resolve("judge", "scripted-judge").build({"replies": {"Response 2: yes": "Response 2 is better."}})
    item = Comparison(GenerationRequest("Q?", []), ["no", "yes"])
    [v] = compare_with(judge, [item], ctx)
    assert (v.best, v.worst) == (1, 0)
    with pytest.raises(ValueError, match="exactly two"):
        compare_with(judge, [Comparison(item.request, ["a", "b", "c"])], ctx)


# ------------------------------------------------------------------------------- reward model
def test_reward_model_training_beats_chance_on_held_out_shapes_pairs(tiny_model, tmp_path: Path) -> None:
    from mmalign_online.reward import train_reward_model

    pairs = get_plugins().resolve("preference_source", "shapes-pairs").build({"n_pairs": 200, "mode": "mixed"}).pairs(None)
    cfg = RewardTrainConfig(steps=40, batch_size=8, heldout_fraction=0.2, lr=1e-3, head_lr=1e-2)
    result = train_reward_model(tiny_model, pairs, cfg, tmp_path / "rm", log=lambda s: None)
    assert result.n_heldout == 40 and result.n_train == 160
    assert result.initial_heldout_accuracy == 0.5  # the zero head scores everything alike
    assert result.heldout_accuracy >= 0.7
    meta = json.loads((tmp_path / "rm" / "reward.json").read_text())
    assert meta["heldout_accuracy"] == result.heldout_accuracy and (tmp_path / "rm" / "backbone" / "config.json").is_file()


def test_reward_model_judge_trains_once_then_loads(ctx, tmp_path: Path, mmalign_cache: Path) -> None:
    entry = get_plugins().resolve("judge", "reward-model")
    config = {"path": str(tmp_path / "rm"), "model": {"name": "tiny-llava", "config": {"cache_dir": str(mmalign_cache / "tiny")}},
              "train": {"data": {"name": "shapes-pairs", "config": {"n_pairs": 64, "mode": "partner"}}, "steps": 12,
                        "batch_size": 8, "lr": 1e-3, "head_lr": 1e-2, "train_backbone": False, "heldout_fraction": 0.25}}
    judge = entry.build(config)
    assert judge.train_result is not None and judge.train_result.heldout_accuracy > 0.5
    assert not (tmp_path / "rm" / "backbone").exists()  # only the head was trained
    again = check_judge(entry, config, requests=[GenerationRequest(pairwise_prompt("Describe the image.", "a red circle.", "a red circle and a blue square."), [make_image_ref(0, 48)])], ctx=ctx)
    assert again.train_result is None and again.describe() == judge.describe()
    from mmalign_shapes.world import ShapesWorld

    world = ShapesWorld()
    scene = world.scene("align", 0, 1)
    req = GenerationRequest("Describe the image.", [world.image_ref(scene)])
    [v] = again.compare([Comparison(req, [scene.caption, scene.caption[:-1] + " and a red star."])], ctx)
    assert v.status == "ok" and v.scores is not None and len(v.scores) == 2
    acc = judge.meta["heldout_accuracy"]
    if acc < 1.0:
        with pytest.raises(ValueError, match="below min_heldout_accuracy"):
            entry.build({**config, "min_heldout_accuracy": acc + 1e-6})


# -------------------------------------------------------------------------------- contracts
def test_contract_checks_of_the_sources_and_oracle(ctx) -> None:
    plugins = get_plugins()
    for name, cfg in [("online-dpo", {"prompts": {"name": "shapes-pairs", "config": {"n_pairs": 12}}}),
                      ("mixed-dpo", {"base": {"name": "shapes-pairs", "config": {"n_pairs": 12}}, "p": 0.3}),
                      ("online-dpo", {"prompts": {"name": "shapes-sft", "config": {"n_examples": 12}}})]:
        check_source(plugins.resolve("preference_source", name), cfg)
    check_judge(plugins.resolve("judge", "shapes-oracle"), {}, requests=[GenerationRequest("plain prompt", [make_image_ref(0)])])
    check_judge(plugins.resolve("judge", "vlm-judge"), {"self": True})
