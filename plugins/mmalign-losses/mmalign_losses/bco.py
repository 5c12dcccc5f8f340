"""BCO-pair (Jung et al. 2024; TRL's ``loss_type='bco_pair'``): rewards shifted by a running mean delta.

L = -log s(beta*h(y+) - delta) - log s(-(beta*h(y-) - delta)), delta the running mean of the batch-mean
rewards mean(cat(beta*h(y+), beta*h(y-))) of every call so far, this one included (TRL's RunningMoments
fed one batch mean per call). delta is state: it travels in checkpoints (``state_dict``).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from mmalign_core.protocols import LossInputs, LossOutput

from .common import PreferenceLoss, log_ratios
from .config import BCOPairConfig


class BCOPairLoss(PreferenceLoss):
    """The pairwise binary classifier loss with a running reward shift delta (MPO's preference-quality term)."""

    config: BCOPairConfig

    def __init__(self, config: BCOPairConfig):
        super().__init__(config)
        self.mean = torch.zeros((), dtype=torch.float64)
        self.count = 0

    @property
    def delta(self) -> float:
        return float(self.mean)

    def _update(self, batch_mean: torch.Tensor) -> None:
        self.count += 1
        self.mean = self.mean + (batch_mean.to(torch.float64) - self.mean) / self.count

    def __call__(self, inputs: LossInputs) -> LossOutput:
        beta = self.config.beta
        h_c, h_r = log_ratios(inputs, self.reduction)
        r_c, r_r = beta * h_c, beta * h_r
        self._update(torch.cat([r_c, r_r]).mean().detach().cpu())
        delta = self.mean.to(device=r_c.device, dtype=r_c.dtype)
        loss = (-F.logsigmoid(r_c - delta) - F.logsigmoid(-(r_r - delta))).mean()
        return self.finish(loss, h_c, h_r, inputs, {"delta": self.delta})

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.clone(), "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mean = state["mean"].clone().to(torch.float64)
        self.count = int(state["count"])
