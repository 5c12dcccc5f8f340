"""The reward components and the normaliser, on fixed inputs."""
from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from mmalign_core.manager import get_plugins
from mmalign_core.protocols import Context
from mmalign_core.types import GenerationRequest
from rl_helpers import shapes_prompts


@pytest.fixture()
def ctx(tmp_path: Path) -> Context:
    return Context(seed=0, output_dir=tmp_path, cache_dir=tmp_path / "cache", log=lambda s: None)


def build(kind: str, name: str, config: dict):
    return get_plugins().resolve(kind, name).build(config)


def _first_scene_request():
    p = shapes_prompts(1)[0]  # a green circle alone (see the shapes world)
    return GenerationRequest(p.prompt, list(p.images)), p


def test_shapes_oracle_reward_counts_hallucinated_and_missed_objects(ctx) -> None:
    req, pair = _first_scene_request()
    assert pair.chosen == "a green circle." and pair.rejected == "a red square and a green circle."
    reward = build("reward", "shapes-oracle", {})
    out = reward.score([req] * 4, ["a green circle.", "a red square and a green circle.", "some shapes.", "a red square."], ctx)
    # hallucinated -1 each, missed -0.5 each (defaults)
    assert out.scores == [0.0, -1.0, -0.5, -1.5]
    assert out.components == {"hallucinated": [0.0, 1.0, 0.0, 1.0], "missed": [0.0, 0.0, 1.0, 1.0]}
    weighted = build("reward", "shapes-oracle", {"hallucinated_weight": 2.0, "missed_weight": 0.0, "correct_weight": 1.0})
    assert weighted.score([req] * 2, ["a green circle.", "a red square and a green circle."], ctx).scores == [1.0, -1.0]


def test_reward_model_reward_and_judge_share_one_trained_artefact(ctx, tmp_path: Path, mmalign_cache: Path) -> None:
    config = {"path": str(tmp_path / "rm"), "model": {"name": "tiny-llava", "config": {"cache_dir": str(mmalign_cache / "tiny")}},
              "train": {"data": {"name": "shapes-pairs", "config": {"n_pairs": 64, "mode": "partner"}}, "steps": 12,
                        "batch_size": 8, "lr": 1e-3, "head_lr": 1e-2, "train_backbone": False, "heldout_fraction": 0.25}}
    reward = build("reward", "reward-model", config)
    assert (tmp_path / "rm" / "reward.json").is_file() and reward.heldout_accuracy > 0.5
    judge = build("judge", "reward-model", config)  # loads the same folder, trains nothing
    assert judge.train_result is None
    req, pair = _first_scene_request()
    out = reward.score([req, req], [pair.chosen, pair.rejected], ctx)
    assert out.scores == pytest.approx(judge.model.rewards([req, req], [pair.chosen, pair.rejected]))
    assert reward.describe()["head_sha256"] == judge.describe()["head_sha256"]


def test_judge_score_parses_the_rubric_reply_and_clips(ctx) -> None:
    judge = {"name": "scripted-judge", "config": {"match": "regex", "replies": {
        r"Response: a green circle\.": "5 - accurate.", r"Response: a red": "Rating: 9", r"Response: junk": "no idea"}}}
    reward = build("reward", "judge-score", {"judge": judge})
    req, _ = _first_scene_request()
    out = reward.score([req] * 3, ["a green circle.", "a red square.", "junk"], ctx)
    assert out.scores == [5.0, 6.0, 0.0]  # 9 is clipped to the rubric's 6; no number: min_score
    assert out.components["unparsable"] == [0.0, 0.0, 1.0]
    with pytest.raises(Exception, match="question"):
        build("reward", "judge-score", {"judge": judge, "rubric": "Rate {response}"})


def test_python_function_reward_only_calls_functions_of_installed_plugins(ctx) -> None:
    reward = build("reward", "python-function", {"function": "mmalign_rl.functions:word_reward", "kwargs": {"words": ["circle"]}})
    req, _ = _first_scene_request()
    assert reward.score([req] * 2, ["a circle and a circle.", "a square."], ctx).scores == [2.0, 0.0]
    for bad, msg in [("os:system", "installed mmalign plugin"), ("subprocess.run", "package.module:function"),
                     ("mmalign_rl.functions:nothing_here", "no callable")]:
        with pytest.raises(Exception, match=msg):
            build("reward", "python-function", {"function": bad})


def test_weighted_sum_logs_each_term(ctx) -> None:
    reward = build("reward", "weighted-sum", {"terms": [
        {"reward": {"name": "shapes-oracle"}, "weight": 2.0},
        {"reward": {"name": "python-function", "config": {"function": "mmalign_rl.functions:word_reward"}}, "weight": -1.0, "label": "circles"}]})
    req, _ = _first_scene_request()
    out = reward.score([req] * 2, ["a green circle.", "a red square."], ctx)
    assert out.scores == [2.0 * 0.0 - 1.0 * 1.0, 2.0 * -1.5 - 0.0]
    assert out.components["shapes-oracle"] == [0.0, -1.5] and out.components["circles"] == [1.0, 0.0]
    assert out.components["shapes-oracle/hallucinated"] == [0.0, 1.0]
    with pytest.raises(Exception, match="reward"):
        build("reward", "weighted-sum", {"terms": [{"reward": {"name": "no-such-reward"}}]})


def test_normaliser_modes() -> None:
    from mmalign_rl.config import RewardNormalization
    from mmalign_rl.normalize import RewardNormalizer

    running = RewardNormalizer(RewardNormalization(mode="running"))
    a, b = [1.0, 2.0, 4.0], [8.0, -3.0]
    running(a)
    got = running(b)
    mu, sd = statistics.mean(a + b), statistics.stdev(a + b)
    assert got == pytest.approx([(x - mu) / sd for x in b])
    fresh = RewardNormalizer(RewardNormalization(mode="running"))
    fresh.load(running.state())
    assert fresh.statistics() == pytest.approx(running.statistics())
    fixed = RewardNormalizer(RewardNormalization(mode="fixed", mean=1.0, std=2.0, clip=1.0))
    assert fixed([1.0, 2.0, 9.0, -9.0]) == [0.0, 0.5, 1.0, -1.0]
    base = RewardNormalizer(RewardNormalization(mode="base-policy"))
    assert base.needs_base_statistics
    base.set_statistics([0.0, 2.0, 4.0])
    assert not base.needs_base_statistics and base([2.0, 4.0]) == pytest.approx([0.0, 1.0])
    assert RewardNormalizer(RewardNormalization())([3.0, -1.0]) == [3.0, -1.0]
