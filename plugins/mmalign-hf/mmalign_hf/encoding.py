"""Tokenisation for :class:`~mmalign_hf.model.HFVisionLanguageModel`: prompts through the processor, answers
through the tokenizer, both cached, and the padded batches every scoring path feeds the model.

Layout of a training sequence::

    [prompt tokens from the processor (image tokens expanded)] [answer lead] [answer tokens] [eos]

The prompt is rendered by the processor's chat template with the generation prompt, so it is by
construction a prefix of the full conversation; answer tokens are tokenized on their own, which keeps
the prompt/answer boundary exact.

Public methods a family adapter may override (see ``mmalign_hf.family``): :meth:`format_prompt`,
:meth:`prompt_batch`, :meth:`encode`, :meth:`check_length` and :meth:`extra_token_inputs`.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from mmalign_core.types import ImageRef


class SequenceTooLong(ValueError):
    """A sample does not fit the length budget; it is never truncated through its image tokens."""


@dataclass
class EncodedBatch:
    """A right-padded batch of (prompt, answer) sequences, as :meth:`PromptEncoding.encode` returns it."""

    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask, image tensors and per-token companions
    response_mask: torch.Tensor  # [N, T] bool, True on answer tokens (incl. eos)


class _OpenAnswer(tuple):
    """Token ids of a sampled answer that stopped at the token limit: scored without an end-of-sequence token."""


def _load_images(refs: Sequence[ImageRef]) -> list:
    return [r.load() for r in refs]


class PromptEncoding:
    """Prompt processing, answer tokenisation and padding (a part of :class:`~mmalign_hf.model.HFVisionLanguageModel`)."""

    processor: Any
    tokenizer: Any
    max_length: int | None
    eos_token_id: int | None
    pad_token_id: int

    #: Text the chat template puts between the generation prompt and the answer (a family's load check
    #: reads it from the template); every answer is tokenized after it.
    answer_lead: str = ""

    def format_prompt(self, prompt: str, n_images: int) -> str:
        """The chat-templated user turn followed by the generation prompt."""
        content: list[dict[str, str]] = [{"type": "image"} for _ in range(n_images)]
        content.append({"type": "text", "text": prompt})
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    #: Processed prompt batches kept for reuse (the policy, the reference and online sampling of one
    #: step process the same prompts); only batches whose images have stable keys are kept.
    PROMPT_CACHE_SIZE = 4

    def prompt_batch(self, prompts: Sequence[str], images: Sequence[Sequence[ImageRef]]) -> tuple[list[list[int]], dict[str, Any]]:
        """Run the processor on the prompts; return unpadded prompt ids and the image tensors.

        Every scoring and generation path processes its prompts here. Results are cached by (prompts,
        image keys) when every image key is stable (a path, a content hash or an explicit key; never an
        object id, which Python may reuse for another image). A batch whose rows all belong to a cached
        batch is cut from it where the family allows (:attr:`ROW_SELECT_MODEL_TYPES`): online DPO trains
        on the pairs its judge kept, a subset of the prompts it sampled for.
        """
        keys = [tuple(im.key for im in imgs) for imgs in images]
        cacheable = all(not k.startswith("obj:") for ks in keys for k in ks)
        cache_key = (self.processor.chat_template, tuple(prompts), tuple(keys)) if cacheable else None
        cache = self.__dict__.setdefault("_prompt_cache", OrderedDict())
        if cache_key is not None and cache_key in cache:
            cache.move_to_end(cache_key)
            prompt_ids, image_inputs = cache[cache_key]
            return [list(r) for r in prompt_ids], dict(image_inputs)
        cut = self._rows_of_cached_batch(cache, cache_key) if cache_key is not None else None
        prompt_ids, image_inputs = cut if cut is not None else self._process_prompts(prompts, images)
        if cache_key is not None:
            cache[cache_key] = (prompt_ids, image_inputs)
            while len(cache) > self.PROMPT_CACHE_SIZE:
                cache.popitem(last=False)
        return [list(r) for r in prompt_ids], dict(image_inputs)

    #: Model types whose processor output for some rows of a batch equals processing those rows alone
    #: (every image tensor indexed by image along dim 0; verified by tests).
    ROW_SELECT_MODEL_TYPES: frozenset[str] = frozenset({"llava"})

    def _rows_of_cached_batch(self, cache: OrderedDict, cache_key: tuple) -> tuple[list[list[int]], dict[str, Any]] | None:
        """The processed rows of ``cache_key`` cut from a cached batch that holds all of them, or None."""
        if getattr(self.base_config(), "model_type", None) not in self.ROW_SELECT_MODEL_TYPES:
            return None
        template, prompts, keys = cache_key
        for (c_template, c_prompts, c_keys), (c_ids, c_inputs) in reversed(cache.items()):
            if c_template != template:
                continue
            first: dict[tuple, int] = {}
            for i, row in enumerate(zip(c_prompts, c_keys)):
                first.setdefault(row, i)
            rows = [first.get(row) for row in zip(prompts, keys)]
            if any(r is None for r in rows):
                continue
            starts, total = [], 0
            for ks in c_keys:
                starts.append(total)
                total += len(ks)
            picked = [starts[r] + j for r in rows for j in range(len(c_keys[r]))]
            out: dict[str, Any] = {}
            for name, value in c_inputs.items():
                if not isinstance(value, torch.Tensor) or value.shape[0] != total:
                    return None  # not an image-indexed tensor: process the rows afresh
                if picked:
                    out[name] = value[torch.tensor(picked, dtype=torch.long)]
            return [list(c_ids[r]) for r in rows], out
        return None

    def _process_prompts(self, prompts: Sequence[str], images: Sequence[Sequence[ImageRef]]) -> tuple[list[list[int]], dict[str, Any]]:
        texts = [self.format_prompt(p, len(imgs)) for p, imgs in zip(prompts, images)]
        flat = [im for imgs in images for im in imgs]
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos and all(t.startswith(bos) for t in texts):
            # The chat template already writes BOS; the tokenizer must not add a second one.
            kwargs["add_special_tokens"] = False
        if flat:
            kwargs["images"] = _load_images(flat)
        enc = self.processor(**kwargs)
        ids = enc.pop("input_ids")
        mask = enc.pop("attention_mask")
        enc.pop("token_type_ids", None)
        prompt_ids = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
        return prompt_ids, dict(enc)

    #: Tokenized answers kept for reuse (the policy and reference passes, length checks and online
    #: sampling of one step tokenize the same answers).
    ANSWER_CACHE_SIZE = 8192

    def answer_ids(self, text: str, add_eos: bool = True) -> list[int]:
        """The tokens of :attr:`answer_lead` + ``text``, and the end-of-sequence token unless the answer was
        sampled without one (see :meth:`remember_answer_tokens`) or ``add_eos`` is False."""
        text = self.answer_lead + text
        cache = self.__dict__.setdefault("_answer_cache", OrderedDict())
        ids = cache.get(text)
        if ids is None:
            ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            cache[text] = ids
            if len(cache) > self.ANSWER_CACHE_SIZE:
                cache.popitem(last=False)
        out = list(ids)
        if add_eos and self.eos_token_id is not None and not isinstance(ids, _OpenAnswer):
            out.append(self.eos_token_id)
        return out

    def texts_from_samples(self, new: torch.Tensor, *, remember: bool = True) -> list[str]:
        """Decode sampled token rows (from :meth:`sample_tokens`) to answer texts.

        With ``remember``, each text is afterwards scored as exactly the tokens it was sampled as (up to
        the stop token), not as a fresh tokenization of the decoded text: online DPO then trains on the
        sequence the policy produced, and decoding/re-encoding cannot change its length.
        """
        texts = [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        if remember:
            stops = set(self.stop_ids()) | {int(self.pad_token_id)}
            for text, row in zip(texts, new.tolist()):
                ids, ended = [], False
                for t in row:
                    if t in stops:
                        ended = True
                        break
                    ids.append(t)
                self.remember_answer_tokens(text, ids, ended=ended)
        return texts

    def remember_answer_tokens(self, text: str, ids: Sequence[int], *, ended: bool = True) -> bool:
        """From now on, score answer ``text`` as exactly ``ids`` (without the end-of-sequence token).

        ``ended``: the sample stopped at an end-of-sequence token, which scoring then appends as for any
        answer; False (it reached the token limit): it is scored as sampled, without one -- training on
        an end the policy never produced would teach it to stop there.

        Returns False (and remembers nothing) where that would be unsafe: an empty text, ids holding a
        special token, or a family that puts text between the generation prompt and the answer.
        """
        special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        if not text or self.answer_lead or any(int(t) in special for t in ids):
            return False
        cache = self.__dict__.setdefault("_answer_cache", OrderedDict())
        cache[text] = (tuple if ended else _OpenAnswer)(int(t) for t in ids)
        cache.move_to_end(text)
        while len(cache) > self.ANSWER_CACHE_SIZE:
            cache.popitem(last=False)
        return True

    def answer_tokens(self, text: str) -> list[int]:
        """The tokens answer ``text`` is scored as (without the end-of-sequence token)."""
        return self.answer_ids(text, add_eos=False)

    def answer_ended(self, text: str) -> bool:
        """False for a remembered sample that reached the token limit (scored without an end-of-sequence token)."""
        return not isinstance(self.__dict__.get("_answer_cache", {}).get(text), _OpenAnswer)

    def check_length(self, n: int, what: str) -> None:
        """Raise :class:`SequenceTooLong` when a sequence of ``n`` tokens (``what``, for the message) exceeds ``max_length``."""
        if self.max_length is not None and n > self.max_length:
            raise SequenceTooLong(
                f"{what} has {n} tokens (image tokens included) but the length budget is {self.max_length}; "
                "raise the model's max_length or drop the sample — image tokens are never truncated"
            )

    def encode(
        self,
        prompts: Sequence[str],
        images: Sequence[Sequence[ImageRef]],
        answers: Sequence[str],
        ids: Sequence[str] | None = None,
    ) -> EncodedBatch:
        """Prompt + answer (+ eos) per row, right-padded; ``ids`` name the samples in length errors."""
        prompt_ids, image_inputs = self.prompt_batch(prompts, images)
        rows, resp = [], []
        for i, (p_ids, ans) in enumerate(zip(prompt_ids, answers)):
            a_ids = self.answer_ids(ans)
            seq = p_ids + a_ids
            self.check_length(len(seq), f"sample {ids[i] if ids else i}")
            rows.append(seq)
            resp.append([False] * len(p_ids) + [True] * len(a_ids))
        return self.pad(rows, resp, image_inputs)

    def pad(self, rows: list[list[int]], resp: list[list[bool]], image_inputs: dict[str, Any]) -> EncodedBatch:
        """Right-pad token rows into tensors; ``resp`` marks the answer tokens of each row. The family's
        :meth:`extra_token_inputs` are added over the whole padded sequence."""
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        rmask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, (r, m) in enumerate(zip(rows, resp)):
            input_ids[i, : len(r)] = torch.tensor(r)
            attn[i, : len(r)] = 1
            rmask[i, : len(r)] = torch.tensor(m)
        inputs = {"input_ids": input_ids, "attention_mask": attn, **image_inputs}
        inputs.update(self.extra_token_inputs(input_ids, attn, rmask))
        return EncodedBatch(inputs=inputs, response_mask=rmask)

    def extra_token_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           response_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Per-token companions of ``input_ids`` the family's forward needs, built over the whole sequence
        (``response_mask`` None: a generation prompt). None here; Qwen2-VL and PaliGemma add theirs."""
        return {}

    def inputs_to_device(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Tensors of ``inputs`` on the model's device, floating-point ones in the model's dtype."""
        dtype = next(self.model.parameters()).dtype
        out = {}
        for k, v in inputs.items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.device)
                if v.is_floating_point():
                    v = v.to(dtype)
            out[k] = v
        return out
