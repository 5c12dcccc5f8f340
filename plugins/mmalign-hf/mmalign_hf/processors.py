"""Processors that work without torchvision.

Qwen2-VL, Qwen2.5-VL and SmolVLM processors carry a ``video_processor`` slot.
Video processors need torchvision; where it is missing (or broken, as with the
CUDA-only wheels on CPU machines) neither the processor class nor
``AutoProcessor.from_pretrained`` can be built:

- ``Qwen2VLProcessor(...)`` -> ``AttributeError: type object 'VIDEO_PROCESSOR_MAPPING' has no attribute '_extra_content'``
- ``AutoProcessor.from_pretrained(dir)`` -> ``OSError: Can't load video processor for '<dir>'``

The classes made here are the same processors without the video slot: images
and text are processed exactly as by the originals (same methods), videos are
not supported. They keep the original class name, so ``save_pretrained``
records the original ``processor_class`` and the saved folder loads with plain
``AutoProcessor`` wherever torchvision works.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

# processor class name -> how its __init__ sets the token attributes before ProcessorMixin.__init__
NO_VIDEO_PROCESSORS = ("Qwen2VLProcessor", "Qwen2_5_VLProcessor", "SmolVLMProcessor")


def _qwen_tokens(self: Any, tokenizer: Any) -> None:
    self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
    self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
    self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(self.image_token)
    self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(self.video_token)


def _smolvlm_tokens(self: Any, tokenizer: Any, image_seq_len: int = 169) -> None:
    self.fake_image_token = getattr(tokenizer, "fake_image_token", "<fake_token_around_image>")
    self.image_token = getattr(tokenizer, "image_token", "<image>")
    self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
    self.end_of_utterance_token = getattr(tokenizer, "end_of_utterance_token", "<end_of_utterance>")
    self.global_image_token = getattr(tokenizer, "global_image_token", "<global-img>")
    self.image_seq_len = image_seq_len
    self.video_token = getattr(tokenizer, "video_token", "<video>")


@lru_cache(maxsize=None)
def no_video_processor_class(name: str) -> type:
    """The processor class ``name`` (one of :data:`NO_VIDEO_PROCESSORS`) without its video processor."""
    import transformers
    from transformers import ProcessorMixin

    if name not in NO_VIDEO_PROCESSORS:
        raise ValueError(f"no video-free variant of {name!r} (known: {', '.join(NO_VIDEO_PROCESSORS)})")
    base = getattr(transformers, name)

    if name == "SmolVLMProcessor":

        def __init__(self, image_processor=None, tokenizer=None, image_seq_len: int = 169, chat_template=None, **kwargs):
            _smolvlm_tokens(self, tokenizer, image_seq_len)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    else:

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            _qwen_tokens(self, tokenizer)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    cls = type(name, (base,), {
        "__init__": __init__,
        "__module__": __name__,
        "__doc__": f"{name} without the video processor (no torchvision needed); images and text only.",
        "video_processor": None,
    })
    return cls
