"""The ``dropout-ntp`` preference source (InternVL MPO's Dropout Next-Token Prediction).

For each base example the chosen answer is cut after ``keep_fraction`` of its words and the stage-start
model continues it greedily with **every image token hidden** from the language model (BDHS's
attention-level restriction, ``mmalign_bdhs.generation.generate_rows`` with all image keys masked), so
the continuation comes from the language prior alone; head + continuation is the rejected answer. The
prompt and its image tokens stay exactly as in training, only their attention is cut.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from mmalign_core.protocols import Context
from mmalign_core.types import PreferencePair

from .config import DropoutNTPConfig


class NeedsModelError(ValueError):
    """``pairs`` was called without the stage-start model (the entry requires ``generate``)."""


def _hide_all(k: int) -> np.ndarray:
    return np.ones(k, dtype=bool)


def head_words(text: str, keep_fraction: float) -> str | None:
    """The first ceil(keep_fraction * words) words (at least 1, at most all but one); None under two words."""
    from mmalign_bdhs.text import cut_sentence, word_spans

    n = len(word_spans(text))
    if n < 2:
        return None
    keep = min(max(1, int(np.ceil(keep_fraction * n))), n - 1)
    return cut_sentence(text, keep)


class DropoutNTPSource:
    """Pairs (chosen = the base answer, rejected = its head completed without the image)."""

    def __init__(self, config: DropoutNTPConfig, plugins: Any = None):
        from mmalign_bdhs.sources import BaseData

        self.config = config
        self.base = BaseData(config, plugins)
        self.skipped: dict[str, int] = {}

    def fingerprint(self) -> str:
        cfg = self.config.model_dump(mode="json", exclude={"base", "batch_size"})
        blob = json.dumps({"config": cfg, "base": self.base.fingerprint()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def stats(self) -> dict[str, Any]:
        return {"skipped": {**self.base.skipped, **self.skipped}}

    def pairs(self, ctx: Context) -> list[PreferencePair]:
        from mmalign_bdhs.generation import Row, generate_rows

        model = ctx.extras.get("model")
        if model is None:
            raise NeedsModelError("dropout-ntp generates rejected answers with the stage-start model; run it inside a run's align stage")
        cfg = self.config
        self.skipped = {}
        todo = []
        for rec in self.base.records(ctx):
            head = head_words(rec.chosen, cfg.keep_fraction)
            if head is None:
                self.skipped["too_short"] = self.skipped.get("too_short", 0) + 1
                continue
            todo.append((rec, head))
        rows = [Row(prompt=rec.prompt, images=rec.images, prefix=head, hide=_hide_all) for rec, head in todo]
        completions = generate_rows(model, rows, method="attention", max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
        out = []
        for (rec, head), completion in zip(todo, completions):
            rejected = head + completion
            if rejected.strip() == rec.chosen.strip():
                self.skipped["same_as_chosen"] = self.skipped.get("same_as_chosen", 0) + 1
                continue
            meta = {**rec.meta, "dropout_ntp": {"head": head, "keep_fraction": cfg.keep_fraction}}
            if rec.rejected is not None:
                meta["dropout_ntp"]["external_rejected"] = rec.rejected
            out.append(PreferencePair(id=rec.id, prompt=rec.prompt, chosen=rec.chosen, rejected=rejected,
                                      images=list(rec.images), source="dropout-ntp", meta=meta))
        return out


def make_source(config: DropoutNTPConfig, context: Any = None) -> DropoutNTPSource:
    return DropoutNTPSource(config, plugins=context.plugins if context is not None else None)
