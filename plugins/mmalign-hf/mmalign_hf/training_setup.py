"""Training setup: which parameters train (vision tower frozen, projector learning rate), LoRA adapters, and
the frozen reference policy of a stage.

Public methods a family adapter may override: :meth:`TrainingSetup.freeze_vision`,
:meth:`TrainingSetup.trainable_parameter_groups`, :meth:`TrainingSetup.enable_lora` and
:meth:`TrainingSetup.frozen_reference`.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator, Sequence

from mmalign_core.protocols import PairLogps
from mmalign_core.types import PreferencePair, SFTExample

PROJECTOR_NAMES = ("multi_modal_projector", "connector", "merger")
VISION_NAMES = ("vision_tower", "vision_model", "visual")


class TrainingSetup:
    """Trainable parameters, LoRA and the reference (a part of :class:`~mmalign_hf.model.HFVisionLanguageModel`)."""

    model: Any
    forward_module: Any

    def freeze_vision(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the vision tower's parameters."""
        for name, p in self.model.named_parameters():
            if any(f".{v}." in f".{name}" or name.startswith(v) for v in VISION_NAMES):
                p.requires_grad_(not frozen)

    def trainable_parameter_groups(self, lr: float, projector_lr: float | None) -> list[dict[str, Any]]:
        """Optimizer groups of the trainable parameters: the projector (at ``projector_lr``) and the rest."""
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

    def frozen_reference(self) -> Any:
        """The reference policy for this stage: adapters disabled (LoRA) or a frozen copy (full fine-tuning)."""
        if self.is_peft:
            return AdapterDisabledReference(self)
        # A frozen copy of this very object (same class, so family-specific encoding carries over),
        # sharing the processor but not the weights.
        ref = copy.copy(self)
        ref.model = copy.deepcopy(self.model)
        ref.model.eval()
        for p in ref.model.parameters():
            p.requires_grad_(False)
        ref.forward_module = ref.model
        return ref


class AdapterDisabledReference:
    """Reference forward passes through the policy's own weights with adapters switched off."""

    def __init__(self, policy: Any):
        self._policy = policy

    @contextlib.contextmanager
    def _disabled(self) -> Iterator[None]:
        with self._policy.model.disable_adapter():
            yield

    def pair_logps(self, pairs: Sequence[PreferencePair], *, with_rejected: bool = True, token_logps: bool = False) -> PairLogps:
        with self._disabled():
            if token_logps:
                return self._policy.pair_logps(pairs, with_rejected=with_rejected, token_logps=True)
            return self._policy.pair_logps(pairs, with_rejected=with_rejected)

    def sft_logps(self, examples: Sequence[SFTExample]) -> PairLogps:
        with self._disabled():
            return self._policy.sft_logps(examples)
