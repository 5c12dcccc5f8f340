"""The DPO loss (Rafailov et al. 2023; the paper's Eq. 3)."""
from __future__ import annotations

import torch.nn.functional as F

from mmalign_core.protocols import LossInputs, LossOutput

from .common import log_ratios, preference_metrics
from .config import DPOConfig


class DPOLoss:
    """L = -mean log sigmoid(beta * (h(y+) - h(y-)))."""

    def __init__(self, config: DPOConfig):
        self.config = config

    def __call__(self, inputs: LossInputs) -> LossOutput:
        beta = self.config.beta
        h_c, h_r = log_ratios(inputs, self.config.reduction)
        losses = -F.logsigmoid(beta * (h_c - h_r))
        loss = losses.mean()
        return LossOutput(loss=loss, metrics=preference_metrics(loss, h_c, h_r, beta, inputs))
