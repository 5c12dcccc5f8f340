"""Generation: answers for requests, through mmalign's lean loop (:mod:`mmalign_hf.sampling`) where the family
allows it, else through ``transformers``' ``generate``.

Public methods a family adapter may override: :meth:`Generation.generation_inputs`,
:meth:`Generation.banned_token_ids` and :meth:`Generation.stop_ids`.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from mmalign_core.types import GenerationRequest

from .sampling import decode_parts, fast_sample


class Generation:
    """Sampling and greedy decoding (a part of :class:`~mmalign_hf.model.HFVisionLanguageModel`)."""

    model: Any
    image_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int

    @torch.no_grad()
    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        batch_size: int = 16,
    ) -> list[str]:
        """One answer text per request, in evaluation mode."""
        was_training = self.model.training
        self.model.eval()
        results: list[str] = []
        try:
            for s in range(0, len(requests), batch_size):
                results.extend(self._generate_batch(requests[s : s + batch_size], max_new_tokens, do_sample, temperature, top_p))
        finally:
            self.model.train(was_training)
        return results

    def _generate_batch(self, reqs: Sequence[GenerationRequest], max_new_tokens: int, do_sample: bool, temperature: float, top_p: float) -> list[str]:
        new = self.sample_tokens(reqs, n=1, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p)
        return self.texts_from_samples(new, remember=False)

    #: Decode with mmalign's lean loop (:mod:`mmalign_hf.sampling`) where the family allows it;
    #: False: always through ``generate``.
    fast_decoding: bool = True

    def banned_token_ids(self) -> list[int]:
        """Tokens generation must never emit (here the image placeholder; a family adds its other vision tokens)."""
        return [int(self.image_token_id)] if self.image_token_id is not None else []

    def stop_ids(self) -> list[int]:
        """Tokens that end a sampled answer."""
        return [int(self.eos_token_id)] if self.eos_token_id is not None else []

    def generation_inputs(self, reqs: Sequence[GenerationRequest]) -> dict[str, Any]:
        """Left-padded prompt (+ answer prefix) ids, attention mask, image tensors and the family's
        :meth:`extra_token_inputs`, on the device."""
        prompt_ids, image_inputs = self.prompt_batch([r.prompt for r in reqs], [r.images for r in reqs])
        rows = [p + (self.answer_ids(r.answer_prefix, add_eos=False) if r.answer_prefix else []) for p, r in zip(prompt_ids, reqs)]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding
            input_ids[i, width - len(r) :] = torch.tensor(r)
            attn[i, width - len(r) :] = 1
        extra = self.extra_token_inputs(input_ids, attn, None)
        return self.inputs_to_device({"input_ids": input_ids, "attention_mask": attn, **image_inputs, **extra})

    @torch.no_grad()
    def sample_tokens(self, reqs: Sequence[GenerationRequest], *, n: int, max_new_tokens: int, do_sample: bool,
                      temperature: float = 1.0, top_p: float = 1.0, keep_prompt_pass: bool = False) -> torch.Tensor:
        """New token ids, ``[len(reqs) * n, T]`` (the ``n`` samples of a request adjacent), padded after a stop.

        Sampling is pure temperature / nucleus sampling (no top-k); greedy decoding (``do_sample``
        False) returns the same tokens ``generate`` does. The lean loop of
        :mod:`~mmalign_hf.sampling` runs where the family allows it, ``generate`` elsewhere.

        ``keep_prompt_pass``: run the prompts with gradients and keep that pass until the next gradient
        :meth:`pair_logps` (which then scores the answers after it) or the next sampling, whichever comes
        first; ignored where the kept pass would not equal the training pass (see ``_run_prompt_pass``).
        """
        inputs = self.generation_inputs(reqs)
        width = inputs["input_ids"].shape[1]
        banned, stop = self.banned_token_ids(), self.stop_ids()
        self.__dict__.pop("_prompt_pass", None)  # a kept pass lives until the next sampling at most
        if self.fast_decoding and decode_parts(self.model) is not None:
            prefilled = self._run_prompt_pass(reqs, inputs) if keep_prompt_pass else None
            return fast_sample(self.model, inputs, n=n, max_new_tokens=max_new_tokens, do_sample=do_sample,
                               temperature=temperature, top_p=top_p, banned=banned, stop=stop, pad_token_id=self.pad_token_id,
                               prefilled=prefilled)
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, num_return_sequences=n,
                                      pad_token_id=self.pad_token_id, eos_token_id=stop or None, use_cache=True)
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if banned:
            kwargs["bad_words_ids"] = [[t] for t in banned]
        return self.model.generate(**inputs, **kwargs)[:, width:]
