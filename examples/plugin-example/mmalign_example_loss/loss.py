"""The margin-dpo loss (imports torch; loaded only when a run builds the loss)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mmalign_core.protocols import LossInputs, LossOutput

from .config import MarginDPOConfig


def _sequence(logps: torch.Tensor, tokens: torch.Tensor, reduction: str) -> torch.Tensor:
    return logps / tokens.clamp(min=1) if reduction == "mean" else logps


class MarginDPOLoss:
    """L = -mean log sigmoid(beta * (h(y+) - h(y-)) - margin), with h = log pi - log pi_ref."""

    def __init__(self, config: MarginDPOConfig):
        self.config = config

    def __call__(self, inputs: LossInputs) -> LossOutput:
        cfg = self.config
        pol, ref = inputs.policy, inputs.reference
        if ref is None or pol.rejected is None or ref.rejected is None:
            raise ValueError("margin-dpo needs rejected answers and reference log-probs")
        h_chosen = _sequence(pol.chosen, pol.chosen_tokens, cfg.reduction) - _sequence(ref.chosen, ref.chosen_tokens, cfg.reduction)
        h_rejected = _sequence(pol.rejected, pol.rejected_tokens, cfg.reduction) - _sequence(
            ref.rejected, ref.rejected_tokens, cfg.reduction
        )
        reward_margin = cfg.beta * (h_chosen - h_rejected)
        loss = -F.logsigmoid(reward_margin - cfg.margin).mean()
        margin = reward_margin.detach()
        return LossOutput(
            loss=loss,
            metrics={
                "loss": float(loss.detach()),
                "rewards/margin": float(margin.mean()),
                "rewards/accuracy": float((margin > 0).float().mean()),
                "margin/satisfied": float((margin > cfg.margin).float().mean()),
            },
        )
