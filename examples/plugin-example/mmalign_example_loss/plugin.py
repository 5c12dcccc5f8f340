"""Registration of margin-dpo: the only module with hook implementations (imports nothing heavy)."""
from __future__ import annotations

from mmalign_core import LossEntry, hookimpl

from .config import MarginDPOConfig


@hookimpl
def mmalign_losses() -> list[LossEntry]:
    return [
        LossEntry(
            name="margin-dpo",
            summary="DPO with a target reward margin: -log sigmoid(beta * (h(y+) - h(y-)) - margin).",
            config=MarginDPOConfig,
            factory="mmalign_example_loss.loss:MarginDPOLoss",
            requires={"reference", "rejected"},
            metrics=("loss", "rewards/margin", "rewards/accuracy", "margin/satisfied"),
        )
    ]
