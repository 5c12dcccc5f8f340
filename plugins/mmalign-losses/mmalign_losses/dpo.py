"""DPO (Rafailov et al. 2023; the paper's Eq. 3), its label-smoothed forms and Avg-DPO (the paper's Eq. 5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mmalign_core.errors import RunError
from mmalign_core.protocols import LossInputs, LossOutput

from .common import PreferenceLoss, extra_log_ratios, log_ratios
from .config import AvgDPOConfig, DPOConfig, RobustDPOConfig


class MissingExtraRejectedError(RunError, ValueError):
    """``avg-dpo`` got a batch without extra rejected answers while ``missing_extra`` is ``'error'``.

    A :class:`~mmalign_core.errors.RunError`, so the CLI prints the message without a traceback.
    """


def dpo_losses(h_c: torch.Tensor, h_r: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-pair -log sigmoid(beta * (h_c - h_r))."""
    return -F.logsigmoid(beta * (h_c - h_r))


class DPOLoss(PreferenceLoss):
    """L = -mean log sigmoid(beta * (h(y+) - h(y-)))  [+ alpha * NLL(y+)]."""

    config: DPOConfig

    def pair_losses(self, h_c: torch.Tensor, h_r: torch.Tensor) -> torch.Tensor:
        return dpo_losses(h_c, h_r, self.config.beta)


class RobustDPOLoss(PreferenceLoss):
    """DPO under label noise eps.

    - ``conservative`` (cDPO, Mitchell 2023; TRL < 0.20 ``sigmoid`` with ``label_smoothing``):
      (1-eps)*(-log s(u)) + eps*(-log s(-u)), u = beta*rho.
    - ``robust`` (rDPO, Chowdhury et al. 2024; TRL ``robust``):
      [(1-eps)*(-log s(u)) - eps*(-log s(-u))] / (1-2*eps).
    """

    config: RobustDPOConfig

    def pair_losses(self, h_c: torch.Tensor, h_r: torch.Tensor) -> torch.Tensor:
        eps = self.config.label_smoothing
        u = self.config.beta * (h_c - h_r)
        keep, flip = -F.logsigmoid(u), -F.logsigmoid(-u)
        if self.config.form == "robust":
            return ((1 - eps) * keep - eps * flip) / (1 - 2 * eps)
        return (1 - eps) * keep + eps * flip


class AvgDPOLoss(PreferenceLoss):
    """gamma * DPO(y+, y-) + (1 - gamma) * DPO(y+, y~-): y- is ``rejected``, y~- the ``extra_rejected`` answer.

    With several extra rejected answers the second term averages DPO over them
    (identical to Eq. 5 for one). Pairs without an extra rejected answer raise,
    unless ``missing_extra='dpo'`` (then plain DPO on (y+, y-) for that batch).
    """

    config: AvgDPOConfig

    def __call__(self, inputs: LossInputs) -> LossOutput:
        cfg = self.config
        h_c, h_r = log_ratios(inputs, cfg.reduction)
        extras = extra_log_ratios(inputs, cfg.reduction)
        main = dpo_losses(h_c, h_r, cfg.beta).mean()
        if not extras:
            if cfg.missing_extra == "error":
                raise MissingExtraRejectedError(
                    "avg-dpo needs a second rejected answer per pair (PreferencePair.extra_rejected, e.g. from BDHS or "
                    "POVID-style distortion), but this batch has none; use a source that fills extra_rejected, train "
                    "with 'dpo', or set missing_extra='dpo' to fall back to plain DPO on such batches"
                )
            return self.finish(main, h_c, h_r, inputs)
        extra = torch.stack([dpo_losses(h_c, h_x, cfg.beta) for h_x in extras]).mean(0).mean()
        loss = cfg.gamma * main + (1 - cfg.gamma) * extra
        rc = (cfg.beta * h_c).detach()
        rx = torch.stack([cfg.beta * h_x.detach() for h_x in extras])  # [K, B]
        metrics = {
            "rewards/extra_rejected": float(rx.mean()),
            "rewards/extra_margin": float((rc - rx).mean()),
            "rewards/extra_accuracy": float((rc > rx).float().mean()),
            "logps/extra_rejected": float(torch.stack([t.detach() for t in inputs.policy.extra_rejected]).mean()),
            "loss/rejected": float(main.detach()),
            "loss/extra_rejected": float(extra.detach()),
        }
        return self.finish(loss, h_c, h_r, inputs, metrics)
