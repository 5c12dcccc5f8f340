"""TPO-style token-weighted DPO (Gu et al. 2024, arXiv 2412.14487): visual-anchored token weights."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mmalign_core.protocols import LossInputs, LossOutput, PairLogps

from .config import TPOConfig
from .contrast import CorruptedConditionLoss, MissingConditionError


def _tokens(p: PairLogps | None, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    if p is None:
        raise MissingConditionError("tpo needs policy, reference and corrupted-image log-probs, but one is missing")
    values = getattr(p, f"{side}_token_logps")
    counts = getattr(p, f"{side}_tokens")
    if values is None or counts is None:
        raise MissingConditionError(f"tpo needs per-token {side} log-probs (entry requires 'token_logps'), but got sums only")
    mask = torch.arange(values.shape[1], device=values.device)[None, :] < counts[:, None]
    return values, mask


def _pad(t: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(t, (0, width - t.shape[1])) if t.shape[1] < width else t[:, :width]


def visual_weights(clean: torch.Tensor, corrupted: torch.Tensor, mask: torch.Tensor, alpha: float, max_weight: float) -> torch.Tensor:
    """w_t = clamp(1 + alpha * a_t, 0, max_weight), a_t = log p(t | m) - log p(t | m') (no gradient); 0 on padding."""
    a = (clean - corrupted).detach()
    return torch.where(mask, (1 + alpha * a).clamp(0, max_weight), torch.zeros_like(a))


class TPOLoss(CorruptedConditionLoss):
    """L = -log s(beta * (sum_t w+_t h_t(y+) - sum_t w-_t h_t(y-))), h_t = log pi - log pi_ref of token t."""

    config: TPOConfig

    @property
    def corrupted_with_rejected(self) -> bool:
        return True

    def _side(self, inputs: LossInputs, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        pol, pmask = _tokens(inputs.policy, side)
        ref, _ = _tokens(inputs.reference, side)
        cor, _ = _tokens(inputs.corrupted, side)
        width = pol.shape[1]
        w = visual_weights(pol, _pad(cor, width), pmask, self.config.alpha, self.config.max_weight)
        h = torch.where(pmask, pol - _pad(ref, width), torch.zeros_like(pol))
        return (w * h).sum(-1), w.sum(-1) / pmask.sum(-1).clamp(min=1)

    def __call__(self, inputs: LossInputs) -> LossOutput:
        cfg = self.config
        h_c, wc = self._side(inputs, "chosen")
        h_r, wr = self._side(inputs, "rejected")
        loss = -F.logsigmoid(cfg.beta * (h_c - h_r)).mean()
        rc, rr = (cfg.beta * h_c).detach(), (cfg.beta * h_r).detach()
        return LossOutput(loss=loss, metrics={
            "loss": float(loss.detach()),
            "rewards/chosen": float(rc.mean()),
            "rewards/rejected": float(rr.mean()),
            "rewards/margin": float((rc - rr).mean()),
            "rewards/accuracy": float((rc > rr).float().mean()),
            "weights/chosen": float(wc.mean()),
            "weights/rejected": float(wr.mean()),
        })
