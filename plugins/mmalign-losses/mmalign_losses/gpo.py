"""IPO and SLiC in the GPO view (Tang et al. 2024): loss = f(beta * rho), with TRL's parametrisations as options."""
from __future__ import annotations

import torch

from .common import PreferenceLoss
from .config import IPOConfig, SLiCConfig


class IPOLoss(PreferenceLoss):
    """IPO (Azar et al. 2023).

    - ``gpo``: (beta*rho - 1)^2 (= Azar's (rho - 1/(2 tau))^2 up to the factor beta^2, tau = beta/2).
    - ``trl``: (rho - 1/(2*beta))^2 with rho on per-token mean log-probs (TRL ``loss_type='ipo'``).
    """

    config: IPOConfig

    @property
    def reduction(self) -> str:
        return self.config.resolved_reduction()

    def pair_losses(self, h_c: torch.Tensor, h_r: torch.Tensor) -> torch.Tensor:
        beta = self.config.beta
        rho = h_c - h_r
        if self.config.parametrisation == "trl":
            return (rho - 1 / (2 * beta)) ** 2
        return (beta * rho - 1) ** 2


class SLiCLoss(PreferenceLoss):
    """SLiC hinge: max(0, 1 - beta*rho) (GPO form; TRL ``loss_type='hinge'`` is the same function)."""

    config: SLiCConfig

    def pair_losses(self, h_c: torch.Tensor, h_r: torch.Tensor) -> torch.Tensor:
        return torch.relu(1 - self.config.beta * (h_c - h_r))
