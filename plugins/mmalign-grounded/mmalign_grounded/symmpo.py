"""SymMPO (arXiv 2506.11712): symmetric image contrast with a margin-consistency term."""
from __future__ import annotations

import torch.nn.functional as F

from mmalign_core.protocols import LossInputs, LossOutput

from .config import SymMPOConfig
from .contrast import CorruptedConditionLoss, image_contrast, reward_metrics


class SymMPOLoss(CorruptedConditionLoss):
    """L = DPO(y+, y- | m) + w_c * -log s(beta*c) + w_mc * (beta*[h(y+|m) - h(y-|m)] - beta*[h(y-|m') - h(y+|m')])^2.

    ``c`` is the symmetric contrast [h(y+|m) - h(y+|m')] + [h(y-|m') - h(y-|m)] ('consistent') or the
    one-sided h(y+|m) - h(y+|m') ('naive'). The rejected answer is always scored under m' (the
    consistency term needs it).
    """

    config: SymMPOConfig

    @property
    def corrupted_with_rejected(self) -> bool:
        return True

    def __call__(self, inputs: LossInputs) -> LossOutput:
        cfg = self.config
        r = self.ratios(inputs)
        assert r.rejected_corrupted is not None
        c = image_contrast(r, cfg.variant)
        dpo = -F.logsigmoid(cfg.beta * (r.chosen - r.rejected)).mean()
        contrast = -F.logsigmoid(cfg.beta * c).mean()
        clean_margin = cfg.beta * (r.chosen - r.rejected)
        swapped_margin = cfg.beta * (r.rejected_corrupted - r.chosen_corrupted)
        consistency = (clean_margin - swapped_margin).pow(2).mean()
        loss = dpo + cfg.contrast_weight * contrast + cfg.consistency_weight * consistency
        metrics = reward_metrics(loss, r, c, cfg.beta, inputs.policy)
        metrics.update({
            "loss/dpo": float(dpo.detach()),
            "loss/contrast": float(contrast.detach()),
            "loss/consistency": float(consistency.detach()),
        })
        return LossOutput(loss=loss, metrics=metrics)
