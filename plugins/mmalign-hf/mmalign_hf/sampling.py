"""A lean sampling loop for vision-language models whose decoding is plain causal language modelling.

``transformers``' ``generate`` is general: logits processors, stopping criteria, model-specific input
preparation and cache bookkeeping run at every new token. For a small model (or a small batch on a GPU)
that bookkeeping costs more than the forward pass itself. Online DPO and BDHS sample at every training
step, so mmalign decodes through this loop where the family allows it:

- the prompt (images included) goes through the full model **once per prompt**; its KV cache is then
  repeated for the ``n`` samples of that prompt (``generate`` with ``num_return_sequences`` prefills
  every copy, images included);
- later tokens go through the language model alone (the images are in the cache), with explicit
  position ids counted from the first real token, so left padding never shifts positions;
- sampling inverts the cumulative distribution with one uniform draw per row (``multinomial`` and the
  exponential race draw one random number per vocabulary entry, which dominates a small model's step
  on CPU); tokens of probability zero are never returned;
- rows that have stopped are dropped from the batch (and from the cache), so short answers do not pay
  for long ones.

Banned tokens (the image placeholder and other vision tokens) get probability zero. Greedy decoding
gives the same tokens as ``generate`` (tested on every family this is enabled for).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Sequence

import torch

#: Model types whose decoding may skip the multimodal wrapper after the prompt (tested against
#: ``generate`` family by family). Others (e.g. Qwen2-VL, whose mRoPE positions depend on the image
#: grid) use ``generate``.
FAST_DECODE_MODEL_TYPES: frozenset[str] = frozenset({"llava", "llava_next", "idefics3", "smolvlm"})


def _base(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


#: Generation-config settings the lean loop does not implement, with their neutral values: a checkpoint
#: whose generation_config sets one of them decodes through ``generate``, which applies it.
UNSUPPORTED_GENERATION_SETTINGS: dict[str, Any] = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "min_new_tokens": None,
    "min_length": 0,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
}


def _unsupported_settings(base: Any) -> list[str]:
    gen = getattr(base, "generation_config", None)
    if gen is None:
        return []
    out = []
    for key, neutral in UNSUPPORTED_GENERATION_SETTINGS.items():
        value = getattr(gen, key, neutral)
        if value not in (neutral, None) and not (isinstance(value, (list, tuple, dict)) and not value):
            out.append(key)
    return out


def decode_parts(model: Any) -> Optional[tuple[Any, Any, str]]:
    """(decoder, output head, name of the decoder's cache argument) when the lean loop applies, else None."""
    base = _base(model)
    if getattr(base.config, "model_type", None) not in FAST_DECODE_MODEL_TYPES:
        return None
    if _unsupported_settings(base):
        return None
    get_decoder = getattr(base, "get_decoder", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    decoder = get_decoder() if get_decoder is not None else None
    if decoder is None or head is None:
        return None
    params = inspect.signature(decoder.forward).parameters
    cache_arg = "cache" if "cache" in params else "past_key_values" if "past_key_values" in params else None
    if cache_arg is None:
        return None
    return decoder, head, cache_arg


def _choose(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float) -> torch.Tensor:
    if not do_sample or temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    cdf = probs.cumsum(-1)
    u = torch.rand((probs.shape[0], 1), device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    tok = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=probs.shape[-1] - 1)
    # Rounding can put u on the last step of the cdf; never return a token of probability zero.
    zero = probs.gather(1, tok[:, None]).squeeze(1) <= 0
    return torch.where(zero, probs.argmax(-1), tok)


#: Text-model types whose decoder layers :class:`LeanDecoder` runs itself (each tested against the
#: model's own decoder). Others step through the decoder's ``forward`` with a ``DynamicCache``.
LEAN_DECODER_MODEL_TYPES: frozenset[str] = frozenset({"llama", "mistral", "qwen2"})


def _has_hooks(module: torch.nn.Module) -> bool:
    from torch.nn.modules import module as nn_module

    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


class LeanDecoder:
    """One decoding step of a Llama-style decoder, written out, over preallocated KV buffers.

    A ``DynamicCache`` grows by concatenation (every cached key and value is copied at every step) and
    the decoder's ``forward`` builds a 4-D mask and runs its bookkeeping per token; with a small model
    or a small batch that costs more than the step's arithmetic. Here each layer's keys and values
    live in one buffer sized for the whole answer, written in place; the padding mask is built once;
    single-query attention folds the query heads of a key/value group together (no ``repeat_kv``
    copy). Every module of the model (norms, projections, LoRA layers, the MLP, the rotary embedding
    and the family's ``apply_rotary_pos_emb``) is called as is, so the arithmetic is the model's own.

    :meth:`build` returns None where this would not equal the model's decoder: another family, an
    attention implementation other than ``sdpa``/``eager`` (e.g. BDHS's key mask), query/key norms,
    sliding windows shorter than the answer, hooks on any module, or attention dropout in training.
    """

    def __init__(self, decoder: Any, keys: list[torch.Tensor], values: list[torch.Tensor], mask: torch.Tensor,
                 length: int, rotary: Callable[..., Any]) -> None:
        self.decoder, self.keys, self.values, self.mask, self.length = decoder, keys, values, mask, length
        self.rotary = rotary

    @classmethod
    def eligible(cls, decoder: Any, total_length: int) -> Optional[Callable[..., Any]]:
        """The family's ``apply_rotary_pos_emb`` when the lean step equals ``decoder``'s, else None."""
        import importlib

        cfg = getattr(decoder, "config", None)
        if cfg is None or getattr(cfg, "model_type", None) not in LEAN_DECODER_MODEL_TYPES:
            return None
        if getattr(cfg, "_attn_implementation", None) not in (None, "sdpa", "eager"):
            return None
        window = getattr(cfg, "sliding_window", None)
        if window is not None and window < total_length and getattr(cfg, "use_sliding_window", True):
            types = getattr(cfg, "layer_types", None)
            if types is None or any(t != "full_attention" for t in types):
                return None  # a window that would cut into this answer's context
        layers = getattr(decoder, "layers", None)
        if layers is None or not all(hasattr(decoder, a) for a in ("embed_tokens", "norm", "rotary_emb")):
            return None
        if len(layers) != cfg.num_hidden_layers:
            return None
        for layer in layers:
            attn = getattr(layer, "self_attn", None)
            if attn is None or not all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")):
                return None
            if any(hasattr(attn, a) for a in ("q_norm", "k_norm")) or not all(
                hasattr(layer, a) for a in ("input_layernorm", "post_attention_layernorm", "mlp")
            ):
                return None
            if attn.training and getattr(attn, "attention_dropout", 0.0):
                return None
        if _has_hooks(decoder):
            return None
        return getattr(importlib.import_module(type(layers[0].self_attn).__module__), "apply_rotary_pos_emb", None)

    @classmethod
    def build(cls, decoder: Any, cache: Any, attention_mask: torch.Tensor, *, copies: int, max_new_tokens: int) -> Optional["LeanDecoder"]:
        """Buffers from a prefilled ``cache`` of ``B`` rows, repeated ``copies`` times per row, or None."""
        width = attention_mask.shape[1]
        rotary = cls.eligible(decoder, width + max_new_tokens)
        layers = getattr(cache, "layers", None)
        if rotary is None or layers is None or len(layers) != len(decoder.layers):
            return None
        if any(getattr(layer, "keys", None) is None or layer.keys.dim() != 4 or layer.keys.shape[-2] != width for layer in layers):
            return None
        total = width + max_new_tokens
        keys, values = [], []
        for layer in layers:
            b, h, _, d = layer.keys.shape
            for src, out in ((layer.keys, keys), (layer.values, values)):
                buf = src.new_empty((b, copies, h, total, src.shape[-1]))
                buf[:, :, :, :width] = src[:, None]
                out.append(buf.view(b * copies, h, total, src.shape[-1]))
        dtype = keys[0].dtype
        mask = torch.zeros((attention_mask.shape[0], 1, 1, total), dtype=dtype, device=attention_mask.device)
        mask[:, 0, 0, :width].masked_fill_(attention_mask == 0, torch.finfo(dtype).min)
        if copies > 1:
            mask = mask.repeat_interleave(copies, dim=0)
        return cls(decoder, keys, values, mask, width, rotary)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` (rows that stopped leave the batch)."""
        self.keys = [k[keep] for k in self.keys]
        self.values = [v[keep] for v in self.values]
        self.mask = self.mask[keep]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (at ``positions``); return the final hidden state ``[B, 1, H]``."""
        dec = self.decoder
        x = dec.embed_tokens(tokens[:, None])
        cos, sin = dec.rotary_emb(x, positions[:, None])
        at = self.length
        self.length += 1
        n = self.length
        mask = self.mask[..., :n]
        b = x.shape[0]
        for layer, kbuf, vbuf in zip(dec.layers, self.keys, self.values):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            d = attn.head_dim
            q = attn.q_proj(h).view(b, 1, -1, d).transpose(1, 2)
            k = attn.k_proj(h).view(b, 1, -1, d).transpose(1, 2)
            v = attn.v_proj(h).view(b, 1, -1, d).transpose(1, 2)
            q, k = self.rotary(q, k, cos, sin)
            kbuf[:, :, at] = k[:, :, 0]
            vbuf[:, :, at] = v[:, :, 0]
            groups = kbuf.shape[1]
            qg = q.reshape(b, groups, -1, d)  # the query heads of each key/value head together
            w = torch.matmul(qg, kbuf[:, :, :n].transpose(2, 3)) * attn.scaling + mask
            w = torch.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
            o = torch.matmul(w, vbuf[:, :, :n]).reshape(b, 1, -1)
            x = x + attn.o_proj(o)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return dec.norm(x)


@torch.no_grad()
def fast_sample(
    model: Any,
    inputs: dict[str, Any],
    *,
    n: int,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float = 1.0,
    top_p: float = 1.0,
    banned: Sequence[int] = (),
    stop: Sequence[int] = (),
    pad_token_id: int = 0,
    on_select: Optional[Callable[[torch.Tensor], None]] = None,
    lean_decoding: bool = True,
    prefilled: Optional[tuple[Any, torch.Tensor]] = None,
) -> torch.Tensor:
    """New tokens for each of ``n`` samples per prompt, ``[B * n, T]`` (samples of a prompt adjacent).

    ``inputs`` are the family's prompt inputs with **left-padded** ``input_ids`` and ``attention_mask``
    (plus pixel tensors). Positions after a stop token hold ``pad_token_id``; the stop token itself is
    kept, as ``generate`` does. ``on_select(keep)`` is called with the indices of the rows that go on
    whenever stopped rows leave the batch, for callers that hold per-row state of their own (e.g. an
    attention hook's mask). ``prefilled``: ``(cache, last-position logits)`` of the prompts when the caller
    ran them itself (the cache is not modified where the lean decoder applies). ``lean_decoding``: step Llama-style decoders through :class:`LeanDecoder`
    where it applies (False: always through the decoder's ``forward``). Raises ``ValueError`` if the model's family is not enabled (check with
    :func:`decode_parts` first).
    """
    parts = decode_parts(model)
    if parts is None:
        raise ValueError("fast_sample: this model type decodes through generate() (see FAST_DECODE_MODEL_TYPES)")
    decoder, head, cache_arg = parts
    base = _base(model)
    attn = inputs["attention_mask"]
    device = attn.device
    if prefilled is not None:  # the caller ran the prompts already (cache, last-position logits)
        cache, logits = prefilled
    else:
        positions = (attn.long().cumsum(-1) - 1).clamp(min=0)
        out = base(**inputs, position_ids=positions, use_cache=True, logits_to_keep=1)
        cache = out.get("cache", None) if hasattr(out, "get") else None
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        logits = out.logits[:, -1].float()
    nxt = attn.long().sum(-1)
    lean = LeanDecoder.build(decoder, cache, attn, copies=n, max_new_tokens=max_new_tokens) if lean_decoding else None
    if lean is not None:
        cache = None  # its contents live in the lean decoder's buffers now
    if n > 1:
        if cache is not None:
            cache.batch_repeat_interleave(n)
        logits, attn, nxt = (t.repeat_interleave(n, dim=0) for t in (logits, attn, nxt))
    rows = logits.shape[0]
    result = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    alive = torch.arange(rows, device=device)  # original row of each row still decoding
    banned_t = torch.tensor(sorted(set(int(b) for b in banned)), dtype=torch.long, device=device)
    stop_t = torch.tensor(sorted(set(int(s) for s in stop)), dtype=torch.long, device=device)
    for t in range(max_new_tokens):
        if banned_t.numel():
            logits.index_fill_(1, banned_t, float("-inf"))
        tok = _choose(logits, do_sample, temperature, top_p)
        result[alive, t] = tok
        if t == max_new_tokens - 1:
            break
        if stop_t.numel():
            going = ~torch.isin(tok, stop_t)
            if not bool(going.all()):
                if not bool(going.any()):
                    break
                keep = going.nonzero().squeeze(1)
                if lean is not None:
                    lean.select(keep)
                else:
                    cache.batch_select_indices(keep)
                if on_select is not None:
                    on_select(keep)
                alive, tok, attn, nxt = alive[keep], tok[keep], attn[keep], nxt[keep]
        if lean is not None:
            hidden = lean.step(tok, nxt)
        else:
            attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=1)
            hidden = decoder(input_ids=tok[:, None], attention_mask=attn, position_ids=nxt[:, None], use_cache=True,
                             **{cache_arg: cache}).last_hidden_state
        logits = head(hidden[:, -1]).float()
        nxt = nxt + 1
    return result


__all__ = ["FAST_DECODE_MODEL_TYPES", "LEAN_DECODER_MODEL_TYPES", "LeanDecoder", "decode_parts", "fast_sample"]
