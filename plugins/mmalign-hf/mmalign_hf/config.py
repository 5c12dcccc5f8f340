"""Configuration of the ``hf-vlm`` model component (no torch import)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from mmalign_core.config import SpecPathOrId
from mmalign_core import ComponentConfig

Family = Literal["auto", "llava", "llava-next", "qwen2-vl", "qwen2.5-vl", "idefics3", "paligemma"]


class HFVLMConfig(ComponentConfig):
    """A Hugging Face image-text-to-text checkpoint: a local folder (or a Hub id where a network exists)."""

    path: SpecPathOrId = Field(
        "",
        description="Local checkpoint folder (config.json, *.safetensors, tokenizer and processor files), "
        "or a Hub id such as 'llava-hf/llava-v1.6-vicuna-7b-hf' when the Hub is reachable.",
    )
    family: Family = Field(
        "auto",
        description="Model family, which selects the family-specific handling (prompt layout, image inputs, "
        "projector and vision-tower names); 'auto' reads it from config.json's model_type.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype the weights are loaded in; 'auto' keeps the checkpoint's own dtype."
    )
    attn_implementation: Optional[str] = Field(
        None, description="Attention kernel passed to transformers ('eager', 'sdpa', 'flash_attention_2', ...); default: transformers' choice."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass (less memory, about 30% slower)."
    )
    max_length: Optional[int] = Field(
        None, ge=16,
        description="Length budget per training sequence, image tokens included; default: the language model's max_position_embeddings.",
    )
    on_too_long: Literal["drop", "fail"] = Field(
        "drop",
        description="What filter_too_long does with a sample longer than max_length: 'drop' it (counted and reported) "
        "or 'fail' the run naming the sample. Image tokens are never truncated.",
    )
    trust_remote_code: bool = Field(
        False, description="Allow code shipped with the checkpoint to run (needed only for families outside transformers)."
    )
