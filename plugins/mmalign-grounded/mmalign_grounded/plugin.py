"""Registration of the image-grounded losses (imports nothing heavy)."""
from __future__ import annotations

from mmalign_core import LossEntry, SourceEntry, hookimpl

from .config import CHiPConfig, DropoutNTPConfig, MDPOConfig, SymMPOConfig, TPOConfig

#: Every loss here scores answers under a corrupted image too (mmalign_core.protocols.CorruptedImageLoss).
CONTRAST_REQUIRES = frozenset({"reference", "rejected", "corrupted_image"})
DPO_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy")
CONTRAST_METRICS = DPO_METRICS + ("rewards/chosen_corrupted", "image/margin", "image/accuracy", "logps/chosen", "logps/rejected", "loss/dpo")


@hookimpl
def mmalign_losses() -> list[LossEntry]:
    return [
        LossEntry(
            name="mdpo",
            summary="mDPO: DPO + conditional preference of y+ under the image over a corrupted image + anchor (chosen reward > delta).",
            config=MDPOConfig,
            factory="mmalign_grounded.mdpo:MDPOLoss",
            requires=CONTRAST_REQUIRES,
            metrics=CONTRAST_METRICS + ("loss/image", "loss/anchor"),
        ),
        LossEntry(
            name="chip",
            summary="CHiP-style: response DPO + visual preference of y+ under the clean over the noised image.",
            config=CHiPConfig,
            factory="mmalign_grounded.chip:CHiPLoss",
            requires=CONTRAST_REQUIRES,
            metrics=CONTRAST_METRICS + ("loss/visual",),
        ),
        LossEntry(
            name="tpo",
            summary="TPO-style token-weighted DPO: each token weighted by log p(t|image) - log p(t|corrupted image).",
            config=TPOConfig,
            factory="mmalign_grounded.tpo:TPOLoss",
            requires=CONTRAST_REQUIRES | {"token_logps"},
            metrics=DPO_METRICS + ("weights/chosen", "weights/rejected"),
        ),
        LossEntry(
            name="symmpo",
            summary="SymMPO: response DPO + symmetric two-image contrast (partition functions cancel) + margin consistency.",
            config=SymMPOConfig,
            factory="mmalign_grounded.symmpo:SymMPOLoss",
            requires=CONTRAST_REQUIRES,
            metrics=CONTRAST_METRICS + ("loss/contrast", "loss/consistency"),
        ),
    ]


@hookimpl
def mmalign_preference_sources() -> list[SourceEntry]:
    return [
        SourceEntry(
            name="dropout-ntp",
            summary="Dropout-NTP (InternVL MPO): rejected = the stage-start model's completion of the chosen answer's first half with every image token hidden (BDHS's attention restriction).",
            config=DropoutNTPConfig,
            factory="mmalign_grounded.dropout_ntp:make_source",
            capabilities={"pairs"},
            requires={"generate"},
        ),
    ]
