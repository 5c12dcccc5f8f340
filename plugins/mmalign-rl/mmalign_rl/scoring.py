"""Per-token log-probs (and entropies, values) of responses under a policy, reference or value head.

The model API gives summed log-probs (``pair_logps``); PPO and GRPO need them per token. This module
encodes (prompt + images, response) rows the way the Hugging Face wrapper scores answers (its ``encode``:
the tokens a sampled answer was generated as, then the end-of-sequence token if it stopped there) and runs
the model's forward module. The protocol has no per-token method yet (see docs/rl.md, limitations); the
wrapper's ``encode``/``inputs_to_device`` are used, or its older ``_encode``/``_to_device``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import torch

from mmalign_core.types import GenerationRequest


@dataclass
class TokenScores:
    """``[N, T]`` tensors over each response's tokens (left-aligned, right-padded; ``mask`` marks real tokens)."""

    logps: torch.Tensor
    mask: torch.Tensor
    entropy: Optional[torch.Tensor] = None
    values: Optional[torch.Tensor] = None


def check_scorable(model: Any) -> None:
    """A clear error for a model this module cannot score."""
    missing = [a for a in ("encode", "inputs_to_device") if not hasattr(model, a) and not hasattr(model, "_" + a.replace("inputs_to_device", "to_device"))]
    missing += [] if hasattr(model, "forward_module") else ["forward_module"]
    if missing:
        raise TypeError(f"RL stages need the core's Hugging Face model wrapper (per-token log-probs); {type(model).__name__} lacks {missing}")


def _compact(x: torch.Tensor, resp: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather each row's response positions (contiguous, right-padded) into ``[N, width]``."""
    n = resp.shape[0]
    counts = resp.sum(-1)
    starts = resp.float().argmax(dim=1)
    j = torch.arange(width, device=x.device).unsqueeze(0)
    idx = (starts.unsqueeze(1) + j).clamp(max=resp.shape[1] - 1)
    mask = (j < counts.unsqueeze(1)).to(torch.float32)
    gathered = x.gather(1, idx.view(n, width, *([1] * (x.dim() - 2))).expand(n, width, *x.shape[2:])) if x.dim() > 2 else x.gather(1, idx)
    return gathered, mask


def _keeps_logits(model: Any) -> bool:
    """Whether the model's forward takes ``logits_to_keep``."""
    cached = model.__dict__.get("_rl_logits_to_keep")
    if cached is None:
        import inspect

        module = model.model.get_base_model() if hasattr(model.model, "get_base_model") else model.model
        cached = "logits_to_keep" in inspect.signature(module.forward).parameters
        model.__dict__["_rl_logits_to_keep"] = cached
    return cached


def response_mask(model: Any, responses: Sequence[str], width: int) -> torch.Tensor:
    """``[N, width]`` mask of each response's scored tokens (its tokens, plus the end token if it stopped), without a forward pass."""
    eos = getattr(model, "eos_token_id", None)
    lengths = [len(model.answer_tokens(r)) + (1 if eos is not None and model.answer_ended(r) else 0) for r in responses]
    return (torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).float()


def token_scores(model: Any, requests: Sequence[GenerationRequest], responses: Sequence[str], *, value_head: Any = None,
                 entropy: bool = False) -> TokenScores:
    """Per-token log-probs of ``responses`` given ``requests`` (gradients follow torch's grad mode)."""
    encode = getattr(model, "encode", None) or model._encode
    to_device = getattr(model, "inputs_to_device", None) or model._to_device
    enc = encode([r.prompt for r in requests], [list(r.images) for r in requests], list(responses))
    inputs = to_device(enc.inputs)
    resp = enc.response_mask.to(inputs["input_ids"].device)
    full = resp.shape[1]
    # Logits only from the earliest answer position on (the LM head and softmax skip the prompt and its image tokens).
    lo = max(int(resp.float().argmax(dim=1).min()) - 1, 0) if _keeps_logits(model) else 0
    kwargs = {"logits_to_keep": full - lo} if lo > 0 else {}
    out = model.forward_module(**inputs, use_cache=False, output_hidden_states=value_head is not None, **kwargs)
    logits = out.logits[:, :-1, :].float()  # positions lo .. full-2 predict lo+1 .. full-1
    targets = inputs["input_ids"][:, lo + 1 :]
    rmask = resp[:, lo + 1 :]
    width = int(rmask.sum(-1).max())
    logsm = torch.log_softmax(logits, dim=-1)
    tok = logsm.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    logps, mask = _compact(tok, rmask, width)
    logps = logps * mask
    ent = None
    if entropy:
        with torch.no_grad():
            h = -(logsm.exp() * logsm).sum(-1)
            ent = _compact(h, rmask, width)[0] * mask
    values = None
    if value_head is not None:
        hidden = out.hidden_states[-1][:, lo:-1, :]
        v = value_head(hidden.to(next(value_head.parameters()).dtype)).squeeze(-1).float()
        values = _compact(v, rmask, width)[0] * mask
    return TokenScores(logps=logps, mask=mask, entropy=ent, values=values)


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Eval mode (no dropout) for rollout-time scoring; the previous mode is restored."""
    module = model.module
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


@contextlib.contextmanager
def reference_of(model: Any) -> Iterator[Any]:
    """The reference policy as a scorable model: the adapter-disabled policy under LoRA, else a frozen copy."""
    if getattr(model, "is_peft", False):
        with model.model.disable_adapter():
            yield model
    else:
        raise RuntimeError("reference_of without LoRA needs a frozen copy; use frozen_copy()")


def frozen_copy(model: Any) -> Any:
    """A frozen copy of a full-weights policy (same wrapper, own weights), used as the reference."""
    import copy

    ref = copy.copy(model)
    ref.model = copy.deepcopy(model.model)
    ref.model.eval()
    for p in ref.model.parameters():
        p.requires_grad_(False)
    ref.forward_module = ref.model
    return ref


__all__ = ["TokenScores", "check_scorable", "eval_mode", "frozen_copy", "reference_of", "token_scores"]
