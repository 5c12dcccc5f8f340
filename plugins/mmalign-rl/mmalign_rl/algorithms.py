"""The estimators of GRPO, RLOO and PPO over the shared loop (:class:`~mmalign_rl.loop.RLAlgorithmBase`).

One class per algorithm; a third party adds one by subclassing ``RLAlgorithmBase`` (or writing any object
with ``train(stage)`` and ``describe()``) and registering it with ``mmalign_rl_algorithms``.
"""
from __future__ import annotations

from typing import Any

import torch

from .config import GRPOConfig, PPOConfig, RLOOConfig
from .estimators import (
    AdaptiveKL, FixedKL, aggregate, clipped_policy_loss, clipped_value_loss, gae, group_advantages, importance_weights,
    kl_per_token, leave_one_out_advantages, masked_mean, masked_sum, masked_whiten, z_normalise,
)
from .loop import RLAlgorithmBase, RolloutBatch, Totals
from .scoring import TokenScores


class GRPO(RLAlgorithmBase):
    """Group-relative advantages, clipped per-token ratio, optional KL term (k1/k2/k3, beta), four loss aggregations."""

    name = "grpo"
    config: GRPOConfig

    @property
    def needs_reference(self) -> bool:
        return self.config.beta > 0 or self.config.track_kl

    @property
    def needs_old_scores(self) -> bool:
        return self.config.epochs > 1

    def advantages(self, batch: RolloutBatch) -> None:
        k = batch.rollouts.k
        batch.advantages = group_advantages(batch.rewards, k, scale=self.config.scale_rewards).unsqueeze(1)

    def per_token_loss(self, batch: RolloutBatch, idx: torch.Tensor, now: TokenScores) -> tuple[torch.Tensor, dict[str, Any]]:
        """The per-token GRPO loss of rows ``idx`` and what to log (clip fraction, KL)."""
        c = self.config
        mask = batch.mask[idx]
        # One pass over fresh rollouts: the ratio is exactly 1 (as TRL's GRPOTrainer with num_iterations = 1).
        old = now.logps.detach() if c.epochs == 1 else batch.old.logps[idx]
        loss, clipped = clipped_policy_loss(now.logps, old, batch.advantages[idx], c.clip_low, c.clip_high)
        sampler = batch.extras.get("sampler_logps")
        if c.importance_sampling_cap is not None and sampler is not None:
            loss = loss * importance_weights(batch.old.logps[idx], sampler[idx], c.importance_sampling_cap)
        info: dict[str, Any] = {"clip_fraction": masked_mean(clipped, mask)}
        if c.beta > 0:
            kl = kl_per_token(now.logps, batch.ref_logps[idx], c.kl_estimator)
            if c.kl_ratio_correction:
                kl = kl * torch.exp(now.logps - old)
            loss = loss + c.beta * kl
            info["kl_term"] = masked_mean(kl, mask)
        return loss, info

    def loss(self, batch: RolloutBatch, idx: torch.Tensor, now: TokenScores, totals: Totals) -> tuple[torch.Tensor, dict[str, float]]:
        per_token, info = self.per_token_loss(batch, idx, now)
        mask = batch.mask[idx]
        mode = self.config.loss_aggregation
        if mode == "token":  # TRL's per-micro-batch token mean, averaged over the minibatch's micro-batches
            loss = aggregate(per_token, mask, "token") / totals.micro_batches
        else:
            loss = aggregate(per_token, mask, mode, total_tokens=totals.tokens, total_sequences=totals.sequences,
                             max_new_tokens=totals.max_new_tokens)
        return loss, {"loss": float(loss.detach()) * totals.sequences / len(idx), **{k: float(v.detach()) for k, v in info.items()}}


class RLOO(RLAlgorithmBase):
    """REINFORCE leave-one-out: sequence reward minus beta x summed KL, leave-one-out baseline, clipped sequence ratio."""

    name = "rloo"
    config: RLOOConfig

    @property
    def needs_reference(self) -> bool:
        return True

    @property
    def needs_old_scores(self) -> bool:
        return self.config.epochs > 1 or self.config.beta > 0

    def advantages(self, batch: RolloutBatch) -> None:
        c = self.config
        kl = masked_sum(kl_per_token(batch.old.logps, batch.ref_logps, c.kl_estimator), batch.mask)
        total = batch.rewards - c.beta * kl
        adv = leave_one_out_advantages(total, batch.rollouts.k)
        if c.normalize_advantages:
            adv = z_normalise(adv, eps=1e-4)  # TRL RLOOTrainer's epsilon
        batch.advantages = adv.unsqueeze(1)
        batch.extras["rloo_reward"] = total

    def loss(self, batch: RolloutBatch, idx: torch.Tensor, now: TokenScores, totals: Totals) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        mask = batch.mask[idx]
        new_seq = masked_sum(now.logps, mask)
        old_seq = masked_sum(batch.old.logps[idx], mask) if c.epochs > 1 else new_seq.detach()
        ratio = torch.exp(new_seq - old_seq)
        adv = batch.advantages[idx, 0]
        pg = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - c.clip, 1 + c.clip))
        loss = pg.sum() / totals.sequences
        clipped = ((ratio < 1 - c.clip) | (ratio > 1 + c.clip)).float().mean()
        return loss, {"loss": float(pg.detach().mean()), "clip_fraction": float(clipped)}

    def after_step(self, batch: RolloutBatch, metrics: dict[str, float]) -> dict[str, float]:
        return {"rloo/reward_with_kl": float(batch.extras["rloo_reward"].mean())}


