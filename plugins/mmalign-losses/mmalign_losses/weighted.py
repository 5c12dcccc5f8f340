"""A weighted sum of registered losses (MPO-style mixtures)."""
from __future__ import annotations

from typing import Any, Optional

from mmalign_core.protocols import LossInputs, LossOutput

from .config import WeightedSumConfig, term_labels


class WeightedSumLoss:
    """L = sum_i w_i * L_i, each term a registered loss built from its validated config.

    Metrics: ``loss`` (the weighted total) and every term's own metrics as
    ``<label>/<metric>`` (``<label>/loss`` is the term's unweighted loss).
    """

    def __init__(self, config: WeightedSumConfig, plugins: Optional[Any] = None, context: Optional[Any] = None):
        if plugins is None and context is not None:
            plugins = context.plugins  # the manager that validated the spec
        if plugins is None:
            from mmalign_core.manager import get_plugins

            plugins = get_plugins()
        self.config = config
        self.labels = term_labels(config.terms)
        self.weights = [t.weight for t in config.terms]
        self.terms = [plugins.resolve("loss", t.loss.name).build(t.loss.config) for t in config.terms]

    def __call__(self, inputs: LossInputs) -> LossOutput:
        total = None
        metrics: dict[str, float] = {}
        for label, weight, term in zip(self.labels, self.weights, self.terms):
            out = term(inputs)
            contribution = out.loss * weight
            total = contribution if total is None else total + contribution
            for key, value in out.metrics.items():
                metrics[f"{label}/{key}"] = value
        assert total is not None  # the config holds at least one term
        metrics["loss"] = float(total.detach())
        return LossOutput(loss=total, metrics=metrics)
