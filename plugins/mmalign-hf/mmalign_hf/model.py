"""A Hugging Face vision-language model behind the :class:`~mmalign_core.protocols.AlignableModel` interface.

One class serves every family that loads through ``AutoModelForImageTextToText`` and ``AutoProcessor``:
the processor expands image placeholders and prepares pixel tensors; this class appends answer tokens,
pads, masks the prompt out of the loss, and sums response-token log-probs. It is composed of one part per
responsibility, each in its own module:

=============================================  ==============================================================
part                                           responsibility
=============================================  ==============================================================
:class:`~mmalign_hf.encoding.PromptEncoding`   prompts through the processor, answers through the tokenizer
                                               (both cached), padding, tensors to the device
:class:`~mmalign_hf.scoring.ResponseScoring`   response log-prob sums: pairs, SFT examples, continuations
:class:`~mmalign_hf.prefix_sharing.PrefixSharing`  a pair's answers after one copy of its prompt
:class:`~mmalign_hf.prompt_pass.PromptPassReuse`   sampling's prompt pass reused by the training pass
:class:`~mmalign_hf.generation.Generation`     answers through the lean loop (:mod:`mmalign_hf.sampling`) or
                                               ``generate``
:class:`~mmalign_hf.training_setup.TrainingSetup`  trainable parameters, LoRA, the frozen reference
:class:`~mmalign_hf.persistence.Persistence`   save, load, fingerprint
=============================================  ==============================================================

Family adapters (:mod:`mmalign_hf.family`, :mod:`mmalign_hf.families`) subclass it and override public
methods only: ``format_prompt``, ``prompt_batch``, ``encode``, ``check_length``, ``extra_token_inputs``,
``pair_logps``, ``generation_inputs``, ``banned_token_ids``, ``stop_ids``, ``freeze_vision``,
``trainable_parameter_groups``, ``enable_lora``, ``frozen_reference``, ``save_pretrained``, and the class
attributes naming the model types a fast path is verified for (``SHARED_VISION_MODEL_TYPES``, ...).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from .encoding import EncodedBatch, PromptEncoding, SequenceTooLong
from .generation import Generation
from .persistence import Persistence
from .prefix_sharing import PrefixSharing
from .prompt_pass import PromptPassReuse
from .scoring import ResponseScoring
from .training_setup import PROJECTOR_NAMES, VISION_NAMES, AdapterDisabledReference, TrainingSetup


class HFVisionLanguageModel(PromptEncoding, ResponseScoring, PrefixSharing, PromptPassReuse, Generation, TrainingSetup, Persistence):
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
        cfg = self.base_config()
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

    def base_model(self) -> Any:
        """The transformers model (under its peft wrapper, if any)."""
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    def base_config(self) -> Any:
        """The transformers model's config."""
        return self.base_model().config

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


__all__ = ["PROJECTOR_NAMES", "VISION_NAMES", "AdapterDisabledReference", "EncodedBatch", "HFVisionLanguageModel",
           "SequenceTooLong"]
