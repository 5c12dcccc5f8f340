"""CHiP-style visual preference (Fu et al. 2025, arXiv 2501.16629): response DPO + the image-level visual term."""
from __future__ import annotations

import torch.nn.functional as F

from mmalign_core.protocols import LossInputs, LossOutput

from .config import CHiPConfig
from .contrast import CorruptedConditionLoss, image_contrast, reward_metrics


class CHiPLoss(CorruptedConditionLoss):
    """L = -log s(beta*(h(y+|m) - h(y-|m))) + lambda * -log s(beta*c), m' the noised image."""

    config: CHiPConfig

    def __call__(self, inputs: LossInputs) -> LossOutput:
        cfg = self.config
        r = self.ratios(inputs)
        c = image_contrast(r, cfg.variant)
        dpo = -F.logsigmoid(cfg.beta * (r.chosen - r.rejected)).mean()
        visual = -F.logsigmoid(cfg.beta * c).mean()
        loss = dpo + cfg.visual_weight * visual
        metrics = reward_metrics(loss, r, c, cfg.beta, inputs.policy)
        metrics.update({"loss/dpo": float(dpo.detach()), "loss/visual": float(visual.detach())})
        return LossOutput(loss=loss, metrics=metrics)
