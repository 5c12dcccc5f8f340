"""Over-long examples are dropped before training, for models that have no ``filter_too_long`` of their own.

A model with a length budget (``max_length``) that can tokenize an answer (``answer_tokens``) but has
no ``filter_too_long`` would otherwise meet an over-long example mid-training, as a crash. Here the
text of each example (prompt plus its longest answer) is tokenized up front; one whose text alone
exceeds the budget can never fit (image tokens only add to it) and is dropped and counted. Texts too
short to exceed it (at most 4 tokens per character, a byte-level bound) are not tokenized at all.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from ..types import SFTExample


class Kept(Sequence[Any]):
    """The examples at ``index`` of a sequence, in order, without copying them."""

    def __init__(self, items: Sequence[Any], index: list[int]):
        self._items, self._index = items, index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._items[self._index[j]] for j in range(*i.indices(len(self._index)))]
        return self._items[self._index[i]]


def _texts(example: Any) -> list[str]:
    if isinstance(example, SFTExample):
        return [example.response]
    return [example.chosen, example.rejected, *getattr(example, "extra_rejected", [])]


def text_token_count(example: Any, count: Callable[[str], int], budget: int) -> int:
    """Tokens of the prompt plus the longest answer (text only), or 0 when the text is too short to exceed ``budget``."""
    texts = [example.prompt, *_texts(example)]
    if 4 * sum(len(t) for t in texts) + 8 <= budget:
        return 0
    return count(example.prompt) + max(count(t) for t in _texts(example))


def drop_over_long_text(model: Any, examples: Sequence[Any]) -> tuple[Sequence[Any], list[str]]:
    """``(kept, dropped ids)``: examples whose text alone exceeds the model's ``max_length`` are left out.

    Does nothing (returns ``examples``) for a model without ``max_length`` or ``answer_tokens``.
    """
    budget = getattr(model, "max_length", None)
    tokens = getattr(model, "answer_tokens", None)
    if not isinstance(budget, int) or not callable(tokens):
        return examples, []

    def count(text: str) -> int:
        return len(tokens(text))

    keep, dropped = [], []
    for i in range(len(examples)):
        ex = examples[i]
        if text_token_count(ex, count, budget) > budget:
            dropped.append(str(ex.id))
        else:
            keep.append(i)
    if not dropped:
        return examples, []
    return Kept(examples, keep), dropped
