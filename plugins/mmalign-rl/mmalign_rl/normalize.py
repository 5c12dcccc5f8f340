"""Reward normalisation: none, running (Welford), fixed, or from base-policy samples; optional clipping."""
from __future__ import annotations

import math
from typing import Sequence

from .config import RewardNormalization


class RewardNormalizer:
    """Standardises raw rewards; its state (running moments, base-policy statistics) is checkpointed."""

    def __init__(self, config: RewardNormalization):
        self.config = config
        self.count = 0
        self.mean_ = 0.0
        self.m2 = 0.0
        self.fixed: tuple[float, float] | None = (config.mean, config.std) if config.mode == "fixed" else None

    @property
    def needs_base_statistics(self) -> bool:
        return self.config.mode == "base-policy" and self.fixed is None

    def set_statistics(self, rewards: Sequence[float]) -> None:
        """Fix mean and std from a sample (mode 'base-policy'); a zero std becomes 1."""
        n = len(rewards)
        mean = sum(rewards) / n
        var = sum((r - mean) ** 2 for r in rewards) / max(n - 1, 1)
        self.fixed = (mean, math.sqrt(var) if var > 0 else 1.0)

    def _update(self, rewards: Sequence[float]) -> None:
        for r in rewards:
            self.count += 1
            delta = r - self.mean_
            self.mean_ += delta / self.count
            self.m2 += delta * (r - self.mean_)

    def statistics(self) -> tuple[float, float]:
        """The (mean, std) applied now."""
        if self.config.mode == "running":
            std = math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 1.0
            return self.mean_, (std if std > 0 else 1.0)
        if self.fixed is not None:
            return self.fixed
        return 0.0, 1.0

    def __call__(self, rewards: Sequence[float]) -> list[float]:
        """Normalised rewards; mode 'running' first adds this batch to the moments."""
        if self.config.mode == "running":
            self._update(rewards)
        if self.config.mode == "none":
            out = list(rewards)
        else:
            mean, std = self.statistics()
            out = [(r - mean) / std for r in rewards]
        c = self.config.clip
        return [max(-c, min(c, x)) for x in out] if c is not None else out

    def state(self) -> dict[str, float | list[float] | None]:
        # Plain Python numbers only: checkpoints are read with torch.load(weights_only=True).
        return {"count": int(self.count), "mean": float(self.mean_), "m2": float(self.m2),
                "fixed": [float(x) for x in self.fixed] if self.fixed else None}

    def load(self, state: dict) -> None:
        self.count, self.mean_, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])
        self.fixed = tuple(state["fixed"]) if state.get("fixed") else self.fixed


__all__ = ["RewardNormalizer"]
