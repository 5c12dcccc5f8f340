"""Helpers of the online tests: a scripted policy, scripted judges and source builders (no torch)."""
from __future__ import annotations

from typing import Any, Sequence

from mmalign_core.protocols import Context
from mmalign_core.testing import ScriptedModel, make_pairs
from mmalign_core.types import GenerationRequest

from mmalign_online.config import MixedDPOConfig, OnlineDPOConfig
from mmalign_online.source import MixedDPOSource, OnlineDPOSource
from mmalign_online.verdict import Comparison, Verdict, verdict_from_scores

# Judge replies by pattern: the response starting with "good" wins, "tie" pairs tie, "junk" pairs are unreadable.
SCRIPTED_JUDGE = {
    "name": "scripted-judge",
    "config": {
        "match": "regex",
        "replies": {
            r"Response 1: good": "Response 1 is better, it is grounded.",
            r"Response 2: good": "After looking closely: Response 2 is better.",
            r"Response 1: tie": "Both responses are equally good.",
            r"Response 1: junk|Response 2: junk": "The picture shows shapes.",
        },
        "default": "I do not know.",
    },
}


class PlannedPolicy(ScriptedModel):
    """A policy whose samples for prompt ``P`` are taken in turn from ``plan[P]`` (cycled)."""

    def __init__(self, plan: dict[str, Sequence[str]]):
        self.plan = {k: list(v) for k, v in plan.items()}
        self.next = {k: 0 for k in plan}
        super().__init__(self._answer, name="planned")

    def _answer(self, request: GenerationRequest) -> str:
        seq = self.plan[request.prompt]
        i = self.next[request.prompt]
        self.next[request.prompt] = i + 1
        return seq[i % len(seq)]


class ScoreJudge:
    """A native comparing judge: score = number of 'good' words minus 'bad' words (ties possible)."""

    max_answers = None

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def describe(self) -> dict[str, Any]:
        return {"judge": "score-test"}

    def complete(self, requests: Sequence[GenerationRequest], ctx: Context) -> list[str]:
        return ["" for _ in requests]

    def compare(self, items: Sequence[Comparison], ctx: Context, *, policy: Any = None) -> list[Verdict]:
        out = []
        for c in items:
            self.seen.append(list(c.answers))
            out.append(verdict_from_scores([a.count("good") - a.count("bad") for a in c.answers]))
        return out


class FirstJudge:
    """A text judge with total position bias: always 'Response 1 is better.'"""

    def describe(self) -> dict[str, Any]:
        return {"judge": "first"}

    def complete(self, requests: Sequence[GenerationRequest], ctx: Context) -> list[str]:
        return ["Response 1 is better." for _ in requests]


def prompt_pairs(prompts: Sequence[str]):
    """Pool pairs (with images) whose prompts are the given texts."""
    pairs = make_pairs(len(prompts))
    for p, text in zip(pairs, prompts):
        p.prompt = text
    return pairs


def online_source(judge: Any = None, *, mixed: bool = False, **settings: Any):
    """An online-dpo (or mixed-dpo) source over shapes-pairs; ``judge`` replaces the configured one when given."""
    data = {"name": "shapes-pairs", "config": {"n_pairs": 16}}
    cfg: dict[str, Any] = {"judge": SCRIPTED_JUDGE, "max_new_tokens": 8, **settings}
    if mixed:
        cfg["base"] = data
        return MixedDPOSource(MixedDPOConfig.model_validate(cfg), judge=judge)
    cfg["prompts"] = data
    return OnlineDPOSource(OnlineDPOConfig.model_validate(cfg), judge=judge)
