"""Scoring: sums of response-token log-probs for pairs, SFT examples and continuations.

A batch of pairs goes through one forward pass. Each pair's prompt is processed once; where the family
allows, its answers share one copy of the prompt (:mod:`mmalign_hf.prefix_sharing`) or are scored after
sampling's kept prompt pass (:mod:`mmalign_hf.prompt_pass`); elsewhere the answer blocks are tiled and the
vision tower encodes the images of one block only (:meth:`ResponseScoring._shared_vision`).
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator, Sequence

import torch

from mmalign_core.protocols import PairLogps
from mmalign_core.types import GenerationRequest, PreferencePair, SFTExample

from .encoding import EncodedBatch


def _tile(out: Any, copies: int) -> Any:
    """Repeat every tensor of a (nested) model output ``copies`` times along dim 0."""
    if isinstance(out, torch.Tensor):
        return torch.cat([out] * copies)
    if isinstance(out, (list, tuple)) and not hasattr(out, "keys"):
        return type(out)(_tile(o, copies) for o in out)
    if hasattr(out, "keys"):  # ModelOutput / dict
        for key in list(out.keys()):
            out[key] = _tile(out[key], copies)
        return out
    return out


def _token_logps(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(target) where ``mask`` is set, 0 elsewhere (shape of ``targets``).

    Only the masked positions' rows of ``logits`` enter the softmax, through ``cross_entropy``, whose
    log-softmax and its backward are one fused kernel each: a gather minus ``logsumexp`` over every
    position costs several passes over the whole ``[.., V]`` block, forward and backward.
    """
    out = torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)
    where = mask.nonzero(as_tuple=True)
    if where[0].numel():
        picked = logits[where]  # [M, V]
        out = out.index_put(where, -torch.nn.functional.cross_entropy(picked.float(), targets[where], reduction="none"))
    return out


