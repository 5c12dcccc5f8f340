"""The estimators of the RL algorithms, as plain tensor functions (no model, no state but the KL controllers).

Shapes: ``N`` responses, ``T`` response tokens (right-padded); ``mask`` is ``[N, T]`` with 1 on real tokens.
Each function is tested against an independent computation on fixed inputs (``tests/rl/test_estimators.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


# ------------------------------------------------------------------------------------------- KL
def kl_per_token(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1, k2, k3).

    With ``d = log pi - log pi_ref`` at the sampled token: ``k1 = d``; ``k2 = d^2 / 2``;
    ``k3 = exp(-d) - 1 + d`` (unbiased and non-negative).
    """
    d = logps - ref_logps
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        return torch.exp(-d) - 1.0 + d
    raise ValueError(f"unknown KL estimator {estimator!r}; use 'k1', 'k2' or 'k3'")


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row sum over real tokens (``[N]``)."""
    return (x * mask).sum(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over all real tokens of the batch (a scalar)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Standardise ``x`` over the real tokens (biased variance, as TRL's legacy PPO); padding stays 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


# ------------------------------------------------------------------------------ group baselines
def group_advantages(rewards: torch.Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO: ``(r - mean_group) / (std_group + eps)``; ``scale=False`` keeps ``r - mean_group`` (Dr-GRPO).

    ``rewards`` is ``[G * group_size]`` with each group's responses adjacent; std is the unbiased one
    (as TRL's ``GRPOTrainer``).
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    g = rewards.view(-1, group_size)
    centred = g - g.mean(dim=1, keepdim=True)
    if scale:
        std = g.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(g[:, :1])
        centred = centred / (std + eps)
    return centred.reshape(-1)


def leave_one_out_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """RLOO: each response's reward minus the mean reward of the other ``k - 1`` responses to its prompt."""
    if k < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    if rewards.numel() % k:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {k}")
    g = rewards.view(-1, k)
    baseline = (g.sum(dim=1, keepdim=True) - g) / (k - 1)
    return (g - baseline).reshape(-1)


def z_normalise(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` over the batch (unbiased std)."""
    if x.numel() < 2:
        return x - x.mean()
    return (x - x.mean()) / (x.std() + eps)


# -------------------------------------------------------------------------------------- PPO parts
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each response's real tokens.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` (``V`` after the last real token is 0) and
    ``A_t = delta_t + gamma * lam * A_{t+1}``; returns ``(advantages, returns = A + V)``, 0 on padding.
    """
    n, t = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(n, dtype=rewards.dtype, device=rewards.device)
    for i in reversed(range(t)):
        m = mask[:, i]
        nxt_v = values[:, i + 1] * mask[:, i + 1] if i + 1 < t else torch.zeros_like(last)
        delta = rewards[:, i] + gamma * nxt_v - values[:, i]
        last = (delta + gamma * lam * last) * m
        adv[:, i] = last
    return adv, (adv + values) * mask


def clipped_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, clip_low: float,
                        clip_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate per token: ``-min(rho * A, clip(rho, 1 - low, 1 + high) * A)`` with ``rho = exp(logp - old)``.

    ``advantages`` broadcast (``[N, 1]`` for sequence-level ones). Returns the per-token loss and where the
    clipped term was the one taken (for the clip fraction).
    """
    ratio = torch.exp(logps - old_logps)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    return loss, (clipped < unclipped).float()


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's value loss per token: ``0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)``, and where clipping won."""
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    a, b = (values - returns) ** 2, (v_clipped - returns) ** 2
    return 0.5 * torch.maximum(a, b), (b > a).float()


def importance_weights(trainer_logps: torch.Tensor, sampler_logps: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance weights ``min(exp(log pi_trainer - log pi_sampler), cap)`` per token, without gradients.

    The correction for a sampler (another engine, lower precision) whose log-probs differ from the trainer's.
    """
    return torch.clamp(torch.exp(trainer_logps - sampler_logps), max=cap).detach()


# ------------------------------------------------------------------------------------ aggregation
AGGREGATIONS = ("sequence", "token", "token-sum", "constant")


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, *, total_tokens: float | None = None,
              total_sequences: int | None = None, max_new_tokens: int | None = None) -> torch.Tensor:
    """Reduce a per-token loss ``[N, T]`` of one (mini-)batch to a scalar.

    - ``sequence``: mean over each response's tokens, then mean over responses (the original GRPO);
      with ``total_sequences`` the sum of per-response means is divided by it instead of ``N``;
    - ``token``: sum over the batch's real tokens / their number (every token weighs the same);
    - ``token-sum``: sum over real tokens / ``total_tokens``, the token count of the *whole* rollout batch
      across micro-batches (DAPO: micro-batching does not change the weighting);
    - ``constant``: sum over real tokens / (``total_sequences`` or N) x ``max_new_tokens`` (Dr-GRPO: no length bias).
    """
    if mode == "sequence":
        per_seq = masked_sum(per_token, mask) / mask.sum(-1).clamp(min=1)
        return per_seq.sum() / (total_sequences or per_token.shape[0])
    if mode == "token":
        return masked_sum(per_token, mask).sum() / mask.sum().clamp(min=1)
    if mode == "token-sum":
        if total_tokens is None:
            raise ValueError("'token-sum' aggregation needs total_tokens (the rollout batch's token count)")
        return masked_sum(per_token, mask).sum() / max(float(total_tokens), 1.0)
    if mode == "constant":
        if max_new_tokens is None:
            raise ValueError("'constant' aggregation needs max_new_tokens")
        return masked_sum(per_token, mask).sum() / ((total_sequences or per_token.shape[0]) * max_new_tokens)
    raise ValueError(f"unknown loss aggregation {mode!r}; use one of {', '.join(AGGREGATIONS)}")


# ------------------------------------------------------------------------------- KL controllers
@dataclass
class FixedKL:
    """A constant KL coefficient."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        return None

    def state(self) -> dict[str, float]:
        return {"value": float(self.value)}

    def load(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


@dataclass
class AdaptiveKL:
    """Ziegler et al.'s adaptive coefficient (TRL legacy PPO): ``beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon``."""

    value: float
    target: float
    horizon: float

    def update(self, current_kl: float, n_steps: int) -> None:
        if not math.isfinite(current_kl):
            return
        error = max(-0.2, min(0.2, current_kl / self.target - 1.0))
        self.value *= 1.0 + error * n_steps / self.horizon

    def state(self) -> dict[str, float]:
        return {"value": float(self.value)}

    def load(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


__all__ = [
    "AGGREGATIONS", "AdaptiveKL", "FixedKL", "aggregate", "clipped_policy_loss", "clipped_value_loss", "gae",
    "group_advantages", "importance_weights", "kl_per_token", "leave_one_out_advantages", "masked_mean", "masked_sum",
    "masked_whiten", "z_normalise",
]
