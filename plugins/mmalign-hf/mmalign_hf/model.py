"""A Hugging Face vision-language model behind the :class:`~mmalign_core.protocols.AlignableModel` interface.

One class serves every family that loads through ``AutoModelForImageTextToText``
and ``AutoProcessor``: the processor expands image placeholders and prepares
pixel tensors; this class appends answer tokens, pads, masks the prompt out of
the loss, and sums response-token log-probs.

Layout of a training sequence::

    [prompt tokens from the processor (image tokens expanded)] [answer tokens] [eos]

The prompt is rendered by the processor's chat template with the generation
prompt, so it is by construction a prefix of the full conversation; answer
tokens are tokenized on their own, which keeps the prompt/answer boundary exact.
"""
from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from mmalign_core.protocols import PairLogps
from mmalign_core.types import GenerationRequest, ImageRef, PreferencePair, SFTExample

PROJECTOR_NAMES = ("multi_modal_projector", "connector", "merger")
VISION_NAMES = ("vision_tower", "vision_model", "visual")


class SequenceTooLong(ValueError):
    """A sample does not fit the length budget; it is never truncated through its image tokens."""


@dataclass
class _PromptPass:
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


@dataclass
class _Encoded:
    inputs: dict[str, torch.Tensor]
    response_mask: torch.Tensor  # [N, T] bool, True on answer tokens (incl. eos)


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


class _OpenAnswer(tuple):
    """Token ids of a sampled answer that stopped at the token limit: scored without an end-of-sequence token."""


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


def _load_images(refs: Sequence[ImageRef]) -> list:
    return [r.load() for r in refs]


