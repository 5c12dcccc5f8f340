"""Test doubles: a model whose answers a test scripts, with no torch."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from ..types import GenerationRequest, ImageRef

Responder = Callable[[GenerationRequest], str]
Scorer = Callable[[GenerationRequest, str], float]

_NOT_TRAINABLE = "ScriptedModel only supports generation (generate, continuation_logprobs); use a real model to train"


class _NullModule:
    """Stands in for ``model.module`` so ``model.module.eval()`` / ``.train()`` work."""

    training = False

    def eval(self) -> "_NullModule":
        self.training = False
        return self

    def train(self, mode: bool = True) -> "_NullModule":
        self.training = mode
        return self

    def parameters(self) -> list[Any]:
        return []


class ScriptedModel:
    """A model that answers from a function: :class:`~mmalign_core.protocols.GenerativeModel`.

    Evaluators and judges only generate and score continuations, so they can
    be contract-checked (and unit-tested) against a model whose behaviour the
    test decides, without torch or weights.

    Args:
        respond: the answer to each request -- a constant string or a function
            ``respond(request) -> str``. :meth:`generate` returns it as the text
            after ``request.answer_prefix``, like a real model.
        score: ``score(request, continuation) -> float``, the summed log-prob
            :meth:`continuation_logprobs` reports. Default: a continuation the
            scripted answer starts with (case and surrounding spaces ignored)
            scores ``-0.1 * len(continuation)``; any other continuation scores
            ``-10 - 0.1 * len(continuation)``. So with ``respond="Yes."`` the
            continuation ``"Yes."`` beats ``"No."``.
        check_requests: validate every request (a :class:`GenerationRequest`
            with a non-empty prompt and images that are :class:`ImageRef`) and
            load every image, raising ``TypeError``/``ValueError`` on a bad one.
            This is part of what :func:`check_evaluator` verifies.
        name: used in :meth:`fingerprint`.

    Attributes:
        generated: ``(request, answer)`` for every request :meth:`generate` answered.
        scored: ``(request, continuation, logprob)`` for every scored continuation.
        calls: ``(method, number of requests, keyword arguments)`` per call.
    """

    capabilities = frozenset({"generate"})

    def __init__(
        self,
        respond: Union[str, Responder] = "",
        *,
        score: Optional[Scorer] = None,
        check_requests: bool = True,
        name: str = "scripted",
    ) -> None:
        if isinstance(respond, str):
            fixed = respond

            def constant(request: Any) -> str:
                return fixed

            self._respond: Responder = constant
        else:
            self._respond = respond
        self._score = score
        self.check_requests = check_requests
        self.name = name
        self.module = _NullModule()
        self.generated: list[tuple[GenerationRequest, str]] = []
        self.scored: list[tuple[GenerationRequest, str, float]] = []
        self.calls: list[tuple[str, int, dict[str, Any]]] = []

    # ------------------------------------------------------------- generation
    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        batch_size: int = 16,
    ) -> list[str]:
        """The scripted answer to each request, in order."""
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p, batch_size=batch_size)
        self.calls.append(("generate", len(requests), kwargs))
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be at least 1")
        answers = []
        for request in requests:
            self._check(request)
            answer = self._respond(request)
            if not isinstance(answer, str):
                raise TypeError(f"the scripted responder returned {type(answer).__name__}, not str")
            self.generated.append((request, answer))
            answers.append(answer)
        return answers

    def continuation_logprobs(
        self, requests: Sequence[GenerationRequest], continuations: Sequence[str], *, batch_size: int = 32
    ) -> list[float]:
        """The scripted log-prob of each continuation given its request."""
        self.calls.append(("continuation_logprobs", len(requests), {"batch_size": batch_size}))
        if len(requests) != len(continuations):
            raise ValueError(f"{len(requests)} requests but {len(continuations)} continuations")
        out = []
        for request, continuation in zip(requests, continuations):
            self._check(request)
            if not isinstance(continuation, str):
                raise TypeError(f"continuation must be str, got {type(continuation).__name__}")
            value = float(self._score(request, continuation) if self._score else self._default_score(request, continuation))
            self.scored.append((request, continuation, value))
            out.append(value)
        return out

    def _default_score(self, request: GenerationRequest, continuation: str) -> float:
        answer = self._respond(request).strip().lower()
        text = continuation.strip().lower()
        penalty = 0.1 * len(continuation)
        return -penalty if text and answer.startswith(text) else -10.0 - penalty

    def _check(self, request: Any) -> None:
        if not self.check_requests:
            return
        if not isinstance(request, GenerationRequest):
            raise TypeError(f"expected a GenerationRequest, got {type(request).__name__}")
        if not isinstance(request.prompt, str) or not request.prompt.strip():
            raise ValueError("a GenerationRequest has an empty prompt")
        if not isinstance(request.answer_prefix, str):
            raise TypeError("GenerationRequest.answer_prefix must be str")
        for image in request.images:
            if not isinstance(image, ImageRef):
                raise TypeError(f"GenerationRequest.images must hold ImageRef objects, got {type(image).__name__}")
            image.load()

    # --------------------------------------------------- the rest of the protocol
    def pair_logps(self, pairs: Sequence[Any], *, with_rejected: bool = True) -> Any:
        raise NotImplementedError(_NOT_TRAINABLE)

    def sft_logps(self, examples: Sequence[Any]) -> Any:
        raise NotImplementedError(_NOT_TRAINABLE)

    def trainable_parameter_groups(self, lr: float, projector_lr: float | None) -> list[dict[str, Any]]:
        raise NotImplementedError(_NOT_TRAINABLE)

    def reference(self) -> Any:
        raise NotImplementedError(_NOT_TRAINABLE)

    def save_pretrained(self, path: Path) -> None:
        raise NotImplementedError(_NOT_TRAINABLE)

    def to(self, device: Any) -> "ScriptedModel":
        return self

    def fingerprint(self) -> str:
        return "scripted-" + hashlib.sha1(self.name.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"ScriptedModel({self.name!r})"


__all__ = ["ScriptedModel"]
