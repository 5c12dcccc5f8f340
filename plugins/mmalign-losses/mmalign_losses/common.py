"""Shared pieces of the preference losses."""
from __future__ import annotations

from typing import Any, Optional

import torch

from mmalign_core.protocols import LossInputs, LossOutput, PairLogps

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


def extra_log_ratios(inputs: LossInputs, reduction: str) -> list[torch.Tensor]:
    """h(y~-) for every extra rejected answer (``PairLogps.extra_rejected``); empty when the pairs carry none."""
    pol, ref = inputs.policy, inputs.reference
    n = len(pol.extra_rejected)
    if n == 0:
        return []
    if ref is None or len(ref.extra_rejected) != n:
        have = 0 if ref is None else len(ref.extra_rejected)
        raise ValueError(f"the policy has {n} extra rejected answer(s) per pair but the reference has {have}")
    if len(pol.extra_rejected_tokens) != n or len(ref.extra_rejected_tokens) != n:
        raise ValueError("extra_rejected_tokens must hold one tensor per extra rejected answer")
    return [
        sequence_logps(pol.extra_rejected[k], pol.extra_rejected_tokens[k], reduction)
        - sequence_logps(ref.extra_rejected[k], ref.extra_rejected_tokens[k], reduction)
        for k in range(n)
    ]


def token_mean_nll(policy: PairLogps) -> torch.Tensor:
    """Negative log-likelihood of the chosen answers, averaged over all their tokens in the batch."""
    return -policy.chosen.sum() / policy.chosen_tokens.sum().clamp(min=1).to(policy.chosen.dtype)


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


class PreferenceLoss:
    """Base of the pairwise preference losses: L = mean_i f(h_c[i], h_r[i]) (+ alpha * NLL).

    Subclasses implement :meth:`pair_losses` and may override :meth:`reduction`.
    """

    def __init__(self, config: Any):
        self.config = config

    @property
    def reduction(self) -> str:
        return self.config.reduction

    def pair_losses(self, h_c: torch.Tensor, h_r: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, inputs: LossInputs) -> LossOutput:
        h_c, h_r = log_ratios(inputs, self.reduction)
        return self.finish(self.pair_losses(h_c, h_r).mean(), h_c, h_r, inputs)

    def finish(
        self,
        preference_loss: torch.Tensor,
        h_c: torch.Tensor,
        h_r: torch.Tensor,
        inputs: LossInputs,
        extra_metrics: Optional[dict[str, float]] = None,
    ) -> LossOutput:
        """Add the NLL term and collect the metrics."""
        nll = token_mean_nll(inputs.policy)
        alpha = self.config.nll_alpha
        loss = preference_loss + alpha * nll if alpha else preference_loss
        metrics = preference_metrics(loss, h_c, h_r, self.config.beta, inputs)
        metrics["nll"] = float(nll.detach())
        if extra_metrics:
            metrics.update(extra_metrics)
        return LossOutput(loss=loss, metrics=metrics)
