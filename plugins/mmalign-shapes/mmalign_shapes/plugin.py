"""Registration of the shapes components (imports only config classes and entry records)."""
from __future__ import annotations

from typing import Any

from mmalign_core import EvaluatorEntry, SourceEntry, hookimpl

from .checks import check_run
from .config import (
    CHAIR_METRICS,
    POPE_METRICS,
    ShapesChairConfig,
    ShapesPairsConfig,
    ShapesPopeConfig,
    ShapesSFTConfig,
)


@hookimpl
def mmalign_preference_sources() -> list[SourceEntry]:
    return [
        SourceEntry(
            name="shapes-sft",
            summary="Synthetic shapes world: captions, yes/no and counting questions, plus text-only captions carrying the co-occurrence prior.",
            config=ShapesSFTConfig,
            factory="mmalign_shapes.sources:make_sft_source",
            capabilities={"sft", "static"},
        ),
        SourceEntry(
            name="shapes-pairs",
            summary="Synthetic shapes world: true caption vs the caption with one injected hallucination (partner, add, swap).",
            config=ShapesPairsConfig,
            factory="mmalign_shapes.sources:make_pairs_source",
            capabilities={"pairs", "static"},
        ),
    ]


@hookimpl
def mmalign_evaluators() -> list[EvaluatorEntry]:
    return [
        EvaluatorEntry(
            name="shapes-pope",
            summary="POPE-style yes/no object probe on held-out shapes images (random, popular, adversarial negatives).",
            config=ShapesPopeConfig,
            factory="mmalign_shapes.evaluators:make_pope_evaluator",
            requires={"generate"},
            metrics=POPE_METRICS,
        ),
        EvaluatorEntry(
            name="shapes-chair",
            summary="CHAIR, recall and partner-vs-control hallucination of greedy captions on held-out shapes images.",
            config=ShapesChairConfig,
            factory="mmalign_shapes.evaluators:make_chair_evaluator",
            requires={"generate"},
            metrics=CHAIR_METRICS,
        ),
    ]


@hookimpl
def mmalign_check_run(spec: Any, resolved: Any) -> list:
    return check_run(spec, resolved)
