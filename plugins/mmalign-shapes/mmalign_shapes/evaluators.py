"""Evaluators of the shapes world: a POPE-style existence probe and CHAIR-style caption metrics.

Both draw their images from the reserved ``eval`` streams (natural and absent),
which no training source may use, so evaluation images are never training
images. Both only call the model protocol (``generate`` /
``continuation_logprobs``), batched, inside ``ctx.progress``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from mmalign_core import EvalResult, GenerationRequest
from mmalign_core.protocols import AlignableModel, Context

from .config import POPE_METRICS, POPE_SPLITS, ShapesChairConfig, ShapesPopeConfig
from .scoring import CaptionTally, Rate, binary_metrics
from .sources import allocate
from .text import ShapeObject, parse_yes_no, question
from .world import Scene, ShapesWorld, stream_rng

#: The split every evaluator draws its images from (natural scenes and ``eval+absent``).
EVAL_SPLIT = "eval"
_CHAIR_HIGHER_IS_BETTER = frozenset({"recall", "objects_per_caption", "absent_recall", "absent_objects_per_caption"})

T = TypeVar("T")


def _batched(
    items: Sequence[T], size: int, call: Callable[[Sequence[T]], list[Any]], ctx: Context, desc: str
) -> list[Any]:
    """Run ``call`` over consecutive slices of ``items`` under a progress bar; returns the joined results."""
    starts = list(range(0, len(items), size))
    out: list[Any] = []
    for start in ctx.progress(starts, desc=desc, total=len(starts)):
        chunk = items[start : start + size]
        result = list(call(chunk))
        if len(result) != len(chunk):
            raise RuntimeError(f"{desc}: the model returned {len(result)} results for {len(chunk)} requests")
        out.extend(result)
    return out


@dataclass(frozen=True)
class PopeQuestion:
    """One probe: does ``obj`` appear in ``scene``? (``label`` is the truth)."""

    split: str
    scene: Scene
    obj: ShapeObject
    label: bool


class ShapesPopeEvaluator:
    """POPE on held-out shapes images, with random, popular and adversarial negatives.

    Each image gives its present objects as positives and, per split, as many
    absent objects as negatives (so every split is balanced 50/50):

    * ``random``: absent objects drawn uniformly;
    * ``popular``: the absent objects most frequent in the natural distribution;
    * ``adversarial``: the absent objects that co-occur most often with the present
      ones; on an image with an anchor but not its partner, that is the partner.

    Decision ``logprob`` (default) answers "yes" iff the model gives the
    ``yes_answer`` continuation a higher summed log-prob than ``no_answer`` (the
    logit-margin probe); ``generate`` decodes greedily and reads the answer with
    :func:`~mmalign_shapes.text.parse_yes_no`, counting answers with no yes/no
    word as "no". Metrics: accuracy, precision, recall, f1, yes_ratio per split
    (``pope_<split>_<metric>``) and their means ``pope_f1``, ``pope_accuracy``,
    ``pope_yes_ratio``.
    """

    name = "shapes-pope"

    def __init__(self, config: ShapesPopeConfig):
        self.config = config
        self.world = ShapesWorld(config.world)

    def scenes(self) -> list[Scene]:
        """The evaluation images (natural and absent, in the configured proportion)."""
        cfg = self.config
        kinds = allocate(
            cfg.n_images,
            [("natural", 1.0 - cfg.absent_fraction), ("absent", cfg.absent_fraction)],
            stream_rng(cfg.seed, EVAL_SPLIT + "#pope-images", 0),
        )
        return [
            self.world.absent_scene(EVAL_SPLIT, cfg.seed, i) if kind == "absent" else self.world.scene(EVAL_SPLIT, cfg.seed, i)
            for i, kind in enumerate(kinds)
        ]

    def questions(self) -> list[PopeQuestion]:
        """All probes, split by split (deterministic)."""
        cfg = self.config
        world = self.world
        stats = world.statistics(cfg.stats_scenes, cfg.seed)
        rank = {o: i for i, o in enumerate(world.objects)}
        out: list[PopeQuestion] = []
        for scene in self.scenes():
            rng = stream_rng(cfg.seed, EVAL_SPLIT + "#pope-negatives", scene.index)
            present = list(scene.objects)
            absent = [o for o in world.objects if o not in scene]
            k = min(len(present), len(absent))
            if k < len(present):
                keep = sorted(int(j) for j in rng.choice(len(present), size=k, replace=False))
                present = [present[j] for j in keep]
            negatives = {
                "random": [absent[int(j)] for j in rng.choice(len(absent), size=k, replace=False)],
                "popular": sorted(absent, key=lambda o: (-stats.frequency[o], rank[o]))[:k],
                "adversarial": sorted(
                    absent,
                    key=lambda o: (-sum(stats.cooccurrence.get((p, o), 0) for p in scene.objects), -stats.frequency[o], rank[o]),
                )[:k],
            }
            for split in POPE_SPLITS:
                out.extend(PopeQuestion(split, scene, o, True) for o in present)
                out.extend(PopeQuestion(split, scene, o, False) for o in negatives[split])
        return out

    def evaluate(self, model: AlignableModel, ctx: Context | None = None) -> EvalResult:
        """Probe ``model`` and report :data:`~mmalign_shapes.config.POPE_METRICS`."""
        cfg = self.config
        ctx = ctx if ctx is not None else Context()
        qs = self.questions()
        # The same (image, object) probe appears in several splits: ask it once.
        unique: dict[tuple[str, ShapeObject], int] = {}
        requests: list[GenerationRequest] = []
        for q in qs:
            if (q.scene.key, q.obj) not in unique:
                unique[(q.scene.key, q.obj)] = len(requests)
                requests.append(
                    GenerationRequest(prompt=question(cfg.question_template, q.obj), images=[self.world.image_ref(q.scene)])
                )
        answers: list[dict[str, Any]]
        if cfg.decision == "logprob":
            answers = _batched(requests, cfg.batch_size, lambda chunk: self._logprob(model, chunk), ctx, self.name)
        else:
            answers = _batched(requests, cfg.batch_size, lambda chunk: self._generate(model, chunk), ctx, self.name)

        metrics: dict[str, float] = {}
        records: list[dict[str, Any]] = []
        questions_per_split: dict[str, int] = {}
        for split in POPE_SPLITS:
            split_qs = [q for q in qs if q.split == split]
            preds = [answers[unique[(q.scene.key, q.obj)]]["yes"] for q in split_qs]
            values = binary_metrics([q.label for q in split_qs], preds)
            metrics.update({f"pope_{split}_{name}": v for name, v in values.items()})
            questions_per_split[split] = len(split_qs)
            for q, p in zip(split_qs, preds):
                answer = answers[unique[(q.scene.key, q.obj)]]
                records.append(
                    {
                        "id": q.scene.key,
                        "split": split,
                        "object": q.obj.name,
                        "label": "yes" if q.label else "no",
                        "prediction": "yes" if p else "no",
                        "correct": p == q.label,
                        **{k: v for k, v in answer.items() if k != "yes"},
                    }
                )
        for name in ("f1", "accuracy", "yes_ratio"):
            metrics[f"pope_{name}"] = sum(metrics[f"pope_{s}_{name}"] for s in POPE_SPLITS) / len(POPE_SPLITS)
        metrics = {name: metrics[name] for name in POPE_METRICS}  # declared order, headline first
        # yes_ratio is ideally 0.5 on these balanced splits; it is flagged lower-is-better
        # because the failure it watches for is the excess "yes" of a hallucinating model.
        higher = {m: not m.endswith("yes_ratio") for m in POPE_METRICS}
        details: dict[str, Any] = {
            "questions_per_split": questions_per_split,
            "unique_probes": len(requests),
            "images": cfg.n_images,
            "decision": cfg.decision,
        }
        if cfg.decision == "generate":
            details["unparsed_answers"] = sum(1 for a in answers if a["parsed"] is None)
        return EvalResult(metrics=metrics, higher_is_better=higher, n=len(qs), records=records, details=details)

    def _logprob(self, model: AlignableModel, chunk: Sequence[GenerationRequest]) -> list[dict[str, Any]]:
        cfg = self.config
        doubled = [r for r in chunk for _ in range(2)]
        continuations = [cfg.yes_answer, cfg.no_answer] * len(chunk)
        scores = model.continuation_logprobs(doubled, continuations, batch_size=cfg.batch_size)
        if len(scores) != len(doubled):
            raise RuntimeError(f"{self.name}: the model returned {len(scores)} log-probs for {len(doubled)} continuations")
        out = []
        for j in range(len(chunk)):
            margin = float(scores[2 * j]) - float(scores[2 * j + 1])
            out.append({"yes": margin > 0, "margin": margin})
        return out

    def _generate(self, model: AlignableModel, chunk: Sequence[GenerationRequest]) -> list[dict[str, Any]]:
        cfg = self.config
        texts = model.generate(chunk, max_new_tokens=cfg.max_new_tokens, do_sample=False, batch_size=cfg.batch_size)
        out = []
        for text in texts:
            parsed = parse_yes_no(text)
            out.append({"yes": parsed is True, "answer": text, "parsed": parsed})
        return out


class ShapesChairEvaluator:
    """Greedy captions scored against exact ground truth.

    In-distribution images give ``chair_i`` (hallucinated mentions / mentions),
    ``chair_s`` (captions with a hallucination / captions), ``recall`` (true
    objects named / true objects) and ``objects_per_caption``; objects are
    counted once per caption. The absent set (each image shows an anchor without
    its partner) gives the same numbers with an ``absent_`` prefix (CHAIR_s is
    omitted there) and:

    * ``partner_hallucination``: P(partner named | its anchor present, partner absent);
    * ``control_hallucination``: P(that same object named | neither it nor its anchor present),

    both pooled over all anchor pairs and absent-set captions. A language-prior
    error shows as partner hallucination well above the control.

    ``objects_per_caption`` is marked higher-is-better as a guard: a model can
    lower CHAIR by naming fewer objects, which shows up here and in recall.
    """

    name = "shapes-chair"

    def __init__(self, config: ShapesChairConfig):
        self.config = config
        self.world = ShapesWorld(config.world)

    def scenes(self) -> list[Scene]:
        """In-distribution images followed by the absent set."""
        cfg = self.config
        natural = [self.world.scene(EVAL_SPLIT, cfg.seed, i) for i in range(cfg.n_images)]
        absent = [self.world.absent_scene(EVAL_SPLIT, cfg.seed, i) for i in range(cfg.n_absent_images)]
        return natural + absent

    def evaluate(self, model: AlignableModel, ctx: Context | None = None) -> EvalResult:
        """Caption every image and report :data:`~mmalign_shapes.config.CHAIR_METRICS`."""
        cfg = self.config
        ctx = ctx if ctx is not None else Context()
        scenes = self.scenes()
        requests = [GenerationRequest(prompt=cfg.prompt, images=[self.world.image_ref(s)]) for s in scenes]
        captions: list[str] = _batched(
            requests,
            cfg.batch_size,
            lambda chunk: model.generate(chunk, max_new_tokens=cfg.max_new_tokens, do_sample=False, batch_size=cfg.batch_size),
            ctx,
            self.name,
        )
        natural, absent = CaptionTally(), CaptionTally()
        partner, control = Rate(), Rate()
        records: list[dict[str, Any]] = []
        for scene, caption in zip(scenes, captions):
            mentioned = self.world.parse(caption)
            tally = absent if scene.absent else natural
            wrong = tally.add(scene.objects, mentioned)
            if scene.absent:
                named = set(mentioned)
                for anchor, other in self.world.partner_of.items():
                    if other in scene:
                        continue
                    if anchor in scene:
                        partner.add(other in named, other.name)
                    else:
                        control.add(other in named, other.name)
            records.append(
                {
                    "id": scene.key,
                    "set": "absent" if scene.absent else "in_distribution",
                    "caption": caption,
                    "truth": [o.name for o in scene.objects],
                    "parsed": [o.name for o in mentioned],
                    "hallucinated": [o.name for o in wrong],
                    "missing_partner": [o.name for o in self.world.absent_partners(scene.objects)],
                }
            )
        metrics = {
            "partner_hallucination": partner.value,
            "control_hallucination": control.value,
            "chair_i": natural.chair_i,
            "chair_s": natural.chair_s,
            "recall": natural.recall,
            "objects_per_caption": natural.objects_per_caption,
            "absent_chair_i": absent.chair_i,
            "absent_recall": absent.recall,
            "absent_objects_per_caption": absent.objects_per_caption,
        }
        higher = {name: name in _CHAIR_HIGHER_IS_BETTER for name in metrics}
        details = {
            "images": cfg.n_images,
            "absent_images": cfg.n_absent_images,
            "partner_trials": partner.trials,
            "control_trials": control.trials,
            "partner_by_object": {k: v[0] / v[1] for k, v in sorted(partner.by_object.items())},
            "control_by_object": {k: v[0] / v[1] for k, v in sorted(control.by_object.items())},
            "mentions": natural.mentions,
            "absent_mentions": absent.mentions,
        }
        return EvalResult(metrics=metrics, higher_is_better=higher, n=len(scenes), records=records, details=details)


def make_pope_evaluator(config: ShapesPopeConfig) -> ShapesPopeEvaluator:
    """Factory of ``shapes-pope``."""
    return ShapesPopeEvaluator(config)


def make_chair_evaluator(config: ShapesChairConfig) -> ShapesChairEvaluator:
    """Factory of ``shapes-chair``."""
    return ShapesChairEvaluator(config)
