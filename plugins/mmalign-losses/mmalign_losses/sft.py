"""The supervised objective."""
from __future__ import annotations

from mmalign_core.protocols import LossInputs, LossOutput

from .config import SFTConfig


class SFTLoss:
    """Negative log-likelihood of the response (chosen) tokens."""

    def __init__(self, config: SFTConfig):
        self.config = config

    def __call__(self, inputs: LossInputs) -> LossOutput:
        pol = inputs.policy
        if self.config.average == "token":
            loss = -pol.chosen.sum() / pol.chosen_tokens.sum().clamp(min=1)
        else:
            loss = -pol.chosen.mean()
        return LossOutput(loss=loss, metrics={"loss": float(loss.detach()), "tokens": float(pol.chosen_tokens.sum())})
