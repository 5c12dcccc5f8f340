"""A LLaVA-1.5-shaped model with random weights, built in memory on the device (no download, no files).

The architecture is :class:`~gpucheck.sizes.LlavaShape` (by default llava-1.5-7b: a 32-layer, 4096-wide
Llama with a 32064-token output head, a CLIP ViT-L/14 tower at 336 px giving 576 image tokens per image,
and the two-layer GELU projector). The tokenizer is the tests' tiny byte-level BPE (its ids are a prefix of
the model's vocabulary), so prompts and answers are short real token sequences while the compute per
token is the 7B model's.
"""
from __future__ import annotations

import contextlib
from typing import Any

from .paths import add_helpers
from .sizes import LlavaShape

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]


def processor(shape: LlavaShape, *, bos_in_template: bool = False) -> Any:
    """A LlavaProcessor for ``shape`` (``bos_in_template``: the template writes BOS, as TRL expects)."""
    add_helpers()
    from tiny_families import make_tokenizer
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    from mmalign_tiny.model import CHAT_TEMPLATE

    tok = make_tokenizer(SPECIALS, bos="<s>", eos="</s>", pad="<pad>", extra={"image_token": "<image>"}, vocab=512)
    if len(tok) > shape.vocab:
        raise ValueError(f"the tokenizer has {len(tok)} tokens but the model's vocabulary only {shape.vocab}")
    ip = CLIPImageProcessorPil(size={"shortest_edge": shape.image_size},
                               crop_size={"height": shape.image_size, "width": shape.image_size})
    template = ("{{ bos_token }}" + CHAT_TEMPLATE) if bos_in_template else CHAT_TEMPLATE
    return LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=shape.patch, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=template)


def config(shape: LlavaShape, proc: Any) -> Any:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    tok = proc.tokenizer
    text = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                       num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                       max_position_embeddings=shape.max_positions, rms_norm_eps=1e-5, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = CLIPVisionConfig(hidden_size=shape.vision_hidden, intermediate_size=shape.vision_intermediate,
                              num_hidden_layers=shape.vision_layers, num_attention_heads=shape.vision_heads,
                              image_size=shape.image_size, patch_size=shape.patch, projection_dim=768)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                       image_seq_length=shape.image_tokens, vision_feature_layer=shape.vision_feature_layer,
                       vision_feature_select_strategy="default", projector_hidden_act="gelu")


@contextlib.contextmanager
def _default_dtype(dtype: Any):
    import torch

    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def build_model(shape: LlavaShape, proc: Any, *, device: str, dtype: str, seed: int = 0) -> Any:
    """The bare ``LlavaForConditionalGeneration``, initialised on ``device`` in ``dtype`` (deterministic per seed)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    cfg = config(shape, proc)
    torch.manual_seed(seed)
    with torch.device(device), _default_dtype(getattr(torch, dtype)):
        model = LlavaForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = proc.tokenizer.pad_token_id
    model.generation_config.eos_token_id = proc.tokenizer.eos_token_id
    model.config._name_or_path = "llava-1.5-shaped-random"
    return model


def wrap(model: Any, proc: Any, shape: LlavaShape, device: str) -> Any:
    """mmalign's LLaVA family adapter around ``model`` (runs its load checks: template, image-token probe)."""
    from mmalign_hf.families import LlavaModel

    return LlavaModel(model, proc, name_or_path=model.config._name_or_path, device=device, max_length=shape.max_positions)


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
