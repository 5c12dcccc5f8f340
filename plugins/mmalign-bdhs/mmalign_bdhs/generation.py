"""Batched greedy continuation with restricted image access, on transformers models behind mmalign's HF engine.

Works with :class:`mmalign_hf.model.HFVisionLanguageModel` and its family subclasses
(``mmalign_hf``): prompts go through the model's own ``prompt_batch`` (chat template, processor,
per-family image handling), assistant-turn prefixes through ``answer_ids``, family companions (Qwen2-VL
``mm_token_type_ids``, PaliGemma ``token_type_ids``) through ``extra_token_inputs``, and the vision special
tokens are never generated. Each row may hide some of its image-token positions (``Row.hide``), see
:mod:`mmalign_bdhs.masking`; rows are left-padded, so hidden positions are found in the padded ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from mmalign_core.types import ImageRef

from .masking import base_model, restricted
from .text import cut_at_stop


@dataclass
class Row:
    """One sequence to continue.

    ``hide(k)`` returns a boolean vector over the row's ``k`` image tokens (True: hidden from the language
    model); None hides nothing. ``prefix`` is text already written in the assistant turn.
    """

    prompt: str
    images: list[ImageRef]
    prefix: str = ""
    hide: Optional[Callable[[int], np.ndarray]] = None
    tag: Any = None


class UnsupportedModel(TypeError):
    """The model is not a transformers model behind mmalign's HF engine."""


def check_model(model: Any) -> None:
    missing = [a for a in ("model", "tokenizer", "prompt_batch", "answer_ids", "image_token_id") if not hasattr(model, a)]
    if missing:
        raise UnsupportedModel(
            f"BDHS generation needs a transformers vision-language model loaded by mmalign's HF engine "
            f"(tiny-llava, hf-vlm); {type(model).__name__} lacks {', '.join(missing)}"
        )


_STOP_CACHE: dict[tuple[int, tuple[str, ...]], torch.Tensor] = {}


def stop_token_ids(tokenizer: Any, stop: Sequence[str]) -> torch.Tensor:
    """Ids of every token whose text contains a stop string (cached per tokenizer)."""
    key = (id(tokenizer), tuple(stop))
    if key not in _STOP_CACHE:
        vocab = len(tokenizer)
        texts = tokenizer.batch_decode([[i] for i in range(vocab)], skip_special_tokens=False)
        ids = [i for i, t in enumerate(texts) if any(s in t for s in stop)]
        _STOP_CACHE[key] = torch.tensor(ids, dtype=torch.long)
    return _STOP_CACHE[key]


