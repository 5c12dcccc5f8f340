"""Configuration of the tiny LLaVA model (no torch import)."""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from mmalign_core.config import SpecPath
from mmalign_core import ComponentConfig


class TinyLlavaConfig(ComponentConfig):
    """Architecture and tokenizer of a tiny random-weight LLaVA, or a folder to load instead."""

    path: Optional[SpecPath] = Field(None, description="Load this saved folder (e.g. a previous run's model) instead of building from the settings below.")
    seed: int = Field(0, description="Seed of the random initial weights; the build is deterministic.")
    hidden_size: int = Field(64, ge=8, description="Language model hidden size.")
    num_layers: int = Field(2, ge=1, description="Language model decoder layers.")
    num_heads: int = Field(4, ge=1, description="Attention heads of the language model.")
    num_kv_heads: int = Field(2, ge=1, description="Key/value heads (grouped-query attention).")
    intermediate_size: int = Field(128, ge=8, description="MLP width of the language model.")
    vision_hidden_size: int = Field(32, ge=8, description="CLIP vision tower hidden size.")
    vision_layers: int = Field(2, ge=1, description="CLIP vision tower layers.")
    vision_heads: int = Field(2, ge=1, description="CLIP vision tower heads.")
    image_size: int = Field(48, ge=8, description="Input image side in pixels (images are resized and centre-cropped to it).")
    patch_size: int = Field(8, ge=1, description="Vision patch side; image tokens = (image_size / patch_size)^2.")
    vocab_size: int = Field(512, ge=300, description="Target BPE vocabulary size (byte-level, so any text is encodable).")
    max_position_embeddings: int = Field(512, ge=64, description="Longest sequence the model accepts.")
    max_length: Optional[int] = Field(None, ge=16, description="Length budget per training sequence (image tokens included); default: max_position_embeddings.")
    cache_dir: Optional[SpecPath] = Field(None, description="Where built models are kept; default ~/.cache/mmalign/tiny-llava.")