class ValueHead(torch.nn.Module):
    """A linear value head on the policy's last hidden state."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden, 1)
        torch.nn.init.normal_(self.linear.weight, std=1.0 / (hidden + 1) ** 0.5 * 0.1)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def _hidden_size(module: Any) -> int:
    cfg = getattr(module, "config", None)
    for c in (getattr(cfg, "text_config", None), cfg):
        size = getattr(c, "hidden_size", None)
        if size:
            return int(size)
    raise ValueError("cannot find the language model's hidden size for PPO's value head")


class PPO(RLAlgorithmBase):
    """PPO: value head, per-token KL penalty in the reward (adaptive or fixed), GAE, clipped policy and value losses."""

    name = "ppo"
    config: PPOConfig

    def __init__(self, config: PPOConfig):
        super().__init__(config)
        c = config
        self.kl = AdaptiveKL(c.kl_coef, c.target_kl, c.kl_horizon) if c.adaptive_kl else FixedKL(c.kl_coef)
        self.head: ValueHead | None = None

    @property
    def needs_reference(self) -> bool:
        return True

    def value_head(self) -> Any:
        return self.head

    def setup(self, model: Any, lr: float) -> list[dict[str, Any]]:
        param = next(model.module.parameters())
        gen = torch.random.fork_rng()
        with gen:
            torch.manual_seed(0)
            self.head = ValueHead(_hidden_size(model.module)).to(param.device)
        return [{"params": list(self.head.parameters()), "lr": self.config.value_lr or lr, "name": "value_head"}]

    def advantages(self, batch: RolloutBatch) -> None:
        c = self.config
        mask = batch.mask
        kl = kl_per_token(batch.old.logps, batch.ref_logps, c.kl_estimator) * mask
        rewards = -self.kl.value * kl
        last = (mask.sum(-1).long() - 1).clamp(min=0)
        rewards[torch.arange(mask.shape[0]), last] += batch.rewards
        values = batch.old.values * mask
        adv, returns = gae(rewards, values, mask, c.gamma, c.lam)
        if c.whiten_advantages:
            adv = masked_whiten(adv, mask)
        batch.advantages, batch.returns = adv.detach(), returns.detach()
        batch.extras["kl_sum"] = float(masked_sum(kl, mask).mean())

    def loss(self, batch: RolloutBatch, idx: torch.Tensor, now: TokenScores, totals: Totals) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        mask = batch.mask[idx]
        pg, clipped = clipped_policy_loss(now.logps, batch.old.logps[idx], batch.advantages[idx], c.clip, c.clip)
        vf, vclipped = clipped_value_loss(now.values, batch.old.values[idx], batch.returns[idx], c.value_clip)
        pg_loss = aggregate(pg, mask, "token-sum", total_tokens=totals.tokens)
        vf_loss = aggregate(vf, mask, "token-sum", total_tokens=totals.tokens)
        loss = pg_loss + c.vf_coef * vf_loss
        share = totals.sequences / len(idx)
        return loss, {"loss": float(loss.detach()) * share, "policy_loss": float(pg_loss.detach()) * share, "value_loss": float(vf_loss.detach()) * share,
                      "clip_fraction": float(masked_mean(clipped, mask)), "value_clip_fraction": float(masked_mean(vclipped, mask))}

    def after_step(self, batch: RolloutBatch, metrics: dict[str, float]) -> dict[str, float]:
        coef = self.kl.value
        self.kl.update(batch.extras["kl_sum"], batch.rollouts.n)
        return {"kl_coef": coef}

    def state(self) -> dict[str, Any]:
        return {"kl": self.kl.state(), "value_head": self.head.state_dict() if self.head is not None else None}

    def load(self, state: dict[str, Any]) -> None:
        self.kl.load(state["kl"])
        if self.head is not None and state.get("value_head") is not None:
            self.head.load_state_dict(state["value_head"])


def make_grpo(config: GRPOConfig) -> GRPO:
    return GRPO(config)


def make_rloo(config: RLOOConfig) -> RLOO:
    return RLOO(config)


def make_ppo(config: PPOConfig) -> PPO:
    return PPO(config)


__all__ = ["GRPO", "PPO", "RLOO", "ValueHead", "make_grpo", "make_ppo", "make_rloo"]
