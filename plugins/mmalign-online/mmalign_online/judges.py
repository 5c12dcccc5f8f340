"""Judges that rank responses: ``shapes-oracle`` (ground truth) and ``vlm-judge`` (a model, or the policy itself).

Both offer the core text surface (``complete``/``describe``) and the comparison
entry point of :mod:`mmalign_online.verdict` (``compare``/``max_answers``).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Optional, Sequence

from mmalign_core.protocols import Context
from mmalign_core.types import GenerationRequest

from .config import ShapesOracleConfig, VLMJudgeConfig
from .verdict import (
    OK,
    TIE,
    Comparison,
    Verdict,
    extract_pairwise,
    pairwise_request,
    render_verdict,
    verdict_from_scores,
    verdict_from_text,
)


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------- shapes oracle
class ShapesOracleJudge:
    """Ground truth for the shapes world (component ``shapes-oracle``).

    The scene is read back from the first image's id (``ShapesWorld.scene_from_key``); each answer is
    scored by the objects it names:

    - caption-like answers: with ``criterion="hallucination-first"`` the answer naming fewer objects
      that are not in the picture wins, ties broken by more correctly named objects; with ``"balanced"``
      the score is correct minus hallucinated, ties broken by fewer hallucinated. Equal scores are a tie.
    - yes/no questions ("Is there a red circle in the image?"): the correct yes/no answer wins.

    It never looks at pixels, so it costs nothing and is exact: online and mixed DPO can be tested on CPU
    without any external model.
    """

    max_answers: Optional[int] = None

    def __init__(self, config: ShapesOracleConfig):
        from mmalign_shapes.config import WorldConfig
        from mmalign_shapes.world import ShapesWorld

        self.config = config
        self.world = ShapesWorld(WorldConfig.model_validate(config.world))

    def describe(self) -> dict[str, Any]:
        return {"judge": "shapes-oracle", "world": self.world.fingerprint, "criterion": self.config.criterion}

    def _scene(self, request: GenerationRequest) -> Any:
        if not request.images:
            raise ValueError("shapes-oracle judges questions about a shapes image; this request has no image")
        key = request.images[0].key
        try:
            return self.world.scene_from_key(key)
        except ValueError as exc:
            raise ValueError(f"shapes-oracle: {exc}. Give the oracle the same 'world' config as the shapes source.") from None

    def score(self, request: GenerationRequest, answer: str) -> tuple[tuple[float, float], dict[str, Any]]:
        """A sortable score (higher is better) and what it was computed from."""
        from mmalign_shapes.text import parse_yes_no

        scene = self._scene(request)
        asked = self.world.parse(request.prompt)
        if len(asked) == 1 and request.prompt.strip().lower().startswith(("is there", "are there", "do you see", "can you see")):
            said = parse_yes_no(answer)
            truth = asked[0] in scene.objects
            correct = said is not None and said == truth
            return (1.0 if correct else 0.0, 0.0), {"yes_no": said, "truth": truth}
        ts = self.world.score_text(scene, answer)
        hallucinated = len(set(ts.hallucinated))
        correct = len(set(ts.mentioned) - set(ts.hallucinated))
        if self.config.criterion == "balanced":
            key = (float(correct - hallucinated), float(-hallucinated))
        else:
            key = (float(-hallucinated), float(correct))
        return key, {"hallucinated": hallucinated, "correct": correct}

    def compare(self, items: Sequence[Comparison], ctx: Context, *, policy: Any = None) -> list[Verdict]:
        out = []
        for item in items:
            keys, details = zip(*(self.score(item.request, a) for a in item.answers))
            # Rank lexicographically: map each distinct key to its rank.
            ranks = {k: i for i, k in enumerate(sorted(set(keys)))}
            scores = [float(ranks[k]) for k in keys]
            verdict = verdict_from_scores(scores, detail={"answers": list(details)})
            if verdict.status == OK and len(item.answers) == 2:
                why = "It names fewer objects that are not in the image." if details[verdict.best].get("hallucinated", 0) < details[verdict.worst].get("hallucinated", 0) else "It is more accurate about the image."
                verdict.reply = render_verdict(verdict.best + 1, why)
            elif verdict.status == TIE:
                verdict.reply = render_verdict(None)
            else:
                verdict.reply = f"Response {verdict.best + 1} is best." if verdict.best is not None else ""
            out.append(verdict)
        return out

    def complete(self, requests: Sequence[GenerationRequest], ctx: Context) -> list[str]:
        """Verdict texts for pairwise prompts in the default layout; other prompts get an empty reply."""
        replies = []
        for request in requests:
            parsed = extract_pairwise(request.prompt)
            if parsed is None or not request.images:
                replies.append("")
                continue
            question, a, b = parsed
            inner = GenerationRequest(prompt=question, images=list(request.images))
            replies.append(self.compare([Comparison(inner, [a, b])], ctx)[0].reply)
        return replies


def make_shapes_oracle(config: ShapesOracleConfig) -> ShapesOracleJudge:
    """Factory of ``shapes-oracle``."""
    return ShapesOracleJudge(config)


# ---------------------------------------------------------------------------------- VLM judge
class VLMJudge:
    """A vision-language model as pairwise judge (component ``vlm-judge``).

    The judge model is any model component (``model``), built on first use, or -- with ``self: true`` --
    the current policy that online-dpo / mixed-dpo pass to :meth:`compare` (the paper's self annotator).
    ``decision="generate"`` decodes a reply greedily and parses it (:func:`~mmalign_online.verdict.parse_verdict`);
    ``decision="logprob"`` compares the judge's log-probs of the two verdict sentences instead.
    """

    max_answers: Optional[int] = 2

    def __init__(self, config: VLMJudgeConfig):
        self.config = config
        self._model: Any = None
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        model = "self (current policy)" if cfg.self_judge else {"name": cfg.model.name, "config_sha256": _sha(cfg.model.config)}
        return {
            "judge": "vlm-judge",
            "model": model,
            "decision": cfg.decision,
            "prompt_sha256": _sha([cfg.instructions, cfg.template, cfg.answer_prefix, list(cfg.verdicts)]),
            "max_new_tokens": cfg.max_new_tokens,
        }

    def model_for(self, policy: Any = None) -> Any:
        """The model that judges: the policy (self) or the configured model (built once)."""
        if self.config.self_judge:
            if policy is None:
                raise ValueError("vlm-judge with self: true judges with the current policy, which only online-dpo / mixed-dpo "
                                 "pass (compare(..., policy=model)); configure 'model' to use it elsewhere")
            return policy
        if self._model is None:
            self._model = self.config.model.build()
            module = getattr(self._model, "module", None)
            if module is not None:
                module.eval()
        return self._model

    def complete(self, requests: Sequence[GenerationRequest], ctx: Context, *, policy: Any = None) -> list[str]:
        cfg = self.config
        model = self.model_for(policy)
        reqs = [GenerationRequest(prompt=r.prompt, images=list(r.images), answer_prefix=r.answer_prefix or cfg.answer_prefix) for r in requests]
        self.calls += len(reqs)
        texts = model.generate(reqs, max_new_tokens=cfg.max_new_tokens, do_sample=False, batch_size=cfg.batch_size)
        return [(r.answer_prefix + t) if r.answer_prefix else t for r, t in zip(reqs, texts)]

    def compare(self, items: Sequence[Comparison], ctx: Context, *, policy: Any = None) -> list[Verdict]:
        cfg = self.config
        if any(len(c.answers) != 2 for c in items):
            raise ValueError("vlm-judge compares exactly two answers")
        reqs = [pairwise_request(c.request, c.answers[0], c.answers[1], instructions=cfg.instructions, template=cfg.template) for c in items]
        if cfg.decision == "generate":
            return [verdict_from_text(r) for r in self.complete(reqs, ctx, policy=policy)]
        model = self.model_for(policy)
        self.calls += len(reqs)
        doubled = [r for r in reqs for _ in range(2)]
        conts = [v for _ in reqs for v in cfg.verdicts]
        logps = model.continuation_logprobs(doubled, conts, batch_size=2 * cfg.batch_size)
        out = []
        for i in range(len(reqs)):
            a, b = float(logps[2 * i]), float(logps[2 * i + 1])
            v = verdict_from_scores([a, b], margin=cfg.tie_margin)
            v.reply = cfg.verdicts[v.best] if v.status == OK else render_verdict(None)
            out.append(v)
        return out


def make_vlm_judge(config: VLMJudgeConfig) -> VLMJudge:
    """Factory of ``vlm-judge``."""
    return VLMJudge(config)


__all__ = ["ShapesOracleJudge", "VLMJudge", "make_shapes_oracle", "make_vlm_judge"]