class HFVisionLanguageModel:
    """Wraps an HF image-text-to-text model and its processor.

    Args:
        model: a ``PreTrainedModel`` (optionally a ``peft.PeftModel``).
        processor: the family's ``ProcessorMixin`` (must have a chat template).
        name_or_path: where the weights came from (recorded in manifests and adapter configs).
        device: torch device for inputs.
        max_length: length budget per sequence (prompt with expanded image tokens + answer).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        name_or_path: str = "",
        device: str | torch.device = "cpu",
        max_length: int | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name_or_path = name_or_path
        self.device = torch.device(device)
        self.max_length = max_length
        cfg = self._base_config()
        self.image_token_id = getattr(cfg, "image_token_id", None)
        if self.image_token_id is None:
            self.image_token_id = getattr(cfg, "image_token_index", None)
        self.eos_token_id = self.tokenizer.eos_token_id
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_token_id
        # What forward passes go through: the model itself, or the wrapper a distributed
        # backend put around it (DDP, FSDP). Generation and saving use the bare model.
        self.forward_module: Any = model
        # Shared with the frozen reference (a shallow copy), so both reuse one processor call.
        self._prompt_cache: OrderedDict = OrderedDict()
        self._answer_cache: OrderedDict = OrderedDict()

    # ------------------------------------------------------------------ basics
    def _base_config(self) -> Any:
        m = self.model
        if hasattr(m, "get_base_model"):
            m = m.get_base_model()
        return m.config

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "disable_adapter") and hasattr(self.model, "peft_config")

    def to(self, device: str | torch.device) -> "HFVisionLanguageModel":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    # --------------------------------------------------------------- encoding
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

    def _prompt_batch(self, prompts: Sequence[str], images: Sequence[Sequence[ImageRef]]) -> tuple[list[list[int]], dict[str, Any]]:
        """Run the processor on the prompts; return unpadded prompt ids and the image tensors.

        Results are cached by (prompts, image keys) when every image key is stable (a path, a content
        hash or an explicit key; never an object id, which Python may reuse for another image). A batch
        whose rows all belong to a cached batch is cut from it where the family allows
        (:attr:`ROW_SELECT_MODEL_TYPES`): online DPO trains on the pairs its judge kept, a subset of the
        prompts it sampled for.
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
        if getattr(self._base_config(), "model_type", None) not in self.ROW_SELECT_MODEL_TYPES:
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

    def _answer_ids(self, text: str, add_eos: bool = True) -> list[int]:
        """The answer's tokens, and the end-of-sequence token unless the answer was sampled without one."""
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
            stops = set(self._stop_ids()) | {int(self.pad_token_id)}
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
        if not text or getattr(self, "answer_lead", "") or any(int(t) in special for t in ids):
            return False
        cache = self.__dict__.setdefault("_answer_cache", OrderedDict())
        cache[text] = (tuple if ended else _OpenAnswer)(int(t) for t in ids)
        cache.move_to_end(text)
        while len(cache) > self.ANSWER_CACHE_SIZE:
            cache.popitem(last=False)
        return True

    def answer_tokens(self, text: str) -> list[int]:
        """The tokens answer ``text`` is scored as (without the end-of-sequence token)."""
        return self._answer_ids(text, add_eos=False)

    def answer_ended(self, text: str) -> bool:
        """False for a remembered sample that reached the token limit (scored without an end-of-sequence token)."""
        return not isinstance(self.__dict__.get("_answer_cache", {}).get(text), _OpenAnswer)

    def _check_length(self, n: int, what: str) -> None:
        if self.max_length is not None and n > self.max_length:
            raise SequenceTooLong(
                f"{what} has {n} tokens (image tokens included) but the length budget is {self.max_length}; "
                "raise the model's max_length or drop the sample — image tokens are never truncated"
            )

    def _encode(
        self,
        prompts: Sequence[str],
        images: Sequence[Sequence[ImageRef]],
        answers: Sequence[str],
        ids: Sequence[str] | None = None,
    ) -> _Encoded:
        prompt_ids, image_inputs = self._prompt_batch(prompts, images)
        rows, resp = [], []
        for i, (p_ids, ans) in enumerate(zip(prompt_ids, answers)):
            a_ids = self._answer_ids(ans)
            seq = p_ids + a_ids
            self._check_length(len(seq), f"sample {ids[i] if ids else i}")
            rows.append(seq)
            resp.append([False] * len(p_ids) + [True] * len(a_ids))
        return self._pad(rows, resp, image_inputs)

    def _pad(self, rows: list[list[int]], resp: list[list[bool]], image_inputs: dict[str, Any]) -> _Encoded:
        """Right-pad token rows into tensors; ``resp`` marks the answer tokens of each row."""
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        rmask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, (r, m) in enumerate(zip(rows, resp)):
            input_ids[i, : len(r)] = torch.tensor(r)
            attn[i, : len(r)] = 1
            rmask[i, : len(r)] = torch.tensor(m)
        inputs = {"input_ids": input_ids, "attention_mask": attn, **image_inputs}
        return _Encoded(inputs=inputs, response_mask=rmask)

    def _to_device(self, inputs: dict[str, Any]) -> dict[str, Any]:
        dtype = next(self.model.parameters()).dtype
        out = {}
        for k, v in inputs.items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.device)
                if v.is_floating_point():
                    v = v.to(dtype)
            out[k] = v
        return out

    # -------------------------------------------------------------- log-probs
    def _keeps_logits(self) -> bool:
        """Whether the model's forward takes ``logits_to_keep`` (then only answer positions get logits)."""
        cached = self.__dict__.get("_logits_to_keep_ok")
        if cached is None:
            import inspect

            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            cached = "logits_to_keep" in inspect.signature(base.forward).parameters
            self.__dict__["_logits_to_keep_ok"] = cached
        return cached

    def _sequence_logps(self, enc: _Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum of log-probs over response tokens, and the number of response tokens, per row.

        Rows are right-padded, so every answer token lies at or after the earliest answer start ``s`` of
        the batch: logits are computed only from position ``s - 1`` on (the output head and the softmax
        over the vocabulary are skipped on the prompt, image tokens included).
        """
        inputs = self._to_device(enc.inputs)
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

    def pair_logps(self, pairs: Sequence[PreferencePair], *, with_rejected: bool = True) -> PairLogps:
        """Chosen/rejected (and extra rejected) log-prob sums for a batch of pairs, with gradients.

        All sequences of the batch go through one forward pass. Each pair's prompt is processed
        once and its images are encoded once (see :meth:`_shared_vision`); chosen, rejected and
        extra rejected answers reuse them.
        """
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
            prompt_ids, image_inputs = self._prompt_batch([p.prompt for p in pairs], [p.images for p in pairs])
            k = len(blocks)
            rows, resp = [], []
            for suffix, answers in blocks:
                for p, p_ids, ans in zip(pairs, prompt_ids, answers):
                    a_ids = self._answer_ids(ans)
                    self._check_length(len(p_ids) + len(a_ids), f"sample {p.id}{suffix}")
                    rows.append(p_ids + a_ids)
                    resp.append([False] * len(p_ids) + [True] * len(a_ids))
            tiled = {name: torch.cat([v] * k) if isinstance(v, torch.Tensor) else v for name, v in image_inputs.items()}
            enc = self._pad(rows, resp, tiled)
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

    def _encode_unshared(self, pairs: Sequence[PreferencePair], blocks: list[tuple[str, list[str]]]) -> _Encoded:
        """Every sequence processed on its own (pairs whose rejected side has other images)."""
        prompts, images, answers, ids = [], [], [], []
        for j, (suffix, block) in enumerate(blocks):
            for p, ans in zip(pairs, block):
                prompts.append(p.prompt)
                use_rej = suffix == "/rejected" and p.rejected_images is not None
                images.append(p.rejected_images if use_rej else p.images)
                answers.append(ans)
                ids.append(f"{p.id}{suffix}")
        return self._encode(prompts, images, answers, ids)

    #: Model types whose decoder accepts a 4-D attention mask with explicit 1-D position ids (verified by
    #: tests), so chosen and rejected answers can share one copy of the prompt. Off: ``prefix_sharing = False``.
    PREFIX_SHARING_MODEL_TYPES: frozenset[str] = frozenset({"llava"})
    prefix_sharing: bool = True

    def _text_attn_implementation(self) -> str | None:
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        cfg = base.config
        return getattr(getattr(cfg, "text_config", cfg), "_attn_implementation", None) or getattr(cfg, "_attn_implementation", None)

    def _can_share_prefix(self, n_blocks: int) -> bool:
        if not self.prefix_sharing or n_blocks < 2:
            return False
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        impl = self._text_attn_implementation()
        return getattr(base.config, "model_type", None) in self.PREFIX_SHARING_MODEL_TYPES and impl in (None, "sdpa", "eager")

    def _packed_attention_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """The 4-D mask ``[B, 1, T, T]`` the decoder receives as given: boolean for sdpa (True = attend);
        additive for eager attention, which adds a 4-D mask to the scores (a boolean one would add 0/1)."""
        if self._text_attn_implementation() == "eager":
            dtype = next(self.model.parameters()).dtype
            additive = torch.zeros(allowed.shape, dtype=dtype)
            return additive.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
        return allowed[:, None]

    def _packed_logps(self, pairs: Sequence[PreferencePair], blocks: list[tuple[str, list[str]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """All answers of a pair in one row after a single copy of its prompt.

        Row layout ``[prompt][answer 1][answer 2]...``: prompt tokens attend causally among themselves;
        each answer attends to the whole prompt and causally to itself, never to another answer; every
        answer's positions start where the prompt ends. The first token of each answer is predicted by
        the prompt's last position, later ones by the answer's own previous token. This equals scoring
        every (prompt, answer) sequence separately, with the prompt (image tokens included) computed
        once instead of once per answer.

        Returns sums and counts ordered block by block (all chosen, then all rejected, ...), as the
        unpacked path does.
        """
        prompt_ids, image_inputs = self._prompt_batch([p.prompt for p in pairs], [p.images for p in pairs])
        b, k = len(pairs), len(blocks)
        rows: list[list[int]] = []
        segs: list[list[int]] = []  # per token: 0 prompt, j + 1 answer j
        spans: list[list[tuple[int, int]]] = []  # per row: (start, length) of each answer
        for i, p in enumerate(pairs):
            n_prompt = len(prompt_ids[i])
            seq, seg, sp = list(prompt_ids[i]), [0] * n_prompt, []
            for j, (suffix, answers) in enumerate(blocks):
                a_ids = self._answer_ids(answers[i])
                self._check_length(n_prompt + len(a_ids), f"sample {p.id}{suffix}")
                sp.append((len(seq), len(a_ids)))
                seq += a_ids
                seg += [j + 1] * len(a_ids)
            rows.append(seq); segs.append(seg); spans.append(sp)
        width = max(len(r) for r in rows)
        input_ids = torch.full((b, width), self.pad_token_id, dtype=torch.long)
        seg_t = torch.full((b, width), -1, dtype=torch.long)  # -1: padding
        for i, (r, sg) in enumerate(zip(rows, segs)):
            input_ids[i, : len(r)] = torch.tensor(r)
            seg_t[i, : len(sg)] = torch.tensor(sg)
        n_prompts = torch.tensor([len(x) for x in prompt_ids])
        idx = torch.arange(width)
        # An answer token's position continues from the prompt's end: index minus the answers before it.
        starts = torch.tensor([[st for st, _ in sp] for sp in spans])  # [b, k]
        own_start = starts.gather(1, (seg_t - 1).clamp(min=0))  # start of each token's own answer
        position_ids = torch.where(seg_t > 0, n_prompts[:, None] + idx - own_start, idx)
        position_ids = torch.where(seg_t < 0, 0, position_ids)
        q_seg, k_seg = seg_t[:, :, None], seg_t[:, None, :]
        causal = idx[None, :, None] >= idx[None, None, :]
        # Prompt keys: seen causally by the prompt and by every answer; answer keys: by their own answer only.
        mask = causal & (q_seg >= 0) & ((k_seg == 0) | (k_seg == q_seg))
        mask |= (q_seg < 0) & torch.eye(width, dtype=torch.bool)[None]  # padding attends to itself only (finite softmax)
        inputs = self._to_device({"input_ids": input_ids, "position_ids": position_ids, **image_inputs})
        inputs["attention_mask"] = self._packed_attention_mask(mask).to(self.device)
        # Logits only from the earliest prompt end of the batch on (every predicting position is there).
        lo = min(len(p) for p in prompt_ids) - 1 if self._keeps_logits() else 0
        kwargs = {"logits_to_keep": width - lo} if lo > 0 else {}
        with self._shared_vision(1):
            logits = self.forward_module(**inputs, use_cache=False, **kwargs).logits
        # Every answer token: its row, column, block and the position that predicts it (the prompt's last
        # position for an answer's first token, else the previous column).
        ri, ci = (seg_t > 0).nonzero(as_tuple=True)
        block = seg_t[ri, ci] - 1
        first = ci == own_start[ri, ci]
        src = torch.where(first, n_prompts[ri] - 1, ci - 1)
        picked = logits[ri.to(self.device), (src - lo).to(self.device)]  # [answer tokens, V]: only what is scored
        token_logps = -torch.nn.functional.cross_entropy(picked.float(), input_ids[ri, ci].to(self.device), reduction="none")
        flat = (block * b + ri).to(self.device)  # block by block (all chosen, then all rejected, ...), row by row
        sums = torch.zeros(k * b, dtype=torch.float32, device=self.device).index_add(0, flat, token_logps)
        counts = torch.bincount(flat, minlength=k * b)
        return sums, counts

    def _prompt_row_key(self, prompt: str, images: Sequence[ImageRef]) -> tuple:
        return (self.processor.chat_template, prompt, tuple(im.key for im in images))

    def _take_prompt_pass(self, pairs: Sequence[PreferencePair]) -> "_PromptPass | None":
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

    def _run_prompt_pass(self, reqs: Sequence[GenerationRequest], inputs: dict[str, Any]) -> "tuple[Any, torch.Tensor] | None":
        """Prefill for sampling with gradients, kept for this step's training pass (see ``keep_prompt_pass``).

        Returns (cache, last-position logits) for the decoding loop, or None where the kept pass would not
        equal the training pass: a family without prefix sharing, a wrapped (distributed) model, dropout
        anywhere, answer prefixes, or no trainable parameter.
        """
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
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
        self.__dict__["_prompt_pass"] = _PromptPass(
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
                                 stash: "_PromptPass") -> tuple[torch.Tensor, torch.Tensor]:
        """Answers scored after the kept prompt pass: the language model runs on the answer tokens only.

        Each answer attends to its prompt's cached keys and values (which carry the prompt pass's graph,
        so gradients reach every parameter as in :meth:`_packed_logps`) and causally to itself; its first
        token is predicted by the kept last-position logits. Sums and counts come block by block.
        """
        b, k = len(pairs), len(blocks)
        idx = torch.tensor([stash.rows[self._prompt_row_key(p.prompt, p.images)] for p in pairs], device=self.device)
        lengths = stash.lengths[idx]
        answers: list[list[int]] = []
        for suffix, block in blocks:
            for i, (p, ans) in enumerate(zip(pairs, block)):
                a_ids = self._answer_ids(ans)
                self._check_length(int(lengths[i]) + len(a_ids), f"sample {p.id}{suffix}")
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
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        import inspect

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

    #: Model types whose vision tower takes images stacked along dim 0 (verified by tests), so a
    #: tiled batch can be encoded from its first copy. Family adapters may extend this.
    SHARED_VISION_MODEL_TYPES: frozenset[str] = frozenset({"llava"})

    def _vision_tower(self) -> Any:
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
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
        enc = self._encode(
            [e.prompt for e in examples], [e.images for e in examples], [e.response for e in examples], [e.id for e in examples]
        )
        sums, counts = self._sequence_logps(enc)
        return PairLogps(chosen=sums, rejected=None, chosen_tokens=counts, rejected_tokens=None)

    @torch.no_grad()
    def continuation_logprobs(
        self, requests: Sequence[GenerationRequest], continuations: Sequence[str], *, batch_size: int = 32
    ) -> list[float]:
        was_training = self.model.training
        self.model.eval()
        out: list[float] = []
        try:
            for s in range(0, len(requests), batch_size):
                reqs = requests[s : s + batch_size]
                conts = continuations[s : s + batch_size]
                enc = self._encode(
                    [r.prompt for r in reqs], [r.images for r in reqs], [r.answer_prefix + c for r, c in zip(reqs, conts)]
                )
                if any(r.answer_prefix for r in reqs):
                    self._mask_prefixes(enc, [r.answer_prefix for r in reqs])
                sums, _ = self._sequence_logps(enc)
                out.extend(sums.tolist())
        finally:
            self.model.train(was_training)
        return out

    def _mask_prefixes(self, enc: _Encoded, prefixes: Sequence[str]) -> None:
        for i, pre in enumerate(prefixes):
            if not pre:
                continue
            n = len(self._answer_ids(pre, add_eos=False))
            idx = enc.response_mask[i].nonzero().flatten()[:n]
            enc.response_mask[i, idx] = False

    # ------------------------------------------------------------- generation
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

    def _banned_token_ids(self) -> list[int]:
        """Tokens generation must never emit (the image placeholder)."""
        return [int(self.image_token_id)] if self.image_token_id is not None else []

    def _stop_ids(self) -> list[int]:
        return [int(self.eos_token_id)] if self.eos_token_id is not None else []

    def _generation_extra_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-token companions of the prompt ids a family's forward needs (none here)."""
        return {}

    def _generation_inputs(self, reqs: Sequence[GenerationRequest]) -> dict[str, Any]:
        """Left-padded prompt (+ answer prefix) ids, attention mask and image tensors, on the device."""
        prompt_ids, image_inputs = self._prompt_batch([r.prompt for r in reqs], [r.images for r in reqs])
        rows = [p + (self._answer_ids(r.answer_prefix, add_eos=False) if r.answer_prefix else []) for p, r in zip(prompt_ids, reqs)]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding
            input_ids[i, width - len(r) :] = torch.tensor(r)
            attn[i, width - len(r) :] = 1
        extra = self._generation_extra_inputs(input_ids, attn)
        return self._to_device({"input_ids": input_ids, "attention_mask": attn, **image_inputs, **extra})

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
        from .sampling import decode_parts, fast_sample

        inputs = self._generation_inputs(reqs)
        width = inputs["input_ids"].shape[1]
        banned, stop = self._banned_token_ids(), self._stop_ids()
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

    # --------------------------------------------------------------- training
    def freeze_vision(self, frozen: bool = True) -> None:
        for name, p in self.model.named_parameters():
            if any(f".{v}." in f".{name}" or name.startswith(v) for v in VISION_NAMES):
                p.requires_grad_(not frozen)

    def trainable_parameter_groups(self, lr: float, projector_lr: float | None) -> list[dict[str, Any]]:
        proj, rest = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (proj if any(k in name for k in PROJECTOR_NAMES) else rest).append(p)
        groups = []
        if rest:
            groups.append({"params": rest, "lr": lr, "name": "language_model"})
        if proj:
            groups.append({"params": proj, "lr": projector_lr if projector_lr is not None else lr, "name": "projector"})
        return groups

    def enable_lora(self, r: int, alpha: float, dropout: float, target_modules: str) -> None:
        """Wrap the model with peft LoRA adapters on modules matching ``target_modules`` (a regex).

        The projector becomes a fully trained module saved with the adapter
        (``modules_to_save``), so disabling adapters restores the reference projector too.
        """
        import peft

        if self.is_peft:
            self.model = self.model.merge_and_unload()
            self.forward_module = self.model
        proj_names = sorted({k for k in PROJECTOR_NAMES for n, _ in self.model.named_modules() if n.endswith(k)})
        cfg = peft.LoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
            modules_to_save=proj_names or None, bias="none",
        )
        self.model = peft.get_peft_model(self.model, cfg)
        self.forward_module = self.model
        if not any(p.requires_grad for n, p in self.model.named_parameters() if "lora_" in n):
            raise ValueError(f"LoRA target_modules {target_modules!r} matched no module of the model")

    def frozen_reference(self) -> "HFVisionLanguageModel | _AdapterDisabledReference":
        """The reference policy for this stage: adapters disabled (LoRA) or a frozen copy (full fine-tuning)."""
        if self.is_peft:
            return _AdapterDisabledReference(self)
        # A frozen copy of this very object (same class, so family-specific encoding carries over),
        # sharing the processor but not the weights.
        ref = copy.copy(self)
        ref.model = copy.deepcopy(self.model)
        ref.model.eval()
        for p in ref.model.parameters():
            p.requires_grad_(False)
        ref.forward_module = ref.model
        return ref

    # ------------------------------------------------------------ persistence
    def save_pretrained(self, path: Path | str) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)

    def mark_saved(self, path: Path | str) -> None:
        """Record ``path`` as where these weights live now, so adapters of a later LoRA stage name it
        (not the original checkpoint) as their base model."""
        self.name_or_path = str(path)
        if not self.is_peft:
            self.model.config._name_or_path = str(path)

    def load_checkpoint(self, path: Path | str) -> None:
        """Load weights saved by :meth:`save_pretrained` into this (identically structured) model."""
        path = Path(path)
        if self.is_peft:
            import peft
            from safetensors.torch import load_file

            state = load_file(str(path / "adapter_model.safetensors"))
            peft.set_peft_model_state_dict(self.model, state)
            return
        # transformers may store weights under a different key layout than the module uses
        # (e.g. LLaVA's original names) and converts on load, so load through from_pretrained.
        dtype = next(self.model.parameters()).dtype
        fresh = type(self.model).from_pretrained(str(path), dtype=dtype)
        self.model.load_state_dict(fresh.state_dict())
        del fresh

    def fingerprint(self) -> str:
        """A cheap but weight-sensitive digest: per tensor its shape, sum and a strided sample of 64 values.

        Sums are reduced where the weights live and only the samples are copied to the CPU, so a
        large model on a GPU is not copied to host memory (the runner calls this at every run start).
        """
        h = hashlib.sha256()
        with torch.no_grad():
            for name, p in sorted(self.model.state_dict().items()):
                h.update(name.encode())
                flat = p.detach().reshape(-1)
                total = float(flat.sum(dtype=torch.float64))
                sample = flat[:: max(1, flat.numel() // 64)].to("cpu", torch.float32)
                h.update(str((tuple(p.shape), round(total, 6))).encode())
                h.update(sample.numpy().tobytes())
        h.update(json.dumps(self.processor.to_dict() if hasattr(self.processor, "to_dict") else {}, sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]


class _AdapterDisabledReference:
    """Reference forward passes through the policy's own weights with adapters switched off."""

    def __init__(self, policy: HFVisionLanguageModel):
        self._policy = policy

    @contextlib.contextmanager
    def _disabled(self) -> Iterator[None]:
        with self._policy.model.disable_adapter():
            yield

    def pair_logps(self, pairs: Sequence[PreferencePair], *, with_rejected: bool = True) -> PairLogps:
        with self._disabled():
            return self._policy.pair_logps(pairs, with_rejected=with_rejected)

    def sft_logps(self, examples: Sequence[SFTExample]) -> PairLogps:
        with self._disabled():
            return self._policy.sft_logps(examples)
