"""What the image-grounded losses share: the corrupted pairs, log-ratios under both image conditions and
the image-contrast margin in its naive and consistent forms."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from mmalign_core.errors import RunError
from mmalign_core.protocols import LossInputs, PairLogps
from mmalign_core.types import PreferencePair

from .corruption import corrupt_pairs


class MissingConditionError(RunError, ValueError):
    """The loss got no corrupted-image or reference log-probs (its entry's ``requires`` was not honoured)."""


def _seq(side: torch.Tensor, tokens: torch.Tensor, reduction: str) -> torch.Tensor:
    return side / tokens.clamp(min=1) if reduction == "mean" else side


def _ratio(pol: Optional[torch.Tensor], pol_n: Optional[torch.Tensor], ref: Optional[torch.Tensor],
           ref_n: Optional[torch.Tensor], reduction: str, what: str) -> torch.Tensor:
    if pol is None or ref is None or pol_n is None or ref_n is None:
        raise MissingConditionError(f"the loss needs {what} log-probs of the policy and the reference, but got none")
    return _seq(pol, pol_n, reduction) - _seq(ref, ref_n, reduction)


@dataclass
class ConditionRatios:
    """h(y | m) for chosen (w) and rejected (l) answers under the clean image m and the corrupted m'."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_corrupted: torch.Tensor
    rejected_corrupted: Optional[torch.Tensor]


def condition_ratios(inputs: LossInputs, reduction: str, with_rejected_corrupted: bool) -> ConditionRatios:
    pol, ref = inputs.policy, inputs.reference
    cpol, cref = inputs.corrupted, inputs.corrupted_reference
    if ref is None:
        raise MissingConditionError("the loss needs reference log-probs (entry requires 'reference'), but got none")
    if cpol is None or cref is None:
        raise MissingConditionError(
            "the loss needs log-probs under the corrupted image (entry requires 'corrupted_image'), but got none"
        )
    rc = None
    if with_rejected_corrupted:
        rc = _ratio(cpol.rejected, cpol.rejected_tokens, cref.rejected, cref.rejected_tokens, reduction, "corrupted-image rejected")
    return ConditionRatios(
        chosen=_ratio(pol.chosen, pol.chosen_tokens, ref.chosen, ref.chosen_tokens, reduction, "chosen"),
        rejected=_ratio(pol.rejected, pol.rejected_tokens, ref.rejected, ref.rejected_tokens, reduction, "rejected"),
        chosen_corrupted=_ratio(cpol.chosen, cpol.chosen_tokens, cref.chosen, cref.chosen_tokens, reduction, "corrupted-image chosen"),
        rejected_corrupted=rc,
    )


def image_contrast(r: ConditionRatios, variant: str) -> torch.Tensor:
    """c: 'naive' h(y+|m) - h(y+|m'); 'consistent' adds -(h(y-|m) - h(y-|m')), so log Z(m) - log Z(m') cancels."""
    naive = r.chosen - r.chosen_corrupted
    if variant == "naive":
        return naive
    assert r.rejected_corrupted is not None  # consistent losses score the rejected answer under m'
    return naive - (r.rejected - r.rejected_corrupted)


class CorruptedConditionLoss:
    """Base of the losses that score answers under the corrupted image (``CorruptedImageLoss``)."""

    def __init__(self, config: Any):
        self.config = config

    @property
    def corrupted_with_rejected(self) -> bool:
        return getattr(self.config, "variant", "naive") == "consistent"

    def corrupted_pairs(self, pairs: Sequence[PreferencePair]) -> list[PreferencePair]:
        return corrupt_pairs(pairs, self.config.corruption)

    def ratios(self, inputs: LossInputs) -> ConditionRatios:
        return condition_ratios(inputs, self.config.reduction, self.corrupted_with_rejected)


def reward_metrics(loss: torch.Tensor, r: ConditionRatios, c: torch.Tensor, beta: float, policy: PairLogps) -> dict[str, float]:
    """The DPO metrics plus the image-contrast reward margin beta*c and its accuracy."""
    rc, rr, ic = (beta * r.chosen).detach(), (beta * r.rejected).detach(), (beta * c).detach()
    rejected = policy.rejected.detach().mean() if policy.rejected is not None else torch.tensor(float("nan"))
    return {
        "loss": float(loss.detach()),
        "rewards/chosen": float(rc.mean()),
        "rewards/rejected": float(rr.mean()),
        "rewards/margin": float((rc - rr).mean()),
        "rewards/accuracy": float((rc > rr).float().mean()),
        "rewards/chosen_corrupted": float((beta * r.chosen_corrupted).detach().mean()),
        "image/margin": float(ic.mean()),
        "image/accuracy": float((ic > 0).float().mean()),
        "logps/chosen": float(policy.chosen.detach().mean()),
        "logps/rejected": float(rejected),
    }
