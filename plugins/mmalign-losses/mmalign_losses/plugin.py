"""Registration of the losses (imports nothing heavy)."""
from __future__ import annotations

from mmalign_core import LossEntry, hookimpl

from .config import DPOConfig, SFTConfig

PREFERENCE_METRICS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margin",
    "rewards/accuracy",
    "logps/chosen",
    "logps/rejected",
)


@hookimpl
def mmalign_losses() -> list[LossEntry]:
    return [
        LossEntry(
            name="dpo",
            summary="DPO (sigmoid) against a frozen reference; sum of response-token log-probs by default.",
            config=DPOConfig,
            factory="mmalign_losses.dpo:DPOLoss",
            requires={"reference", "rejected"},
            metrics=PREFERENCE_METRICS,
        ),
        LossEntry(
            name="sft",
            summary="Supervised fine-tuning: negative log-likelihood of the response tokens.",
            config=SFTConfig,
            factory="mmalign_losses.sft:SFTLoss",
            metrics=("loss", "tokens"),
        ),
    ]
