"""Calling judges: building them from a spec reference, and a resumable on-disk cache of their replies.

A judge (protocol :class:`mmalign_core.protocols.Judge`) answers judging
prompts: ``complete(requests, ctx) -> list[str]`` and ``describe() -> dict``.
Evaluators build the prompts (rubric, question, answers, optional image) and
parse the replies; :class:`CachedJudge` sits in between and stores every reply
as one JSON line in ``<cache_dir>/judge-cache/<judge-hash>.jsonl``, keyed by
``sha256(judge.describe(), prompt text, image keys)``. Each reply is appended
with a single ``write`` on an ``O_APPEND`` descriptor as soon as its batch
returns, so an interrupted evaluation loses at most one batch and a rerun
(or another evaluator asking the same question) reuses what is there.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from mmalign_core.protocols import Context
from mmalign_core.types import GenerationRequest

from .common import MissingJudgeError
from .config import JudgeRef, ScriptedJudgeConfig

CACHE_FOLDER = "judge-cache"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def build_judge(ref: Optional[JudgeRef], evaluator: str) -> Any:
    """Build the judge a config references (``MissingJudgeError`` when there is none)."""
    if ref is None:
        raise MissingJudgeError(
            f"{evaluator} is scored by a judge but its config has none: set \"judge\": {{\"name\": ..., \"config\": {{...}}}} "
            "in the evaluator's config (`mmalign plugins` lists the installed judges; 'scripted-judge' is a test double)"
        )
    entry = ref.entry()
    judge = entry.build(ref.config)
    for method in ("complete", "describe"):
        if not callable(getattr(judge, method, None)):
            raise TypeError(f"judge {entry.qualified_name!r} has no {method}() method (see mmalign_core.protocols.Judge)")
    return judge


class CachedJudge:
    """A judge behind a resumable JSONL cache of its replies.

    Args:
        judge: the judge component.
        ctx: the evaluator's context (``cache_dir``, ``progress``, ``log``).
        enabled: use the cache (reading and writing); off, every prompt goes to the judge.
        batch_size: prompts per ``judge.complete`` call.
        cache_dir: where the cache folder lives; default ``ctx.cache_dir``.

    Attributes:
        identity: ``judge.describe()``, recorded in the results.
        hits, calls: replies served from the cache and prompts sent to the judge.
    """

    def __init__(self, judge: Any, ctx: Context, *, enabled: bool = True, batch_size: int = 8, cache_dir: Optional[Path] = None):
        self.judge = judge
        self.ctx = ctx
        self.enabled = enabled
        self.batch_size = batch_size
        self.identity = judge.describe()
        if not isinstance(self.identity, dict):
            raise TypeError(f"judge.describe() must return a dict, got {type(self.identity).__name__}")
        self._identity_json = _canonical(self.identity)
        digest = hashlib.sha256(self._identity_json.encode()).hexdigest()[:16]
        self.path = Path(cache_dir or ctx.cache_dir) / CACHE_FOLDER / f"{digest}.jsonl"
        self.hits = 0
        self.calls = 0
        self._cache: dict[str, str] = self._load() if enabled else {}

    def key(self, request: GenerationRequest) -> str:
        """The cache key of one judging request."""
        payload = {
            "judge": self._identity_json,
            "prompt": request.prompt,
            "answer_prefix": request.answer_prefix,
            "images": [image.key for image in request.images],
        }
        return hashlib.sha256(_canonical(payload).encode()).hexdigest()

    def _load(self) -> dict[str, str]:
        cache: dict[str, str] = {}
        if not self.path.is_file():
            return cache
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                    cache[row["key"]] = row["reply"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a torn last line of an interrupted write
        return cache

    def _append(self, rows: Sequence[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for row in rows:
                os.write(fd, (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def complete(self, requests: Sequence[GenerationRequest], desc: str = "judge") -> list[str]:
        """One reply per request: cached ones first, the rest from the judge in batches (under a progress bar)."""
        keys = [self.key(r) for r in requests]
        replies: list[Optional[str]] = [self._cache.get(k) if self.enabled else None for k in keys]
        todo = [i for i, r in enumerate(replies) if r is None]
        self.hits += len(requests) - len(todo)
        if todo and self.hits:
            self.ctx.log(f"{desc}: {self.hits} judge replies from the cache, {len(todo)} to ask")
        batch: list[int] = []

        def flush() -> None:
            asked = [requests[i] for i in batch]
            got = self.judge.complete(asked, self.ctx)
            got = list(got) if got is not None else []
            if len(got) != len(asked):
                raise RuntimeError(f"{desc}: the judge returned {len(got)} replies for {len(asked)} prompts")
            rows = []
            for i, reply in zip(batch, got):
                if not isinstance(reply, str):
                    raise TypeError(f"{desc}: the judge returned a {type(reply).__name__}, not str")
                replies[i] = reply
                self._cache[keys[i]] = reply
                rows.append({"key": keys[i], "reply": reply})
            self.calls += len(asked)
            if self.enabled:
                self._append(rows)
            batch.clear()

        for i in self.ctx.progress(todo, desc=f"{desc}: judging", total=len(todo)):
            batch.append(i)
            if len(batch) >= self.batch_size:
                flush()
        if batch:
            flush()
        return [r if r is not None else "" for r in replies]

    def details(self, template: str) -> dict[str, Any]:
        """What ``details.judge`` records: identity, prompt template and its hash, cache use."""
        return {
            "identity": self.identity,
            "prompt_template": template,
            "prompt_sha256": hashlib.sha256(template.encode()).hexdigest(),
            "cache": str(self.path) if self.enabled else None,
            "cache_hits": self.hits,
            "judge_calls": self.calls,
        }


# --------------------------------------------------------------------------- scripted judge
class ScriptedJudge:
    """A deterministic judge for tests and debugging (component ``scripted-judge``).

    Each prompt gets the reply of the first pattern in ``replies`` that it
    contains (``match="substring"``) or that ``re.search`` finds in it
    (``match="regex"``); a prompt no pattern matches gets ``default``. With no
    patterns it is a fixed-reply judge. It never looks at images.

    Attributes:
        prompts: every prompt it was asked, in order (for tests).
    """

    def __init__(self, config: ScriptedJudgeConfig):
        self.config = config
        self._patterns = [
            (re.compile(p) if config.match == "regex" else p, reply) for p, reply in config.replies.items()
        ]
        self.prompts: list[str] = []

    def _reply(self, prompt: str) -> str:
        for pattern, reply in self._patterns:
            if (pattern.search(prompt) is not None) if isinstance(pattern, re.Pattern) else (pattern in prompt):
                return reply
        return self.config.default

    def complete(self, requests: Sequence[GenerationRequest], ctx: Context) -> list[str]:
        out = []
        for request in requests:
            self.prompts.append(request.prompt)
            out.append(self._reply(request.prompt))
        return out

    def describe(self) -> dict[str, Any]:
        config = self.config.model_dump(mode="json")
        return {
            "judge": "scripted-judge",
            "label": self.config.label,
            "config_sha256": hashlib.sha256(_canonical(config).encode()).hexdigest()[:16],
        }


def make_scripted_judge(config: ScriptedJudgeConfig) -> ScriptedJudge:
    """Factory of ``scripted-judge``."""
    return ScriptedJudge(config)


__all__ = ["CachedJudge", "ScriptedJudge", "build_judge", "make_scripted_judge", "CACHE_FOLDER"]
