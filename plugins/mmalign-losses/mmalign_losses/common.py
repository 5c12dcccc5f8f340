"""Shared pieces of the preference losses."""
from __future__ import annotations

import torch

from mmalign_core.protocols import LossInputs, PairLogps


def sequence_logps(side: torch.Tensor, tokens: torch.Tensor, reduction: str) -> torch.Tensor:
    """Turn summed token log-probs into the sequence score the loss uses."""
    if reduction == "mean":
        return side / tokens.clamp(min=1)
    return side


def log_ratios(inputs: LossInputs, reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """h(y+) and h(y-): policy minus reference log-probs of chosen and rejected."""
    pol: PairLogps = inputs.policy
    ref = inputs.reference
    if ref is None or pol.rejected is None or ref.rejected is None:
        raise ValueError("a preference loss needs rejected answers and reference log-probs")
    h_c = sequence_logps(pol.chosen, pol.chosen_tokens, reduction) - sequence_logps(ref.chosen, ref.chosen_tokens, reduction)
    h_r = sequence_logps(pol.rejected, pol.rejected_tokens, reduction) - sequence_logps(ref.rejected, ref.rejected_tokens, reduction)
    return h_c, h_r


def preference_metrics(loss: torch.Tensor, h_c: torch.Tensor, h_r: torch.Tensor, beta: float, inputs: LossInputs) -> dict[str, float]:
    """Implicit rewards (beta * h), their margin and accuracy, and the raw policy log-probs."""
    rc = (beta * h_c).detach()
    rr = (beta * h_r).detach()
    return {
        "loss": float(loss.detach()),
        "rewards/chosen": float(rc.mean()),
        "rewards/rejected": float(rr.mean()),
        "rewards/margin": float((rc - rr).mean()),
        "rewards/accuracy": float((rc > rr).float().mean()),
        "logps/chosen": float(inputs.policy.chosen.detach().mean()),
        "logps/rejected": float(inputs.policy.rejected.detach().mean()),
    }
