"""Pairwise judging: the comparison entry point, the judging prompt and the verdict parser (no torch).

The core :class:`~mmalign_core.protocols.Judge` protocol is text in, text out
(``complete(requests, ctx) -> list[str]``). Ranking a policy's samples needs a
comparison, so judges of this plugin also offer::

    judge.compare(items: Sequence[Comparison], ctx, *, policy=None) -> list[Verdict]
    judge.max_answers: int | None   # answers one comparison may hold (None: any number)

``policy`` is the current policy, passed by online-dpo / mixed-dpo (a self
judge uses it). Any judge without ``compare`` -- e.g. the evals plugin's
``scripted-judge`` or a third party's -- is used through :func:`compare_with`,
which builds the pairwise prompt, calls ``complete`` and parses the reply.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from mmalign_core.protocols import Context
from mmalign_core.types import GenerationRequest

from .config import DEFAULT_INSTRUCTIONS, DEFAULT_TEMPLATE

#: Verdict statuses: a decision, a tie, a reply no parser could read, a judge failure.
OK, TIE, UNPARSABLE, ERROR = "ok", "tie", "unparsable", "error"


@dataclass
class Comparison:
    """One question (with its images) and the answers to rank, in the order shown to the judge."""

    request: GenerationRequest
    answers: list[str]


@dataclass
class Verdict:
    """A judge's decision over the answers of one :class:`Comparison` (indices into its ``answers``).

    ``best``/``worst`` are set when ``status == "ok"``; ``scores`` holds one number per answer for
    judges that score (oracle, reward model); ``reply`` is the judge's text (or a rendered one).
    """

    best: Optional[int]
    worst: Optional[int]
    status: str
    reply: str = ""
    scores: Optional[list[float]] = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"best": self.best, "worst": self.worst, "status": self.status, "reply": self.reply}
        if self.scores is not None:
            out["scores"] = [round(float(s), 6) for s in self.scores]
        if self.detail:
            out["detail"] = self.detail
        return out


def verdict_from_scores(scores: Sequence[float], reply: str = "", margin: float = 0.0, detail: Optional[dict] = None) -> Verdict:
    """Best = highest score, worst = lowest (first in shown order among equals); a tie when they differ by ``margin`` or less."""
    scores = [float(s) for s in scores]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    worst = min(range(len(scores)), key=lambda i: (scores[i], i))
    if scores[best] - scores[worst] <= margin:
        return Verdict(None, None, TIE, reply, scores, detail or {})
    return Verdict(best, worst, OK, reply, scores, detail or {})


# ------------------------------------------------------------------------------ prompts
def pairwise_prompt(question: str, first: str, second: str, *, instructions: str = DEFAULT_INSTRUCTIONS,
                    template: str = DEFAULT_TEMPLATE) -> str:
    """The judging prompt for two responses (the image is attached by the model's chat template)."""
    return template.format(instructions=instructions, question=question, response_1=first, response_2=second)


def pairwise_request(request: GenerationRequest, first: str, second: str, **kw: Any) -> GenerationRequest:
    """A judging request showing ``request``'s images, its question and the two responses."""
    return GenerationRequest(prompt=pairwise_prompt(request.prompt, first, second, **kw), images=list(request.images))


_PAIRWISE = re.compile(r"Question: (?P<q>.*?)\nResponse 1: (?P<a>.*?)\nResponse 2: (?P<b>.*)\Z", re.S)


def extract_pairwise(prompt: str) -> Optional[tuple[str, str, str]]:
    """``(question, response 1, response 2)`` from a prompt in the default layout, else None.

    Lets judges that compare natively (oracle, reward model) also answer ``complete`` on the text prompts
    other judges are sent.
    """
    m = _PAIRWISE.search(prompt)
    if m is None:
        return None
    return m.group("q"), m.group("a"), m.group("b")


def render_verdict(choice: Optional[int], why: str = "") -> str:
    """A verdict text in the parsed format (``choice`` 1 or 2; None: a tie)."""
    if choice is None:
        return "Both responses are equally good." + (f" {why}" if why else "")
    return f"Response {choice} is better." + (f" {why}" if why else "")


# ------------------------------------------------------------------------------- parser
_NUM = r"(?:1|2|one|two|#\s*1|#\s*2|i{1,2})"
_RESP = r"(?:response|answer|candidate|option)"
_ORDINAL = {"first": 1, "second": 2, "former": 1, "latter": 2}
_N = {"1": 1, "2": 2, "one": 1, "two": 2, "#1": 1, "#2": 2, "i": 1, "ii": 2}

_BAD = r"(?:halluc\w*|inaccurate|wrong|incorrect|erroneous|misleading|verbose|confus\w*|made[- ]up)"
_GOOD = r"(?:accurate|helpful|correct|detailed|informative|grounded|precise|relevant|faithful|complete)"
_ADV = r"(?:clearly\s+|slightly\s+|much\s+|far\s+|the\s+|a\s+)?"
_LABELLED = rf"\b{_RESP}\s*[\(\[]?\s*({_NUM})\s*[\)\]]?\s*"
_WIN = re.compile(_LABELLED + r"(?:is|was|seems|appears|looks|has|contains|makes|gives)?\s*" + _ADV
                  + rf"(better|more\b(?!\s+{_BAD})|less\s+{_BAD}|fewer\s+{_BAD}|superior|preferred|preferable|best|wins|stronger)")
_LOSE = re.compile(_LABELLED + r"(?:is|was|seems|appears|looks|has|contains|makes|gives)\s*" + _ADV
                   + rf"(worse|more\s+{_BAD}|less\s+{_GOOD}|inferior|weaker)")
_NOT_WIN = re.compile(rf"\b{_RESP}\s*({_NUM})\s*(?:is|was)\s*not\s*(?:the\s+)?(better|best|preferred)")
_PREFER = re.compile(rf"\b(?:prefer|choose|chose|pick|select)\s*(?:the\s+)?{_RESP}\s*({_NUM})\b")
_ORD = re.compile(r"\bthe\s+(first|second|former|latter)\s+(?:response|answer|one)?\s*(?:is|was)\s*(?:clearly\s+|slightly\s+)?(better|more\b|superior|preferred|worse|less\b|inferior)")
_LABEL = re.compile(rf"^\W*(?:(?:better|best|winner|verdict|choice|answer)\s*(?:response|answer)?\s*[:=\-]\s*)?{_RESP}?\s*({_NUM})\b\W*(?:$|\n|\.|,|:|-|\))")
_TIE = re.compile(r"\b(tie|tied|equally\s+(?:good|bad|helpful|accurate|hallucinat\w*)|both\s+(?:responses\s+|answers\s+)?(?:are|were)\s+(?:equally\s+)?(?:good|bad|correct|incorrect|the\s+same|identical|equivalent)|neither\s+(?:response|answer|is|one)|no\s+(?:clear\s+)?(?:difference|winner|preference)|cannot\s+(?:decide|choose|determine)|can't\s+(?:decide|choose))\b")
_FIRST = re.compile(rf"\b{_RESP}\s*[\(\[]?\s*({_NUM})\b")


def _num(token: str) -> int:
    return _N[re.sub(r"\s+", "", token.lower())]


def parse_verdict(text: str) -> tuple[Optional[int], str]:
    """Read which response a free-text verdict prefers: ``(1 | 2, "ok")``, ``(None, "tie")`` or ``(None, "unparsable")``.

    In order (the first rule that matches decides):

    1. "Response N is/was better|more|superior|preferred|the best|wins" (the paper's pattern, widened to
       answer/candidate/option, "(1)", "#1", "one"), "Response N is worse|less|inferior" (the other one wins),
       "Response N is not better" (the other one), "I prefer/choose Response N", "the first/second one is better";
    2. a reply that *starts* with the label alone ("2", "Response 1.", "Better response: 2");
    3. explicit ties ("tie", "equally good", "both are ...", "neither ...", "no clear winner");
    4. the first "Response 1" or "Response 2" mentioned anywhere (the paper's fallback).

    Anything else is unparsable.
    """
    if not isinstance(text, str) or not text.strip():
        return None, UNPARSABLE
    t = text.strip().lower().replace("*", "")
    found: list[tuple[int, int]] = []  # (position, choice)
    for m in _NOT_WIN.finditer(t):
        found.append((m.start(), 3 - _num(m.group(1))))
    negated = {m.start() for m in _NOT_WIN.finditer(t)}
    for m in _WIN.finditer(t):
        if m.start() not in negated:
            found.append((m.start(), _num(m.group(1))))
    for m in _LOSE.finditer(t):
        found.append((m.start(), 3 - _num(m.group(1))))
    for m in _PREFER.finditer(t):
        found.append((m.start(), _num(m.group(1))))
    for m in _ORD.finditer(t):
        n = _ORDINAL[m.group(1)]
        worse = m.group(2).startswith(("worse", "less", "inferior"))
        found.append((m.start(), 3 - n if worse else n))
    if found:
        return min(found)[1], "ok"
    m = _LABEL.match(t)
    if m is not None:
        return _num(m.group(1)), "ok"
    if _TIE.search(t):
        return None, TIE
    m = _FIRST.search(t)
    if m is not None:
        return _num(m.group(1)), "ok"
    return None, UNPARSABLE


def verdict_from_text(reply: str) -> Verdict:
    """A two-answer :class:`Verdict` from a judge's free-text reply."""
    choice, status = parse_verdict(reply)
    if choice is None:
        return Verdict(None, None, status, reply)
    return Verdict(choice - 1, 2 - choice, OK, reply)


# ----------------------------------------------------------------------------- routing
def max_answers(judge: Any) -> Optional[int]:
    """How many answers one comparison of ``judge`` may hold (2 for text judges)."""
    if callable(getattr(judge, "compare", None)):
        return getattr(judge, "max_answers", None)
    return 2


def compare_with(
    judge: Any,
    items: Sequence[Comparison],
    ctx: Context,
    *,
    policy: Any = None,
    batch_size: int = 16,
    instructions: str = DEFAULT_INSTRUCTIONS,
    template: str = DEFAULT_TEMPLATE,
) -> list[Verdict]:
    """Verdicts for ``items`` from any judge: its own ``compare`` when it has one, else pairwise prompts through
    ``complete`` parsed with :func:`parse_verdict` (two answers per item)."""
    out: list[Verdict] = []
    native = callable(getattr(judge, "compare", None))
    for s in range(0, len(items), batch_size):
        chunk = list(items[s : s + batch_size])
        if native:
            got = judge.compare(chunk, ctx, policy=policy)
        else:
            if any(len(c.answers) != 2 for c in chunk):
                raise ValueError("a judge without compare() ranks exactly two answers per comparison")
            reqs = [pairwise_request(c.request, c.answers[0], c.answers[1], instructions=instructions, template=template) for c in chunk]
            replies = judge.complete(reqs, ctx)
            got = [verdict_from_text(r if isinstance(r, str) else "") for r in replies]
        got = list(got)
        if len(got) != len(chunk):
            raise RuntimeError(f"the judge returned {len(got)} verdicts for {len(chunk)} comparisons")
        out.extend(got)
    return out


__all__ = [
    "Comparison",
    "Verdict",
    "OK",
    "TIE",
    "UNPARSABLE",
    "ERROR",
    "compare_with",
    "extract_pairwise",
    "max_answers",
    "pairwise_prompt",
    "pairwise_request",
    "parse_verdict",
    "render_verdict",
    "verdict_from_scores",
    "verdict_from_text",
]
