"""Registration of the tiny LLaVA model (imports nothing heavy)."""
from __future__ import annotations

from mmalign_core import ModelEntry, hookimpl

from .config import TinyLlavaConfig


@hookimpl
def mmalign_models() -> list[ModelEntry]:
    return [
        ModelEntry(
            name="tiny-llava",
            summary="Tiny random-weight LlavaForConditionalGeneration built offline from a config (tests, CPU quickstart).",
            config=TinyLlavaConfig,
            factory="mmalign_tiny.model:make_tiny_llava",
            capabilities={"generate", "train", "lora", "token_logps"},  # token_logps: pair_logps(..., token_logps=True)
        )
    ]
