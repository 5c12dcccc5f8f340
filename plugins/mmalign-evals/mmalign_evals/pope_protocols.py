"""POPE protocols: how an answer is read as yes or no, and how the per-split numbers are computed and combined.

* ``pope-original`` (default): the POPE authors' ``evaluate.py`` and LLaVA's ``llava/eval/eval_pope.py``, which
  apply the same rule. Keep the text before the first period; drop commas; split on single spaces (only the
  space character); the answer is "no" when one of the pieces is exactly ``No``, ``no`` or ``not``, "yes"
  otherwise -- so ``"NO"``, ``"Not really."``, ``"\\tNo"`` and ``"no\\n"`` read as yes. Metrics per split; the
  summary is the mean over the three splits (LLaVA's convention).
* ``lmms-eval``: lmms-eval's ``tasks/pope/utils.py``. The answer, lower-cased and stripped, must equal ``yes``
  or ``no``; anything else (``"Yes."``) is wrong. Precision counts only ``yes`` predictions, recall only
  ``yes``/``no`` predictions, and ``yes_ratio`` is the share of *labels* that are yes. Its ``pope`` task scores
  the pooled questions, so the summary metrics are computed over the three splits pooled.
* ``tolerant``: the reading mmalign used before: ``pope-original``'s rule, case-insensitive and splitting on
  any white space.
* ``first-yes-no``: the first of yes/yeah/yep or no/nope/not (``n't`` counts as ``not``) decides; an answer
  with neither counts as no.

Each protocol's reading is a :class:`Reading`: ``yes``, ``no`` or ``other`` (lmms-eval's non-answers, and
``first-yes-no``'s answers without a yes/no word).
"""
from __future__ import annotations

import re
from typing import ClassVar, Literal, Sequence

Reading = Literal["yes", "no", "other"]


def ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def confusion(labels: Sequence[bool], readings: Sequence[Reading]) -> dict[str, int]:
    """TP/FP/TN/FN with "yes" positive; ``other`` readings count as "no" predictions."""
    out = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for label, reading in zip(labels, readings):
        yes = reading == "yes"
        out[("t" if yes == label else "f") + ("p" if yes else "n")] += 1
    return out


def binary_metrics(labels: Sequence[bool], readings: Sequence[Reading]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and predicted yes-share, "yes" positive and every non-yes a "no"
    (the reference script's formulas; 0 where it would divide by zero)."""
    c = confusion(labels, readings)
    precision, recall = ratio(c["tp"], c["tp"] + c["fp"]), ratio(c["tp"], c["tp"] + c["fn"])
    return {
        "accuracy": ratio(c["tp"] + c["tn"], len(labels)),
        "precision": precision,
        "recall": recall,
        "f1": ratio(2 * precision * recall, precision + recall),
        "yes_ratio": ratio(c["tp"] + c["fp"], len(labels)),
    }


class PopeProtocol:
    """A POPE protocol: ``read`` one answer, ``metrics`` of one split, ``pooled`` summary or mean of splits."""

    name: ClassVar[str] = ""
    source: ClassVar[str] = ""
    reference: ClassVar[bool] = True
    #: The summary metrics (``pope_<metric>``) are over the pooled questions (True) or the mean of the splits.
    pooled: ClassVar[bool] = False

    def read(self, answer: str) -> Reading:  # pragma: no cover - abstract
        raise NotImplementedError

    def metrics(self, labels: Sequence[bool], readings: Sequence[Reading]) -> dict[str, float]:
        return binary_metrics(labels, readings)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "source": self.source, "reference": self.reference,
                "summary": "pooled over the splits" if self.pooled else "mean over the splits"}


class PopeOriginal(PopeProtocol):
    name = "pope-original"
    source = "POPE evaluate.py (github.com/AoiDragon/POPE) = LLaVA llava/eval/eval_pope.py"

    def read(self, answer: str) -> Reading:
        first = answer.split(".")[0]
        pieces = first.replace(",", "").split(" ")
        return "no" if any(p in ("No", "no", "not") for p in pieces) else "yes"


class LmmsEvalPope(PopeProtocol):
    name = "lmms-eval"
    source = "lmms-eval lmms_eval/tasks/pope/utils.py (pope task)"
    pooled = True

    def read(self, answer: str) -> Reading:
        text = answer.lower().strip()
        return text if text in ("yes", "no") else "other"  # type: ignore[return-value]

    def metrics(self, labels: Sequence[bool], readings: Sequence[Reading]) -> dict[str, float]:
        tp = sum(1 for y, r in zip(labels, readings) if y and r == "yes")
        fp = sum(1 for y, r in zip(labels, readings) if not y and r == "yes")
        fn = sum(1 for y, r in zip(labels, readings) if y and r == "no")
        correct = sum(1 for y, r in zip(labels, readings) if r == ("yes" if y else "no"))
        precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
        return {
            "accuracy": ratio(correct, len(labels)),
            "precision": precision,
            "recall": recall,
            "f1": ratio(2 * precision * recall, precision + recall),
            "yes_ratio": ratio(sum(1 for y in labels if y), len(labels)),
        }


class TolerantPope(PopeProtocol):
    name = "tolerant"
    source = "mmalign: pope-original's rule, case-insensitive, split on any white space"
    reference = False

    def read(self, answer: str) -> Reading:
        first = answer.split(".")[0]
        words = first.replace(",", "").lower().split()
        return "no" if ("no" in words or "not" in words) else "yes"


_YES_NO = re.compile(r"\b(yes|yeah|yep|no|nope|not)\b")


class FirstYesNoPope(PopeProtocol):
    name = "first-yes-no"
    source = "mmalign: the first yes/no word decides"
    reference = False

    def read(self, answer: str) -> Reading:
        m = _YES_NO.search(answer.lower().replace("n't", " not"))
        if m is None:
            return "other"
        return "yes" if m.group(1) in ("yes", "yeah", "yep") else "no"


POPE_PROTOCOLS: dict[str, type[PopeProtocol]] = {p.name: p for p in (PopeOriginal, LmmsEvalPope, TolerantPope, FirstYesNoPope)}
DEFAULT_POPE_PROTOCOL = PopeOriginal.name


def pope_protocol(name: str) -> PopeProtocol:
    if name not in POPE_PROTOCOLS:
        raise KeyError(f"unknown POPE protocol {name!r}; known: {', '.join(POPE_PROTOCOLS)}")
    return POPE_PROTOCOLS[name]()


__all__ = ["Reading", "PopeProtocol", "PopeOriginal", "LmmsEvalPope", "TolerantPope", "FirstYesNoPope", "POPE_PROTOCOLS",
           "DEFAULT_POPE_PROTOCOL", "pope_protocol", "binary_metrics", "confusion", "ratio"]
