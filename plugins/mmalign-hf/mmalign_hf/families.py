"""The supported families: small subclasses of :class:`~mmalign_hf.family.HFFamilyModel`.

The generic adapter (:mod:`mmalign_hf.model`, with the checks of :mod:`mmalign_hf.family`) renders the prompt
with the processor's chat template, appends answer tokens, pads and sums response log-probs. What differs
between families lives here, as overrides of public methods and class attributes:

======================  ===============================================================
family                  special handling
======================  ===============================================================
llava / llava-next      none beyond the common checks; AnyRes ``image_sizes`` pass through
qwen2-vl / qwen2.5-vl   ``mm_token_type_ids`` rebuilt over prompt+answer for mRoPE;
                        the projector (``visual.merger``) lives inside the vision tower
                        and stays trainable when the tower is frozen
idefics3 (SmolVLM)      nested per-sample image lists; language model is ``text_model``,
                        projector ``connector``
paligemma               no chat template: ``<image>``*n + ``<bos>`` + prompt + ``\\n``
                        built by the processor; ``token_type_ids`` (0 prefix, 1 answer)
                        give the bidirectional prefix; text-only prompts built by hand
======================  ===============================================================

Common to all: the answer lead and the end-of-turn token are read from the chat
template, image-token counts are checked per sample before any forward pass,
generation never emits vision special tokens, and ``filter_too_long`` drops
(or fails on) samples that do not fit ``max_length`` before batching.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch

from .checks import PROBE_ANSWER, ChatTemplateError, ImageTokenMismatch
from .family import HFFamilyModel, ProcessedPrompts


class LlavaModel(HFFamilyModel):
    """LLaVA-1.5 (``LlavaForConditionalGeneration``)."""

    family = "llava"


class LlavaNextModel(HFFamilyModel):
    """LLaVA-NeXT / LLaVA-1.6 (AnyRes: ``image_sizes`` and a variable number of image tokens per image)."""

    family = "llava-next"
    # The tower takes the images' AnyRes crops stacked along dim 0: a pair's images are encoded once.
    SHARED_VISION_MODEL_TYPES = frozenset({"llava_next"})

    def probe_images(self) -> list[Any]:
        from PIL import Image

        return [Image.new("RGB", (96, 48), (120, 40, 200))]  # wide: exercises the AnyRes grid and unpadding


class Qwen2VLModel(HFFamilyModel):
    """Qwen2-VL: dynamic resolution (``image_grid_thw``) and mRoPE over ``mm_token_type_ids``."""

    family = "qwen2-vl"
    projector_names = ("merger",)
    vision_names = ("visual",)

    def expected_image_tokens(self, image_inputs: dict[str, Any], images: Sequence[Sequence[Any]]) -> list[int] | None:
        grid = image_inputs.get("image_grid_thw")
        if grid is None:
            return [0] * len(images)
        merge = int(getattr(self.processor.image_processor, "merge_size", 2))
        per_image = (grid.prod(-1) // (merge * merge)).tolist()
        out, k = [], 0
        for imgs in images:
            out.append(int(sum(per_image[k : k + len(imgs)])))
            k += len(imgs)
        return out

    def expected_tokens_per_image(self, image_inputs: dict[str, Any], images: Sequence[Sequence[Any]]) -> list[list[int]] | None:
        grid = image_inputs.get("image_grid_thw")
        if grid is None:
            return None
        merge = int(getattr(self.processor.image_processor, "merge_size", 2))
        per_image = [int(n) for n in (grid.prod(-1) // (merge * merge)).tolist()]
        out, k = [], 0
        for imgs in images:
            out.append(per_image[k : k + len(imgs)])
            k += len(imgs)
        return out

    def extra_token_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        cfg = self.base_config()
        types = (input_ids == self.image_token_id).long()
        vid = getattr(cfg, "video_token_id", None)
        if vid is not None:
            types = types + 2 * (input_ids == vid).long()
        return {"mm_token_type_ids": types}


class Qwen25VLModel(Qwen2VLModel):
    """Qwen2.5-VL (window attention in the vision tower; otherwise as Qwen2-VL)."""

    family = "qwen2.5-vl"


class Idefics3Model(HFFamilyModel):
    """Idefics3 / SmolVLM: nested per-sample image lists, ``text_model`` and ``connector``."""

    family = "idefics3"
    language_model_names = ("text_model",)
    projector_names = ("connector",)
    vision_names = ("vision_model",)
    nested_images = True

    def find_vision_token_ids(self) -> list[int]:
        ids = set(super().find_vision_token_ids())
        unk = self.tokenizer.unk_token_id
        for t in getattr(self.processor, "row_col_ids", None) or []:  # <row_i_col_j> tile markers of split images
            if isinstance(t, int) and t != unk:
                ids.add(t)
        return sorted(ids)

    def expected_image_tokens(self, image_inputs: dict[str, Any], images: Sequence[Sequence[Any]]) -> list[int] | None:
        pam = image_inputs.get("pixel_attention_mask")
        if pam is None:
            return [0] * len(images)
        real = pam.flatten(2).any(-1).sum(-1).tolist()  # real (sub-)images per row
        seq = int(getattr(self.processor, "image_seq_len"))
        return [int(n) * seq for n in real]

    def expected_tokens_per_image(self, image_inputs: dict[str, Any], images: Sequence[Sequence[Any]]) -> list[list[int]] | None:
        return None  # split images are tiles, each its own run: the per-row total is checked


class PaliGemmaModel(HFFamilyModel):
    """PaliGemma: no chat template; the processor lays out ``<image>``*n ``<bos>`` prompt ``\\n`` and the
    answer follows with ``<eos>``; ``token_type_ids`` mark the bidirectional prefix (0) and the answer (1)."""

    family = "paligemma"
    uses_chat_template = False
    SHARED_VISION_MODEL_TYPES = frozenset({"paligemma"})  # SigLIP takes images stacked along dim 0

    def format_prompt(self, prompt: str, n_images: int) -> str:
        return self.processor.image_token * n_images + prompt

    def run_processor(self, prompts: Sequence[str], images: Sequence[Sequence[Any]]) -> ProcessedPrompts:
        with_img = [i for i, imgs in enumerate(images) if imgs]
        ids: list[list[int] | None] = [None] * len(prompts)
        image_inputs: dict[str, Any] = {}
        if with_img:
            enc = self.processor(text=[self.format_prompt(prompts[i], len(images[i])) for i in with_img],
                                 images=[list(images[i]) for i in with_img], return_tensors="pt", padding=True)
            for row, i in enumerate(with_img):
                ids[i] = enc["input_ids"][row][enc["attention_mask"][row].bool()].tolist()
            image_inputs = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask", "token_type_ids", "labels")}
        bos = self.tokenizer.bos_token or ""
        for i in range(len(prompts)):
            if ids[i] is None:  # the processor requires images; this is its text layout without them
                ids[i] = self.tokenizer(bos + prompts[i] + "\n", add_special_tokens=False)["input_ids"]
        seq = int(self.processor.image_seq_length)
        return ProcessedPrompts([list(r) for r in ids], image_inputs, [seq * len(imgs) for imgs in images],
                                [[seq] * len(imgs) for imgs in images])

    def extra_token_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if response_mask is None:  # generation: the whole prompt is prefix
            return {"token_type_ids": torch.zeros_like(input_ids)}
        # answer and padding are causal (1); the prompt is the bidirectional prefix (0)
        return {"token_type_ids": (response_mask | (attention_mask == 0)).long()}

    def check(self) -> None:
        super().check()
        # The layout above must be the processor's own training layout (prompt + suffix + eos).
        from PIL import Image

        img = Image.new("RGB", (32, 32), (1, 2, 3))
        enc = self.processor(text=[self.format_prompt("Describe the image.", 1)], images=[img], suffix=[PROBE_ANSWER], return_tensors="pt")
        mine = self.run_processor(["Describe the image."], [[img]]).ids[0] + self.answer_ids(PROBE_ANSWER)
        theirs = enc["input_ids"][0].tolist()
        if theirs != mine:
            warnings.warn(
                f"{self.name_or_path}: the PaliGemma prompt+answer tokens differ from the processor's prefix/suffix layout "
                f"(processor: {self.tokenizer.convert_ids_to_tokens(theirs[-12:])}, here: "
                f"{self.tokenizer.convert_ids_to_tokens(mine[-12:])}); check the tokenizer's bos/eos settings", stacklevel=2)


FAMILIES: dict[str, type[HFFamilyModel]] = {
    "llava": LlavaModel,
    "llava-next": LlavaNextModel,
    "qwen2-vl": Qwen2VLModel,
    "qwen2.5-vl": Qwen25VLModel,
    "idefics3": Idefics3Model,
    "paligemma": PaliGemmaModel,
}

MODEL_TYPES: dict[str, str] = {
    "llava": "llava",
    "llava_next": "llava-next",
    "qwen2_vl": "qwen2-vl",
    "qwen2_5_vl": "qwen2.5-vl",
    "idefics3": "idefics3",
    "smolvlm": "idefics3",
    "paligemma": "paligemma",
}


__all__ = ["FAMILIES", "MODEL_TYPES", "ChatTemplateError", "HFFamilyModel", "Idefics3Model", "ImageTokenMismatch", "LlavaModel",
           "LlavaNextModel", "PaliGemmaModel", "Qwen25VLModel", "Qwen2VLModel"]
