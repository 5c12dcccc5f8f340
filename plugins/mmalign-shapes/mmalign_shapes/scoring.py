"""Metric arithmetic shared by the evaluators (pure Python, no model calls).

Conventions: a ratio with an empty denominator is 0.0 (and the evaluators
report the denominators in ``EvalResult.details``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .text import ShapeObject


def ratio(num: float, den: float) -> float:
    """``num / den``, or 0.0 when ``den`` is 0."""
    return float(num) / float(den) if den else 0.0


def binary_metrics(labels: Sequence[bool], predictions: Sequence[bool]) -> dict[str, float]:
    """POPE metrics with "yes" as the positive class.

    Returns accuracy, precision, recall, f1 and yes_ratio (share of "yes"
    predictions). Precision is 0 when nothing is predicted "yes"; f1 is 0 when
    precision and recall are both 0.
    """
    if len(labels) != len(predictions):
        raise ValueError("labels and predictions differ in length")
    tp = sum(1 for y, p in zip(labels, predictions) if y and p)
    fp = sum(1 for y, p in zip(labels, predictions) if not y and p)
    tn = sum(1 for y, p in zip(labels, predictions) if not y and not p)
    fn = sum(1 for y, p in zip(labels, predictions) if y and not p)
    n = len(labels)
    precision = ratio(tp, tp + fp)
    recall = ratio(tp, tp + fn)
    return {
        "accuracy": ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": ratio(2 * precision * recall, precision + recall),
        "yes_ratio": ratio(tp + fp, n),
    }


@dataclass
class CaptionTally:
    """Running CHAIR-style counts over a set of captions (objects counted once per caption)."""

    captions: int = 0
    mentions: int = 0
    hallucinated: int = 0
    captions_with_hallucination: int = 0
    true_objects: int = 0
    recalled: int = 0

    def add(self, truth: Iterable[ShapeObject], mentioned: Iterable[ShapeObject]) -> list[ShapeObject]:
        """Count one caption; returns its hallucinated objects."""
        truth_set = set(truth)
        mentioned = list(dict.fromkeys(mentioned))
        wrong = [o for o in mentioned if o not in truth_set]
        self.captions += 1
        self.mentions += len(mentioned)
        self.hallucinated += len(wrong)
        self.captions_with_hallucination += bool(wrong)
        self.true_objects += len(truth_set)
        self.recalled += sum(1 for o in mentioned if o in truth_set)
        return wrong

    @property
    def chair_i(self) -> float:
        """Hallucinated object mentions / all object mentions."""
        return ratio(self.hallucinated, self.mentions)

    @property
    def chair_s(self) -> float:
        """Captions with at least one hallucinated object / captions."""
        return ratio(self.captions_with_hallucination, self.captions)

    @property
    def recall(self) -> float:
        """True objects mentioned / true objects."""
        return ratio(self.recalled, self.true_objects)

    @property
    def objects_per_caption(self) -> float:
        """Distinct objects mentioned per caption."""
        return ratio(self.mentions, self.captions)


@dataclass
class Rate:
    """A success count over trials."""

    hits: int = 0
    trials: int = 0
    by_object: dict[str, list[int]] = field(default_factory=dict)

    def add(self, hit: bool, key: str = "") -> None:
        self.hits += bool(hit)
        self.trials += 1
        if key:
            row = self.by_object.setdefault(key, [0, 0])
            row[0] += bool(hit)
            row[1] += 1

    @property
    def value(self) -> float:
        return ratio(self.hits, self.trials)
