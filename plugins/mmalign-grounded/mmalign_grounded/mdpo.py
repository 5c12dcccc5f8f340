"""mDPO (Wang et al. 2024, arXiv 2406.11839)."""
from __future__ import annotations

import torch.nn.functional as F

from mmalign_core.protocols import LossInputs, LossOutput

from .config import MDPOConfig
from .contrast import CorruptedConditionLoss, image_contrast, reward_metrics


class MDPOLoss(CorruptedConditionLoss):
    """L = -log s(beta*(h(y+|m) - h(y-|m))) + w_img * -log s(beta*c) + w_anc * -log s(beta*h(y+|m) - delta)."""

    config: MDPOConfig

    def __call__(self, inputs: LossInputs) -> LossOutput:
        cfg = self.config
        r = self.ratios(inputs)
        c = image_contrast(r, cfg.variant)
        dpo = -F.logsigmoid(cfg.beta * (r.chosen - r.rejected)).mean()
        image = -F.logsigmoid(cfg.beta * c).mean()
        anchor = -F.logsigmoid(cfg.beta * r.chosen - cfg.anchor_delta).mean()
        loss = dpo + cfg.image_weight * image + cfg.anchor_weight * anchor
        metrics = reward_metrics(loss, r, c, cfg.beta, inputs.policy)
        metrics.update({"loss/dpo": float(dpo.detach()), "loss/image": float(image.detach()), "loss/anchor": float(anchor.detach())})
        return LossOutput(loss=loss, metrics=metrics)
