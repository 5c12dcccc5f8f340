"""Prefix sharing: all answers of a pair scored in one row after a single copy of its prompt.

Row layout ``[prompt][answer 1][answer 2]...`` with a 4-D attention mask and explicit position ids, so
chosen, rejected and extra rejected answers reuse one forward over the prompt (image tokens included).
Enabled per model type (:attr:`PrefixSharing.PREFIX_SHARING_MODEL_TYPES`), off with ``prefix_sharing = False``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from mmalign_core.types import PreferencePair


class PrefixSharing:
    """The packed scoring path (a part of :class:`~mmalign_hf.model.HFVisionLanguageModel`)."""

    model: Any
    forward_module: Any
    device: torch.device
    pad_token_id: int

    #: Model types whose decoder accepts a 4-D attention mask with explicit 1-D position ids (verified by
    #: tests), so chosen and rejected answers can share one copy of the prompt. Off: ``prefix_sharing = False``.
    PREFIX_SHARING_MODEL_TYPES: frozenset[str] = frozenset({"llava"})
    prefix_sharing: bool = True

    def _text_attn_implementation(self) -> str | None:
        cfg = self.base_model().config
        return getattr(getattr(cfg, "text_config", cfg), "_attn_implementation", None) or getattr(cfg, "_attn_implementation", None)

    def _can_share_prefix(self, n_blocks: int) -> bool:
        if not self.prefix_sharing or n_blocks < 2:
            return False
        base = self.base_model()
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
        prompt_ids, image_inputs = self.prompt_batch([p.prompt for p in pairs], [p.images for p in pairs])
        b, k = len(pairs), len(blocks)
        rows: list[list[int]] = []
        segs: list[list[int]] = []  # per token: 0 prompt, j + 1 answer j
        spans: list[list[tuple[int, int]]] = []  # per row: (start, length) of each answer
        for i, p in enumerate(pairs):
            n_prompt = len(prompt_ids[i])
            seq, seg, sp = list(prompt_ids[i]), [0] * n_prompt, []
            for j, (suffix, answers) in enumerate(blocks):
                a_ids = self.answer_ids(answers[i])
                self.check_length(n_prompt + len(a_ids), f"sample {p.id}{suffix}")
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
        inputs = self.inputs_to_device({"input_ids": input_ids, "position_ids": position_ids, **image_inputs})
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
