"""Training setup by module name: a family names its language model, projector and vision tower, and the
vision tower is frozen, the projector gets its own learning rate and LoRA targets the language model by those
names (the generic :class:`~mmalign_hf.training_setup.TrainingSetup` matches substrings instead)."""
from __future__ import annotations

import re
import warnings
from typing import Any, Sequence

LORA_LAYERS = "(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


class FamilyTrainingSetup:
    """Overrides of the training-setup methods (a part of :class:`~mmalign_hf.family.HFFamilyModel`)."""

    model: Any
    # Last component of module paths (matched on whole components).
    language_model_names: tuple[str, ...] = ("language_model",)
    projector_names: tuple[str, ...] = ("multi_modal_projector",)
    vision_names: tuple[str, ...] = ("vision_tower", "vision_model", "visual")

    def _module_roots(self, names: tuple[str, ...]) -> list[str]:
        return [n for n, _ in self.model.named_modules() if n and n.rsplit(".", 1)[-1] in names]

    @staticmethod
    def _under(name: str, roots: Sequence[str]) -> bool:
        return any(name == r or name.startswith(r + ".") for r in roots)

    def projector_parameter_names(self) -> list[str]:
        roots = self._module_roots(self.projector_names)
        return [n for n, _ in self.model.named_parameters() if self._under(n, roots)]

    def vision_parameter_names(self) -> list[str]:
        vroots = self._module_roots(self.vision_names)
        proots = self._module_roots(self.projector_names)
        return [n for n, _ in self.model.named_parameters() if self._under(n, vroots) and not self._under(n, proots)]

    def freeze_vision(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the vision tower; the projector is never part of it, even when nested in it."""
        vision = set(self.vision_parameter_names())
        for name, p in self.model.named_parameters():
            if name in vision:
                p.requires_grad_(not frozen)

    def trainable_parameter_groups(self, lr: float, projector_lr: float | None) -> list[dict[str, Any]]:
        proj_names = set(self.projector_parameter_names())
        proj, rest = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (proj if name in proj_names else rest).append(p)
        groups = []
        if rest:
            groups.append({"params": rest, "lr": lr, "name": "language_model"})
        if proj:
            groups.append({"params": proj, "lr": projector_lr if projector_lr is not None else lr, "name": "projector"})
        return groups

    def default_lora_targets(self) -> str:
        """The LoRA regex matching only the language model's attention and MLP projections."""
        lm = "|".join(re.escape(n) for n in self.language_model_names)
        return rf".*\.(?:{lm})\..*\.{LORA_LAYERS}$"

    def enable_lora(self, r: int, alpha: float, dropout: float, target_modules: str) -> None:
        """LoRA through peft. The default regex of :class:`~mmalign_core.spec_models.LoraSettings` is
        rewritten to this family's language-model module name; the projector is trained in full and
        saved with the adapter (``modules_to_save``)."""
        from mmalign_core.spec_models import LoraSettings

        if target_modules == LoraSettings.model_fields["target_modules"].default:
            target_modules = self.default_lora_targets()
        super().enable_lora(r, alpha, dropout, target_modules)
        vroots = self._module_roots(self.vision_names)
        proots = self._module_roots(self.projector_names)
        in_vision = [n for n, _ in self.model.named_modules()
                     if n.endswith(".lora_A") and self._under(n, vroots) and not self._under(n, proots)]
        if in_vision:
            warnings.warn(f"LoRA target_modules {target_modules!r} put adapters in the vision tower "
                          f"({len(in_vision)} modules, e.g. {in_vision[0]})", stacklevel=2)

    def enable_gradient_checkpointing(self) -> None:
        m = self.base_model()
        kwargs = {"use_reentrant": False}
        if hasattr(m, "activation_checkpointing_enable"):
            m.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:  # transformers < 5.2x
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        m.config.use_cache = False