class ResponseScoring:
    """Log-prob sums over answer tokens (a part of :class:`~mmalign_hf.model.HFVisionLanguageModel`)."""

    model: Any
    forward_module: Any
    device: torch.device

    def _keeps_logits(self) -> bool:
        """Whether the model's forward takes ``logits_to_keep`` (then only answer positions get logits)."""
        cached = self.__dict__.get("_logits_to_keep_ok")
        if cached is None:
            cached = "logits_to_keep" in inspect.signature(self.base_model().forward).parameters
            self.__dict__["_logits_to_keep_ok"] = cached
        return cached

    def _sequence_logps(self, enc: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum of log-probs over response tokens, and the number of response tokens, per row.

        Rows are right-padded, so every answer token lies at or after the earliest answer start ``s`` of
        the batch: logits are computed only from position ``s - 1`` on (the output head and the softmax
        over the vocabulary are skipped on the prompt, image tokens included).
        """
        inputs = self.inputs_to_device(enc.inputs)
        resp = enc.response_mask
        width = resp.shape[1]
        starts = resp.float().argmax(dim=1)  # first answer token per row (rows without one: 0)
        lo = max(int(starts.min()) - 1, 0) if self._keeps_logits() and bool(resp.any(dim=1).all()) else 0
        kwargs = {"logits_to_keep": width - lo} if lo > 0 else {}
        out = self.forward_module(**inputs, use_cache=False, **kwargs)
        logits = out.logits[:, :-1, :]  # positions lo .. width-2 predict lo+1 .. width-1
        targets = inputs["input_ids"][:, lo + 1 :]
        mask = resp[:, lo + 1 :].to(self.device)
        logp = _token_logps(logits, targets, mask)
        return logp.sum(-1), mask.sum(-1)

    def _masked_token_logps(self, enc: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position answer-token log-probs (0 elsewhere) and the answer mask, both ``[N, T-1]``."""
        inputs = self.inputs_to_device(enc.inputs)
        out = self.forward_module(**inputs, use_cache=False)
        targets = inputs["input_ids"][:, 1:]
        mask = enc.response_mask[:, 1:].to(self.device)
        return _token_logps(out.logits[:, :-1, :], targets, mask), mask

    def pair_logps(self, pairs: Sequence[PreferencePair], *, with_rejected: bool = True, token_logps: bool = False) -> PairLogps:
        """Chosen/rejected (and extra rejected) log-prob sums for a batch of pairs, with gradients.

        All sequences of the batch go through one forward pass. Each pair's prompt is processed
        once and its images are encoded once (see :meth:`_shared_vision`); chosen, rejected and
        extra rejected answers reuse them. With ``token_logps`` the per-token log-probs of chosen and
        rejected come too (``PairLogps.chosen_token_logps``); every sequence is then scored on its own
        (no prefix sharing), as :meth:`_encode_unshared` does.
        """
        if token_logps:
            return self._pair_token_logps(pairs, with_rejected)
        b = len(pairs)
        n_extra = max((len(p.extra_rejected) for p in pairs), default=0) if with_rejected else 0
        if n_extra and any(len(p.extra_rejected) != n_extra for p in pairs):
            raise ValueError("every pair of a batch must carry the same number of extra rejected answers")
        blocks: list[tuple[str, list[str]]] = [("", [p.chosen for p in pairs])]
        if with_rejected:
            blocks.append(("/rejected", [p.rejected for p in pairs]))
            blocks += [(f"/extra{k}", [p.extra_rejected[k] for p in pairs]) for k in range(n_extra)]
        if any(p.rejected_images is not None for p in pairs):
            enc = self._encode_unshared(pairs, blocks)
            sums, counts = self._sequence_logps(enc)
        elif self._can_share_prefix(len(blocks)):
            stash = self._take_prompt_pass(pairs)
            if stash is not None:
                sums, counts = self._logps_after_prompt_pass(pairs, blocks, stash)
            else:
                sums, counts = self._packed_logps(pairs, blocks)
        else:
            prompt_ids, image_inputs = self.prompt_batch([p.prompt for p in pairs], [p.images for p in pairs])
            k = len(blocks)
            rows, resp = [], []
            for suffix, answers in blocks:
                for p, p_ids, ans in zip(pairs, prompt_ids, answers):
                    a_ids = self.answer_ids(ans)
                    self.check_length(len(p_ids) + len(a_ids), f"sample {p.id}{suffix}")
                    rows.append(p_ids + a_ids)
                    resp.append([False] * len(p_ids) + [True] * len(a_ids))
            tiled = {name: torch.cat([v] * k) if isinstance(v, torch.Tensor) else v for name, v in image_inputs.items()}
            enc = self.pad(rows, resp, tiled)
            with self._shared_vision(k if image_inputs else 1):
                sums, counts = self._sequence_logps(enc)
        chunks = list(sums.split(b)); cchunks = list(counts.split(b))
        return PairLogps(
            chosen=chunks[0],
            rejected=chunks[1] if with_rejected else None,
            chosen_tokens=cchunks[0],
            rejected_tokens=cchunks[1] if with_rejected else None,
            extra_rejected=chunks[2:],
            extra_rejected_tokens=cchunks[2:],
        )

    def _pair_token_logps(self, pairs: Sequence[PreferencePair], with_rejected: bool) -> PairLogps:
        """Sums, counts and left-aligned per-token log-probs of chosen (and rejected) answers."""
        b = len(pairs)
        blocks: list[tuple[str, list[str]]] = [("", [p.chosen for p in pairs])]
        if with_rejected:
            blocks.append(("/rejected", [p.rejected for p in pairs]))
        logp, mask = self._masked_token_logps(self._encode_unshared(pairs, blocks))
        counts = mask.sum(-1)
        width = max(int(counts.max()), 1) if counts.numel() else 1
        rows, _ = mask.nonzero(as_tuple=True)
        cols = mask.long().cumsum(-1)[mask] - 1  # an answer token's index within its answer
        tokens = torch.zeros((mask.shape[0], width), dtype=logp.dtype, device=logp.device).index_put((rows, cols), logp[mask])
        sums = logp.sum(-1)
        return PairLogps(
            chosen=sums[:b], rejected=sums[b:] if with_rejected else None,
            chosen_tokens=counts[:b], rejected_tokens=counts[b:] if with_rejected else None,
            chosen_token_logps=tokens[:b], rejected_token_logps=tokens[b:] if with_rejected else None,
        )

    def _encode_unshared(self, pairs: Sequence[PreferencePair], blocks: list[tuple[str, list[str]]]) -> EncodedBatch:
        """Every sequence processed on its own (pairs whose rejected side has other images)."""
        prompts, images, answers, ids = [], [], [], []
        for j, (suffix, block) in enumerate(blocks):
            for p, ans in zip(pairs, block):
                prompts.append(p.prompt)
                use_rej = suffix == "/rejected" and p.rejected_images is not None
                images.append(p.rejected_images if use_rej else p.images)
                answers.append(ans)
                ids.append(f"{p.id}{suffix}")
        return self.encode(prompts, images, answers, ids)

    #: Model types whose vision tower takes images stacked along dim 0 (verified by tests), so a
    #: tiled batch can be encoded from its first copy. Family adapters may extend this.
    SHARED_VISION_MODEL_TYPES: frozenset[str] = frozenset({"llava"})

    def _vision_tower(self) -> Any:
        base = self.base_model()
        if getattr(base.config, "model_type", None) not in self.SHARED_VISION_MODEL_TYPES:
            return None
        inner = getattr(base, "model", base)
        return getattr(inner, "vision_tower", None)

    @contextlib.contextmanager
    def _shared_vision(self, copies: int) -> Iterator[None]:
        """While active, the vision tower encodes the first 1/``copies`` of its input and tiles the result.

        The batch then holds ``copies`` identical blocks of images (one per answer block), so this
        equals encoding every copy, at 1/``copies`` of the cost; gradients to a trainable tower
        add up over the copies exactly as before.
        """
        tower = self._vision_tower() if copies > 1 else None
        if tower is None:
            yield
            return
        original = tower.forward

        def forward(pixel_values: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            n = pixel_values.shape[0]
            if n % copies:
                return original(pixel_values, *args, **kwargs)
            return _tile(original(pixel_values[: n // copies], *args, **kwargs), copies)

        tower.forward = forward
        try:
            yield
        finally:
            del tower.forward  # back to the class's method

    def sft_logps(self, examples: Sequence[SFTExample]) -> PairLogps:
        """Response log-prob sums of SFT examples, with gradients."""
        enc = self.encode(
            [e.prompt for e in examples], [e.images for e in examples], [e.response for e in examples], [e.id for e in examples]
        )
        sums, counts = self._sequence_logps(enc)
        return PairLogps(chosen=sums, rejected=None, chosen_tokens=counts, rejected_tokens=None)

    @torch.no_grad()
    def continuation_logprobs(
        self, requests: Sequence[GenerationRequest], continuations: Sequence[str], *, batch_size: int = 32
    ) -> list[float]:
        """log p(continuation | prompt, answer prefix) per request, in evaluation mode."""
        was_training = self.model.training
        self.model.eval()
        out: list[float] = []
        try:
            for s in range(0, len(requests), batch_size):
                reqs = requests[s : s + batch_size]
                conts = continuations[s : s + batch_size]
                enc = self.encode(
                    [r.prompt for r in reqs], [r.images for r in reqs], [r.answer_prefix + c for r, c in zip(reqs, conts)]
                )
                if any(r.answer_prefix for r in reqs):
                    self._mask_prefixes(enc, [r.answer_prefix for r in reqs])
                sums, _ = self._sequence_logps(enc)
                out.extend(sums.tolist())
        finally:
            self.model.train(was_training)
        return out

    def _mask_prefixes(self, enc: EncodedBatch, prefixes: Sequence[str]) -> None:
        for i, pre in enumerate(prefixes):
            if not pre:
                continue
            n = len(self.answer_ids(pre, add_eos=False))
            idx = enc.response_mask[i].nonzero().flatten()[:n]
            enc.response_mask[i, idx] = False
