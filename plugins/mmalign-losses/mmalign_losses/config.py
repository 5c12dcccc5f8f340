"""Configs of the losses (no torch import)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmalign_core import ComponentConfig


class DPOConfig(ComponentConfig):
    """Direct Preference Optimization: -log sigmoid(beta * (h(y+) - h(y-))), h = log pi - log pi_ref."""

    beta: float = Field(0.1, gt=0, description="Inverse temperature beta; the paper's grid is {0.05, 0.1, 0.2, 0.5}.")
    reduction: Literal["sum", "mean"] = Field(
        "sum", description="How token log-probs become a sequence log-prob: 'sum' (DPO/TRL default) or per-token 'mean'."
    )


class SFTConfig(ComponentConfig):
    """Negative log-likelihood of the response tokens."""

    average: Literal["token", "sequence"] = Field(
        "token", description="'token': mean NLL over all response tokens of the batch; 'sequence': mean of per-sequence summed NLL."
    )
