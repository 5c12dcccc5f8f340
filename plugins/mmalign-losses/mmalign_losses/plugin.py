"""Registration of the losses (imports nothing heavy)."""
from __future__ import annotations

from mmalign_core import LossEntry, hookimpl

from .config import AvgDPOConfig, BCOPairConfig, DPOConfig, IPOConfig, MPOConfig, RobustDPOConfig, SFTConfig, SLiCConfig, WeightedSumConfig

PREFERENCE_METRICS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margin",
    "rewards/accuracy",
    "logps/chosen",
    "logps/rejected",
    "nll",
)
PREFERENCE_REQUIRES = frozenset({"reference", "rejected"})


@hookimpl
def mmalign_losses() -> list[LossEntry]:
    return [
        LossEntry(
            name="dpo",
            summary="DPO (sigmoid) against a frozen reference; sum of response-token log-probs by default.",
            config=DPOConfig,
            factory="mmalign_losses.dpo:DPOLoss",
            requires=PREFERENCE_REQUIRES,
            metrics=PREFERENCE_METRICS,
        ),
        LossEntry(
            name="ipo",
            summary="IPO: squared loss (beta*rho - 1)^2 (GPO form) or TRL's (rho_mean - 1/(2 beta))^2.",
            config=IPOConfig,
            factory="mmalign_losses.gpo:IPOLoss",
            requires=PREFERENCE_REQUIRES,
            metrics=PREFERENCE_METRICS,
        ),
        LossEntry(
            name="slic",
            summary="SLiC calibration hinge max(0, 1 - beta*rho) (= TRL's hinge loss).",
            config=SLiCConfig,
            factory="mmalign_losses.gpo:SLiCLoss",
            requires=PREFERENCE_REQUIRES,
            metrics=PREFERENCE_METRICS,
        ),
        LossEntry(
            name="robust-dpo",
            summary="DPO with label smoothing for noisy preferences: conservative (cDPO) or unbiased robust (rDPO) form.",
            config=RobustDPOConfig,
            factory="mmalign_losses.dpo:RobustDPOLoss",
            requires=PREFERENCE_REQUIRES,
            metrics=PREFERENCE_METRICS,
        ),
        LossEntry(
            name="avg-dpo",
            summary="Avg-DPO (paper Eq. 5): gamma*DPO(y+, y-) + (1-gamma)*DPO(y+, extra rejected answer).",
            config=AvgDPOConfig,
            factory="mmalign_losses.dpo:AvgDPOLoss",
            requires=PREFERENCE_REQUIRES,
            metrics=PREFERENCE_METRICS,
        ),
        LossEntry(
            name="bco-pair",
            summary="BCO-pair (TRL bco_pair): -log s(beta*h+ - delta) - log s(-(beta*h- - delta)), delta a running reward mean (saved in checkpoints).",
            config=BCOPairConfig,
            factory="mmalign_losses.bco:BCOPairLoss",
            requires=PREFERENCE_REQUIRES,
            metrics=PREFERENCE_METRICS + ("delta",),
        ),
        LossEntry(
            name="mpo",
            summary="MPO preset of the weighted sum (InternVL): 0.8 DPO + 0.2 BCO-pair + 1.0 SFT; resumes with BCO's running shift.",
            config=MPOConfig,
            factory="mmalign_losses.weighted:WeightedSumLoss",
            requires=PREFERENCE_REQUIRES,
            metrics=("loss",),
        ),
        LossEntry(
            name="weighted-sum",
            summary="A weighted sum of registered losses (MPO-style); metrics prefixed per term.",
            config=WeightedSumConfig,
            factory="mmalign_losses.weighted:WeightedSumLoss",
            # Entries are static: declare what the most demanding term can need (every loss needs at most these).
            requires=PREFERENCE_REQUIRES,
            metrics=("loss",),
        ),
        LossEntry(
            name="sft",
            summary="Supervised fine-tuning: negative log-likelihood of the response tokens.",
            config=SFTConfig,
            factory="mmalign_losses.sft:SFTLoss",
            metrics=("loss", "tokens"),
        ),
    ]
