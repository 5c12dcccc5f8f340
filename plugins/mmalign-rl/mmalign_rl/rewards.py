"""The reward components: shapes-oracle, reward-model, judge-score, python-function, weighted-sum.

A reward maps (prompt, images, response) batches to scalars (:class:`mmalign_core.protocols.Reward`):
``score(requests, responses, ctx) -> RewardOutput`` with one request (prompt + images) per response.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Sequence

from mmalign_core.protocols import Context, RewardOutput
from mmalign_core.types import GenerationRequest

from .config import JudgeScoreConfig, PythonFunctionConfig, ShapesOracleRewardConfig, WeightedSumRewardConfig


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ShapesOracleReward:
    """Component ``shapes-oracle``: ``-w_h * hallucinated - w_m * missed + w_c * correct`` from the scene's ground truth.

    Objects are counted once each (distinct). A yes/no question about one object gets ``yes_no_correct``
    when answered correctly, else 0.
    """

    def __init__(self, config: ShapesOracleRewardConfig):
        from mmalign_shapes.config import WorldConfig
        from mmalign_shapes.world import ShapesWorld

        self.config = config
        self.world = ShapesWorld(WorldConfig.model_validate(config.world))

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"reward": "shapes-oracle", "world": self.world.fingerprint, "hallucinated_weight": c.hallucinated_weight,
                "missed_weight": c.missed_weight, "correct_weight": c.correct_weight, "yes_no_correct": c.yes_no_correct}

    def one(self, request: GenerationRequest, response: str) -> tuple[float, dict[str, Any]]:
        from mmalign_shapes.text import parse_yes_no

        if not request.images:
            raise ValueError("shapes-oracle scores answers about a shapes image; this request has no image")
        try:
            scene = self.world.scene_from_key(request.images[0].key)
        except ValueError as exc:
            raise ValueError(f"shapes-oracle: {exc}. Give the reward the same 'world' config as the shapes source.") from None
        asked = self.world.parse(request.prompt)
        if len(asked) == 1 and request.prompt.strip().lower().startswith(("is there", "are there", "do you see", "can you see")):
            said = parse_yes_no(response)
            correct = said is not None and said == (asked[0] in scene.objects)
            return (self.config.yes_no_correct if correct else 0.0), {"yes_no": said, "correct": correct}
        ts = self.world.score_text(scene, response)
        hallucinated = len(set(ts.hallucinated))
        missed = len(set(ts.missed))
        correct = len(set(ts.mentioned) - set(ts.hallucinated))
        c = self.config
        value = -c.hallucinated_weight * hallucinated - c.missed_weight * missed + c.correct_weight * correct
        return value, {"hallucinated": hallucinated, "missed": missed, "correct": correct}

    def score(self, requests: Sequence[GenerationRequest], responses: Sequence[str], ctx: Context) -> RewardOutput:
        values, details = [], []
        for req, resp in zip(requests, responses):
            v, d = self.one(req, resp)
            values.append(float(v))
            details.append(d)
        comps = {"hallucinated": [float(d.get("hallucinated", 0)) for d in details],
                 "missed": [float(d.get("missed", 0)) for d in details]}
        return RewardOutput(scores=values, components=comps, details=details)


class RewardModelReward:
    """Component ``reward-model``: the Bradley-Terry reward model of the online plugin, as a scalar reward.

    The same folder (``reward.json``, ``head.pt``) serves the ``reward-model`` judge and this reward: one trained
    artefact, trained here on first use when the folder holds none (settings ``train``).
    """

    def __init__(self, config: Any, *, log: Any = print):
        from mmalign_online.reward import RewardModelJudge

        self.config = config
        self.judge = RewardModelJudge(config, log=log)

    @property
    def heldout_accuracy(self) -> float:
        return float(self.judge.meta.get("heldout_accuracy", float("nan")))

    def describe(self) -> dict[str, Any]:
        return {"reward": "reward-model", **{k: v for k, v in self.judge.describe().items() if k != "judge"}, "path": str(self.judge.path)}

    def score(self, requests: Sequence[GenerationRequest], responses: Sequence[str], ctx: Context) -> RewardOutput:
        scores = self.judge.model.rewards(list(requests), list(responses), batch_size=self.config.batch_size)
        return RewardOutput(scores=[float(s) for s in scores])


class JudgeScoreReward:
    """Component ``judge-score``: a judge rates each response on a rubric; the first number in its reply is the reward."""

    def __init__(self, config: JudgeScoreConfig, judge: Any = None):
        self.config = config
        self.judge = judge if judge is not None else config.judge.build()
        self._pattern = re.compile(config.pattern)

    def describe(self) -> dict[str, Any]:
        c = self.config
        judge = self.judge.describe() if hasattr(self.judge, "describe") else {"judge": type(self.judge).__name__}
        return {"reward": "judge-score", "judge": judge, "rubric": _sha(c.rubric), "pattern": c.pattern,
                "range": [c.min_score, c.max_score]}

    def parse(self, reply: str) -> float | None:
        m = self._pattern.search(reply or "")
        if m is None:
            return None
        try:
            value = float(m.group(0))
        except ValueError:
            return None
        return min(max(value, self.config.min_score), self.config.max_score)

    def score(self, requests: Sequence[GenerationRequest], responses: Sequence[str], ctx: Context) -> RewardOutput:
        c = self.config
        prompts = [GenerationRequest(prompt=c.rubric.format(question=r.prompt, response=a), images=list(r.images))
                   for r, a in zip(requests, responses)]
        replies = self.judge.complete(prompts, ctx)
        parsed = [self.parse(x) for x in replies]
        fallback = c.min_score if c.unparsable_score is None else c.unparsable_score
        scores = [fallback if p is None else p for p in parsed]
        return RewardOutput(scores=scores, components={"unparsable": [float(p is None) for p in parsed]},
                            details=[{"reply": x[:200]} for x in replies])


class PythonFunctionReward:
    """Component ``python-function``: a function in a registered plugin's package, ``f(prompts, images, responses, **kwargs)``."""

    def __init__(self, config: PythonFunctionConfig):
        from .functions import load_function

        self.config = config
        self.fn = load_function(config.function)

    def describe(self) -> dict[str, Any]:
        return {"reward": "python-function", "function": self.config.function, "kwargs": self.config.kwargs}

    def score(self, requests: Sequence[GenerationRequest], responses: Sequence[str], ctx: Context) -> RewardOutput:
        out = self.fn([r.prompt for r in requests], [list(r.images) for r in requests], list(responses), **self.config.kwargs)
        scores = [float(x) for x in out]
        if len(scores) != len(responses):
            raise ValueError(f"python-function {self.config.function}: returned {len(scores)} rewards for {len(responses)} responses")
        return RewardOutput(scores=scores)


