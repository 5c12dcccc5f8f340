"""Short-answer VQA protocols: how ``vqa_accuracy`` and ``vqa_exact_match`` are computed.

* ``evalai`` (TextVQA's default): EvalAI's answer processor and TextVQA's VQA accuracy, as in mmf, LLaVA's
  ``m4c_evaluator.py`` and lmms-eval's ``textvqa`` task; exact match under the same processor.
* ``lmms-eval`` (GQA's default): lmms-eval's ``gqa`` task, ``exact_match`` with ``ignore_case`` and
  ``ignore_punctuation``; both metrics are that exact match.
* ``tolerant`` (the default for generic JSONL data): mmalign's former rules -- a contraction table generated
  from the canonical forms, no cap on stripped periods, exact match when there is a single reference, and for
  GQA white space stripped and collapsed.

See :mod:`mmalign_evals.vqa_norm` for the rules themselves.
"""
from __future__ import annotations

from typing import Callable, ClassVar, Sequence

from .vqa_norm import exact_match, exact_match_evalai, exact_match_lmms, vqa_accuracy, vqa_accuracy_evalai


class VQAProtocol:
    name: ClassVar[str] = ""
    source: ClassVar[str] = ""
    reference: ClassVar[bool] = True
    #: What ``vqa_accuracy`` is ("vqa": the annotator-agreement accuracy; "exact_match") and the normaliser's name.
    scoring: str = "vqa"
    normalize: str = ""

    def accuracy(self, prediction: str, references: Sequence[str]) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def exact_match(self, prediction: str, references: Sequence[str]) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "source": self.source, "reference": self.reference, "scoring": self.scoring,
                "normalize": self.normalize}


class EvalAIVQA(VQAProtocol):
    name = "evalai"
    source = "EvalAI VQA answer processor + TextVQA accuracy (mmf; LLaVA llava/eval/m4c_evaluator.py; lmms-eval textvqa)"
    normalize = "evalai"

    def accuracy(self, prediction: str, references: Sequence[str]) -> float:
        return vqa_accuracy_evalai(prediction, references)

    def exact_match(self, prediction: str, references: Sequence[str]) -> float:
        return exact_match_evalai(prediction, references)


class LmmsEvalExactMatch(VQAProtocol):
    name = "lmms-eval"
    source = "lmms-eval gqa task: exact_match with ignore_case and ignore_punctuation"
    scoring = "exact_match"
    normalize = "lower-punct"

    def accuracy(self, prediction: str, references: Sequence[str]) -> float:
        return exact_match_lmms(prediction, references)

    def exact_match(self, prediction: str, references: Sequence[str]) -> float:
        return exact_match_lmms(prediction, references)


class TolerantVQA(VQAProtocol):
    """mmalign's former rules: VQA accuracy for TextVQA-like data, collapsed-whitespace exact match for GQA."""

    name = "tolerant"
    source = "mmalign: generated contraction table, no period cap, single-reference exact match; GQA white space collapsed"
    reference = False

    def __init__(self, benchmark: str):
        self.scoring = "exact_match" if benchmark == "gqa" else "vqa"
        self.normalize = "lower-punct-collapsed" if benchmark == "gqa" else "vqa"
        self._norm = "lower-punct" if benchmark == "gqa" else "vqa"

    def accuracy(self, prediction: str, references: Sequence[str]) -> float:
        if self.scoring == "vqa":
            return vqa_accuracy(prediction, references)
        return exact_match(prediction, references, self._norm)

    def exact_match(self, prediction: str, references: Sequence[str]) -> float:
        return exact_match(prediction, references, self._norm)


DEFAULT_VQA_PROTOCOLS = {"textvqa": "evalai", "gqa": "lmms-eval", "jsonl": "tolerant"}


PROTOCOL_FACTORIES: dict[str, Callable[[str], VQAProtocol]] = {
    EvalAIVQA.name: lambda benchmark: EvalAIVQA(),
    LmmsEvalExactMatch.name: lambda benchmark: LmmsEvalExactMatch(),
    TolerantVQA.name: TolerantVQA,
}


def vqa_protocol(name: str, benchmark: str) -> VQAProtocol:
    """The protocol ``name`` ("auto": the benchmark's published one) for ``benchmark``."""
    name = DEFAULT_VQA_PROTOCOLS[benchmark] if name == "auto" else name
    if name not in PROTOCOL_FACTORIES:
        raise KeyError(f"unknown VQA protocol {name!r}; known: auto, {', '.join(PROTOCOL_FACTORIES)}")
    return PROTOCOL_FACTORIES[name](benchmark)


__all__ = ["VQAProtocol", "EvalAIVQA", "LmmsEvalExactMatch", "TolerantVQA", "DEFAULT_VQA_PROTOCOLS", "PROTOCOL_FACTORIES", "vqa_protocol"]
