"""Hiding image tokens from the language model of a transformers vision-language model (BDHS_attn).

The technique: transformers 5 routes every attention call of a model through the ``AttentionInterface``
under the name in ``config._attn_implementation``. :func:`key_masked` registers one more implementation,
``mmalign_bdhs_keymask``, which takes the 4-D attention mask the model built, sets the columns of the hidden
image positions to the dtype's minimum for every query (so no layer and no head can read those keys), and
calls the model's own implementation (``sdpa``, or the model's ``eager`` function; flash kernels cannot
take a dense mask and run as ``sdpa``). Only the **language model's** sub-config is switched (a composite
config accepts a per-sub-config implementation), so the vision tower still sees the whole image; the
input ids, the 2-D padding mask and therefore the position ids (RoPE, Qwen2-VL's mRoPE) are untouched.
With a KV cache key indices do not move, so the same key mask applies at prefill and at every decoding
step: ``hidden`` is a ``[batch, prompt_width]`` boolean tensor and later key positions are never hidden.

A mask function is registered under the same name (``eager_mask``: a materialised additive mask, which
every implementation accepts), because transformers builds no mask at all for an implementation it has
no mask function for.

:func:`zeroed_embeddings` is the ablation the paper distinguishes from BDHS_attn: the hidden positions'
input embeddings are zeroed at prefill (they still occupy positions and are attended to).
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch

IMPLEMENTATION = "mmalign_bdhs_keymask"


@dataclass
class _Active:
    hidden: Optional[torch.Tensor]  # [B, W] bool; None: nothing hidden
    inner: str  # the language model's own implementation


_ACTIVE: contextvars.ContextVar[Optional[_Active]] = contextvars.ContextVar("mmalign_bdhs_keymask", default=None)
_registered = False


def _inner_function(name: str, module: torch.nn.Module) -> Callable[..., Any]:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if name == "eager":
        fn = getattr(importlib.import_module(type(module).__module__), "eager_attention_forward", None)
        if fn is None:  # pragma: no cover - every transformers 5 attention module's file defines it
            raise RuntimeError(f"{type(module).__module__} has no eager_attention_forward")
        return fn
    return ALL_ATTENTION_FUNCTIONS[name]


def _key_mask(hidden: torch.Tensor, kv_length: int, device: torch.device) -> torch.Tensor:
    h = hidden.to(device)
    if h.shape[1] >= kv_length:
        return h[:, :kv_length]
    pad = torch.zeros(h.shape[0], kv_length - h.shape[1], dtype=torch.bool, device=device)
    return torch.cat([h, pad], dim=1)


def keymask_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: Optional[torch.Tensor], *args: Any, **kwargs: Any) -> Any:
    """The registered attention function: hide the active key positions, then run the model's own attention."""
    state = _ACTIVE.get()
    if state is None:
        raise RuntimeError(f"attention implementation {IMPLEMENTATION!r} used outside mmalign_bdhs.masking.key_masked()")
    if state.hidden is not None:
        batch, kv_length = query.shape[0], key.shape[-2]
        h = _key_mask(state.hidden, kv_length, key.device)  # [B, K]
        if h.shape[0] != batch:
            raise RuntimeError(f"key mask has {h.shape[0]} rows but the attention batch has {batch}")
        if attention_mask is None:
            attention_mask = torch.zeros(batch, 1, query.shape[-2], kv_length, dtype=query.dtype, device=query.device)
        if attention_mask.dtype == torch.bool:
            attention_mask = attention_mask & ~h[:, None, None, :]
        else:
            fill = torch.finfo(attention_mask.dtype).min
            attention_mask = attention_mask.masked_fill(h[:, None, None, :], fill)
    return _inner_function(state.inner, module)(module, query, key, value, attention_mask, *args, **kwargs)


def register() -> None:
    """Register the key-masking attention (and its mask function) with transformers (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(IMPLEMENTATION, keymask_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)
    _registered = True


def base_model(model: Any) -> Any:
    """The transformers ``PreTrainedModel`` under an mmalign model wrapper and/or a peft wrapper."""
    m = getattr(model, "model", model) if not hasattr(model, "set_attn_implementation") else model
    if hasattr(m, "get_base_model"):
        m = m.get_base_model()
    return m


def text_config_key(model: Any) -> Optional[str]:
    """The sub-config name of the language model (``text_config`` for every supported family), or None."""
    cfg = model.config
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for key in getattr(cfg, "sub_configs", {}) or {}:
        if getattr(cfg, key, None) is text:
            return key
    return None


@contextlib.contextmanager
def key_masked(model: Any) -> Iterator[Callable[[Optional[torch.Tensor]], None]]:
    """Switch ``model``'s language model to the key-masking attention while the block runs.

    Yields ``set_hidden(mask)``: call it with a ``[batch, width]`` boolean tensor (True: hide that
    position as a key) before each forward pass or ``generate`` call, or with None to hide nothing.
    The model's own implementation is restored on exit, also after an error.
    """
    register()
    base = base_model(model)
    key = text_config_key(base)
    text_cfg = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    original = text_cfg._attn_implementation or "eager"
    if original == IMPLEMENTATION:
        raise RuntimeError("key_masked() does not nest")
    inner = original if original in ("eager", "sdpa") else "sdpa"  # flash kernels take no dense mask
    state = _Active(hidden=None, inner=inner)
    token = _ACTIVE.set(state)
    target = {key: IMPLEMENTATION} if key is not None else IMPLEMENTATION
    restore = {key: original} if key is not None else original
    base.set_attn_implementation(target)
    try:
        def set_hidden(mask: Optional[torch.Tensor]) -> None:
            state.hidden = None if mask is None else mask.to(torch.bool)

        yield set_hidden
    finally:
        base.set_attn_implementation(restore)
        _ACTIVE.reset(token)


@contextlib.contextmanager
def zeroed_embeddings(model: Any) -> Iterator[Callable[[Optional[torch.Tensor]], None]]:
    """Ablation: zero the input embeddings of the hidden positions at prefill (positions and keys remain).

    Yields ``set_hidden(mask)`` like :func:`key_masked`. A forward pre-hook on the decoder
    (``get_decoder()``) rewrites ``inputs_embeds`` when its length equals the mask's width (the prefill).
    """
    base = base_model(model)
    decoder = base.get_decoder()
    state: dict[str, Optional[torch.Tensor]] = {"hidden": None}

    def hook(module: Any, args: tuple, kwargs: dict) -> Any:
        hidden = state["hidden"]
        emb = kwargs.get("inputs_embeds")
        if hidden is None or emb is None or emb.shape[1] != hidden.shape[1]:
            return None
        keep = (~hidden.to(emb.device))[:, :, None].to(emb.dtype)
        kwargs = dict(kwargs)
        kwargs["inputs_embeds"] = emb * keep
        return args, kwargs

    handle = decoder.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        def set_hidden(mask: Optional[torch.Tensor]) -> None:
            state["hidden"] = None if mask is None else mask.to(torch.bool)

        yield set_hidden
    finally:
        handle.remove()


@contextlib.contextmanager
def restricted(model: Any, method: Optional[str]) -> Iterator[Callable[[Optional[torch.Tensor]], None]]:
    """``key_masked`` (method ``"attention"``), ``zeroed_embeddings`` (``"zero-embeddings"``) or nothing (None)."""
    if method == "attention":
        with key_masked(model) as set_hidden:
            yield set_hidden
    elif method == "zero-embeddings":
        with zeroed_embeddings(model) as set_hidden:
            yield set_hidden
    elif method is None:
        yield lambda mask: None
    else:
        raise ValueError(f"unknown restriction method {method!r}")
