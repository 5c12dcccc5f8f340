"""Reusing sampling's prompt pass in the training pass of the same step (online DPO's ``reuse_prompt_pass``).

:meth:`~mmalign_hf.generation.Generation.sample_tokens` with ``keep_prompt_pass`` runs the prompts with
gradients and keeps that pass (its KV cache and last-position logits, with their autograd graph); the next
gradient :meth:`~mmalign_hf.scoring.ResponseScoring.pair_logps` over the same prompts then runs the language
model on the answer tokens only, after the kept cache. Where the kept pass would not equal the training
pass (other weights, dropout, a wrapped model, answer prefixes) nothing is kept or reused.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from mmalign_core.types import GenerationRequest, ImageRef, PreferencePair


@dataclass
class PromptPass:
    """The policy's forward over a batch of prompts during sampling, kept with its autograd graph so the
    training pass of the same step scores the answers after it instead of running the prompts again."""

    model: Any  # the module that ran it
    version: int  # sum of its parameters' versions then (an optimizer step changes it)
    rows: dict[tuple, int]  # (chat template, prompt, image keys) -> row
    keys: list[torch.Tensor]  # per layer [B, kv heads, W, head dim], left-padded
    values: list[torch.Tensor]
    last_logits: torch.Tensor  # [B, V]: each prompt's last position (predicts the first answer token)
    attention_mask: torch.Tensor  # [B, W]
    lengths: torch.Tensor  # [B] prompt tokens per row


def _params_version(module: torch.nn.Module) -> int:
    return sum(p._version for p in module.parameters())


def _dropout_free(module: torch.nn.Module) -> bool:
    """No module of ``module`` drops anything out (then its training and evaluation passes agree)."""
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout) and m.p > 0:
            return False
        for attr in ("attention_dropout", "dropout", "hidden_dropout"):
            value = getattr(m, attr, None)
            if isinstance(value, float) and value > 0:
                return False
    return True


class PromptPassReuse:
    """Keeping and reusing a prompt pass (a part of :class:`~mmalign_hf.model.HFVisionLanguageModel`)."""

    model: Any
    forward_module: Any
    processor: Any
    device: torch.device
    pad_token_id: int

    def _prompt_row_key(self, prompt: str, images: Sequence[ImageRef]) -> tuple:
        return (self.processor.chat_template, prompt, tuple(im.key for im in images))

    def _take_prompt_pass(self, pairs: Sequence[PreferencePair]) -> PromptPass | None:
        """The kept prompt pass if it covers ``pairs`` and is still valid for a training (gradient) pass.

        A gradient pass always takes it out, used or not, so its graph never outlives the step.
        """
        if not torch.is_grad_enabled() or "_prompt_pass" not in self.__dict__:
            return None
        stash = self.__dict__.pop("_prompt_pass")
        if stash.model is not self.model or self.forward_module is not self.model:
            return None
        if _params_version(self.model) != stash.version:  # the weights changed since sampling
            return None
        if any(self._prompt_row_key(p.prompt, p.images) not in stash.rows for p in pairs):
            return None
        return stash

    def _run_prompt_pass(self, reqs: Sequence[GenerationRequest], inputs: dict[str, Any]) -> tuple[Any, torch.Tensor] | None:
        """Prefill for sampling with gradients, kept for this step's training pass (see ``keep_prompt_pass``).

        Returns (cache, last-position logits) for the decoding loop, or None where the kept pass would not
        equal the training pass: a family without prefix sharing, a wrapped (distributed) model, dropout
        anywhere, answer prefixes, or no trainable parameter.
        """
        base = self.base_model()
        if (self.forward_module is not self.model or getattr(base.config, "model_type", None) not in self.PREFIX_SHARING_MODEL_TYPES
                or any(r.answer_prefix for r in reqs) or not any(p.requires_grad for p in self.model.parameters())
                or not _dropout_free(self.model)):
            return None
        attn = inputs["attention_mask"]
        positions = (attn.long().cumsum(-1) - 1).clamp(min=0)
        with torch.enable_grad():  # sampling runs under no_grad; this pass is kept for the training pass
            out = base(**inputs, position_ids=positions, use_cache=True, logits_to_keep=1)
            last = out.logits[:, -1]
        cache = out.get("cache", None) if hasattr(out, "get") else None
        cache = cache if cache is not None else getattr(out, "past_key_values", None)
        layers = getattr(cache, "layers", None)
        if not layers or any(getattr(layer, "keys", None) is None for layer in layers):
            return None
        self.__dict__["_prompt_pass"] = PromptPass(
            model=self.model,
            version=_params_version(self.model),
            rows={self._prompt_row_key(r.prompt, r.images): i for i, r in reversed(list(enumerate(reqs)))},
            keys=[layer.keys for layer in layers],
            values=[layer.values for layer in layers],
            last_logits=last,
            attention_mask=attn,
            lengths=attn.long().sum(-1),
        )
        return cache, last.detach().float().clone()  # decoding fills banned logits in place

    def _logps_after_prompt_pass(self, pairs: Sequence[PreferencePair], blocks: list[tuple[str, list[str]]],
                                 stash: PromptPass) -> tuple[torch.Tensor, torch.Tensor]:
        """Answers scored after the kept prompt pass: the language model runs on the answer tokens only.

        Each answer attends to its prompt's cached keys and values (which carry the prompt pass's graph,
        so gradients reach every parameter as in ``_packed_logps``) and causally to itself; its first
        token is predicted by the kept last-position logits. Sums and counts come block by block.
        """
        b, k = len(pairs), len(blocks)
        idx = torch.tensor([stash.rows[self._prompt_row_key(p.prompt, p.images)] for p in pairs], device=self.device)
        lengths = stash.lengths[idx]
        answers: list[list[int]] = []
        for suffix, block in blocks:
            for i, (p, ans) in enumerate(zip(pairs, block)):
                a_ids = self.answer_ids(ans)
                self.check_length(int(lengths[i]) + len(a_ids), f"sample {p.id}{suffix}")
                answers.append(a_ids)
        width = max(len(a) for a in answers)
        input_ids = torch.full((k * b, width), self.pad_token_id, dtype=torch.long)
        valid = torch.zeros((k * b, width), dtype=torch.bool)
        for r, a_ids in enumerate(answers):
            input_ids[r, : len(a_ids)] = torch.tensor(a_ids)
            valid[r, : len(a_ids)] = True
        input_ids, valid = input_ids.to(self.device), valid.to(self.device)
        from transformers import DynamicCache

        cache = DynamicCache()
        for layer, (keys, values) in enumerate(zip(stash.keys, stash.values)):
            cache.update(keys[idx].repeat(k, 1, 1, 1), values[idx].repeat(k, 1, 1, 1), layer)
        attention_mask = torch.cat([stash.attention_mask[idx].repeat(k, 1), valid.long()], dim=1)
        position_ids = lengths.repeat(k)[:, None] + torch.arange(width, device=self.device)
        base = self.base_model()
        cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        logits = self.forward_module(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                     use_cache=True, **{cache_arg: cache}).logits
        ce = torch.nn.functional.cross_entropy
        # Each answer's first token is predicted by its prompt's last position (kept), token t by position t - 1.
        sums = -ce(stash.last_logits[idx].repeat(k, 1).float(), input_ids[:, 0], reduction="none")
        later = valid[:, 1:]
        rows = later.nonzero(as_tuple=True)[0]
        rest = -ce(logits[:, :-1][later].float(), input_ids[:, 1:][later], reduction="none")
        return sums.index_add(0, rows, rest), valid.sum(-1)
