"""Settings of the margin-dpo loss (pydantic only: no torch here)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmalign_core import ComponentConfig


class MarginDPOConfig(ComponentConfig):
    """DPO that asks the chosen answer to win by at least a target reward margin."""

    beta: float = Field(0.1, gt=0, description="Inverse temperature beta, as in DPO.")
    margin: float = Field(
        1.0, ge=0, description="Target reward margin gamma: the loss keeps pushing until beta * (h(y+) - h(y-)) exceeds it; 0 is plain DPO."
    )
    reduction: Literal["sum", "mean"] = Field(
        "sum", description="How token log-probs become a sequence log-prob: 'sum' or per-token 'mean'."
    )
