"""Registration of the ``hf-vlm`` model (imports nothing heavy)."""
from __future__ import annotations

from mmalign_core import ModelEntry, hookimpl

from .config import HFVLMConfig


@hookimpl
def mmalign_models() -> list[ModelEntry]:
    return [
        ModelEntry(
            name="hf-vlm",
            summary="A Hugging Face vision-language checkpoint (LLaVA-1.5, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL, Idefics3/SmolVLM, PaliGemma) from a local folder or the Hub.",
            config=HFVLMConfig,
            factory="mmalign_hf.loading:make_hf_vlm",
            capabilities={"generate", "train", "lora", "token_logps"},  # token_logps: pair_logps(..., token_logps=True)
        )
    ]