class WeightedSumReward:
    """Component ``weighted-sum``: ``sum_i w_i * r_i``; each term is logged as ``reward/<label>``."""

    def __init__(self, config: WeightedSumRewardConfig, terms: Sequence[Any] | None = None):
        self.config = config
        self.terms = list(terms) if terms is not None else [t.reward.build() for t in config.terms]
        labels, seen = [], {}
        for t in config.terms:
            base = t.label or t.reward.name.split(":")[-1]
            seen[base] = seen.get(base, 0) + 1
            labels.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
        self.labels = labels

    def describe(self) -> dict[str, Any]:
        return {"reward": "weighted-sum", "terms": [{"label": lab, "weight": t.weight, "reward": r.describe()}
                                                     for lab, t, r in zip(self.labels, self.config.terms, self.terms)]}

    def score(self, requests: Sequence[GenerationRequest], responses: Sequence[str], ctx: Context) -> RewardOutput:
        total = [0.0] * len(responses)
        comps: dict[str, list[float]] = {}
        for label, term, reward in zip(self.labels, self.config.terms, self.terms):
            out = reward.score(requests, responses, ctx)
            comps[label] = list(out.scores)
            for sub, values in out.components.items():
                comps[f"{label}/{sub}"] = list(values)
            total = [acc + term.weight * s for acc, s in zip(total, out.scores)]
        return RewardOutput(scores=total, components=comps)


def make_shapes_oracle(config: ShapesOracleRewardConfig) -> ShapesOracleReward:
    return ShapesOracleReward(config)


def make_reward_model(config: Any) -> RewardModelReward:
    return RewardModelReward(config)


def make_judge_score(config: JudgeScoreConfig) -> JudgeScoreReward:
    return JudgeScoreReward(config)


def make_python_function(config: PythonFunctionConfig) -> PythonFunctionReward:
    return PythonFunctionReward(config)


def make_weighted_sum(config: WeightedSumRewardConfig) -> WeightedSumReward:
    return WeightedSumReward(config)


__all__ = ["JudgeScoreReward", "PythonFunctionReward", "RewardModelReward", "ShapesOracleReward", "WeightedSumReward"]