def _stopping(ids: torch.Tensor) -> Any:
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnTokens(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            return torch.isin(input_ids[:, -1], ids.to(input_ids.device))

    return StoppingCriteriaList([StopOnTokens()])


def _eos_ids(model: Any) -> list[int]:
    ids = list(getattr(model, "stop_token_ids", None) or [])
    if not ids and getattr(model, "eos_token_id", None) is not None:
        ids = [int(model.eos_token_id)]
    return ids


def _banned(model: Any) -> list[list[int]]:
    ids = list(getattr(model, "vision_token_ids", None) or [])
    if not ids and model.image_token_id is not None:
        ids = [int(model.image_token_id)]
    return [[int(t)] for t in ids]


def _batch_inputs(model: Any, rows: Sequence[Row]) -> tuple[dict[str, Any], torch.Tensor, list[list[int]], int, list[tuple[int, int]]]:
    """Left-padded inputs, the hidden-position mask, each row's prefix ids, the width, and per row
    (image tokens, hidden image tokens)."""
    prompt_ids, image_inputs = model.prompt_batch([r.prompt for r in rows], [r.images for r in rows])
    prefix_ids = [model.answer_ids(r.prefix, add_eos=False) if r.prefix else [] for r in rows]
    seqs = [p + a for p, a in zip(prompt_ids, prefix_ids)]
    width = max(len(s) for s in seqs)
    pad = model.pad_token_id
    input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    hidden = torch.zeros((len(seqs), width), dtype=torch.bool)
    counts: list[tuple[int, int]] = []
    for i, (s, r) in enumerate(zip(seqs, rows)):
        off = width - len(s)
        input_ids[i, off:] = torch.tensor(s)
        attn[i, off:] = 1
        pos = (input_ids[i] == model.image_token_id).nonzero().flatten()
        pos = pos[pos >= off]
        n_hidden = 0
        if r.hide is not None:
            vec = np.asarray(r.hide(len(pos)), dtype=bool)
            if vec.shape != (len(pos),):
                raise ValueError(f"hide({len(pos)}) returned shape {vec.shape}")
            hidden[i, pos[torch.from_numpy(vec)]] = True
            n_hidden = int(vec.sum())
        counts.append((len(pos), n_hidden))
    extra = model.extra_token_inputs(input_ids, attn, None)
    inputs = model.inputs_to_device({"input_ids": input_ids, "attention_mask": attn, **image_inputs, **extra})
    return inputs, hidden, prefix_ids, width, counts


def _decode(tokenizer: Any, prefix_ids: list[int], new_ids: list[int]) -> str:
    if not prefix_ids:
        return tokenizer.decode(new_ids, skip_special_tokens=True)
    pre = tokenizer.decode(prefix_ids, skip_special_tokens=True)
    full = tokenizer.decode(prefix_ids + new_ids, skip_special_tokens=True)
    if full.startswith(pre):
        return full[len(pre):]
    return tokenizer.decode(new_ids, skip_special_tokens=True)  # pragma: no cover - tokenizers that rewrite the prefix


@torch.no_grad()
def generate_rows(
    model: Any,
    rows: Sequence[Row],
    *,
    method: Optional[str] = "attention",
    max_new_tokens: int = 128,
    stop: Optional[Sequence[str]] = None,
    batch_size: int = 64,
    return_counts: bool = False,
) -> list[str] | tuple[list[str], list[tuple[int, int]]]:
    """Greedy continuation of every row; returns the generated text only (not the prefix), cut after the
    first stop string when ``stop`` is given (generation of a row also ends at a token containing one).

    ``method``: how hidden positions are hidden: ``"attention"`` (key mask, BDHS_attn),
    ``"zero-embeddings"`` (ablation) or None (rows' ``hide`` ignored). ``return_counts`` also returns,
    per row, (image tokens, hidden image tokens).
    """
    check_model(model)
    if not rows:
        return ([], []) if return_counts else []
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].prompt) + len(rows[i].prefix))
    out: list[str] = [""] * len(rows)
    counts: list[tuple[int, int]] = [(0, 0)] * len(rows)
    hf = model.model
    was_training = hf.training
    hf.eval()
    tok = model.tokenizer
    stops = stop_token_ids(tok, stop) if stop else None
    eos = _eos_ids(model)
    from mmalign_hf.sampling import decode_parts, fast_sample

    fast = getattr(model, "fast_decoding", True) and decode_parts(hf) is not None
    try:
        with restricted(model, method) as set_hidden:
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                chunk = [rows[i] for i in idx]
                inputs, hidden, prefix_ids, width, chunk_counts = _batch_inputs(model, chunk)
                set_hidden(hidden)
                kwargs: dict[str, Any] = dict(
                    max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                    pad_token_id=model.pad_token_id, eos_token_id=eos or None,
                )
                banned = _banned(model)
                if banned:
                    kwargs["bad_words_ids"] = banned
                if stops is not None and len(stops):
                    kwargs["stopping_criteria"] = _stopping(stops)
                if fast:
                    # mmalign's lean loop (shared with online sampling); the hidden-key mask follows the rows
                    # that are still decoding.
                    state = {"hidden": hidden}

                    def follow(keep: torch.Tensor) -> None:
                        state["hidden"] = state["hidden"][keep.to(state["hidden"].device)]
                        set_hidden(state["hidden"])

                    stop_ids = list(eos) + ([int(t) for t in stops.tolist()] if stops is not None else [])
                    gen = fast_sample(hf, inputs, n=1, max_new_tokens=max_new_tokens, do_sample=False,
                                      banned=[b[0] for b in banned], stop=stop_ids, pad_token_id=model.pad_token_id,
                                      on_select=follow)
                else:
                    gen = hf.generate(**inputs, **kwargs)[:, width:]
                for j, i in enumerate(idx):
                    new = gen[j].tolist()
                    text = _decode(tok, prefix_ids[j], new)
                    if stop:
                        text = cut_at_stop(text, stop)
                    out[i] = text
                    counts[i] = chunk_counts[j]
                set_hidden(None)
    finally:
        hf.train(was_training)
    return (out, counts) if return_counts else out


def first_token_logits(model: Any, rows: Sequence[Row], *, method: Optional[str] = "attention") -> torch.Tensor:
    """Next-token logits after each row's prompt+prefix, under the rows' restrictions (for tests and probes)."""
    check_model(model)
    hf = model.model
    was_training = hf.training
    hf.eval()
    try:
        with torch.no_grad(), restricted(model, method) as set_hidden:
            inputs, hidden, _, _, _ = _batch_inputs(model, rows)
            set_hidden(hidden)
            logits = base_model(model)(**inputs, use_cache=False).logits[:, -1].float()
    finally:
        hf.train(was_training)
    return logits
