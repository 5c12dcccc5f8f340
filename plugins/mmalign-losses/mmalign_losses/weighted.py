"""A weighted sum of registered losses (MPO-style mixtures)."""
from __future__ import annotations

from typing import Any, Mapping, Optional

from mmalign_core.errors import RunError
from mmalign_core.protocols import LossInputs, LossOutput, Stateful

from .config import WeightedSumConfig, term_labels


class WeightedSumLoss:
    """L = sum_i w_i * L_i, each term a registered loss built from its validated config.

    Metrics: ``loss`` (the weighted total) and every term's own metrics as
    ``<label>/<metric>`` (``<label>/loss`` is the term's unweighted loss).
    The states of stateful terms (BCO-pair's running shift) are saved and restored under their labels.
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

    def _stateful_terms(self) -> list[tuple[str, Any]]:
        return [(label, term) for label, term in zip(self.labels, self.terms) if isinstance(term, Stateful)]

    def state_dict(self) -> dict[str, Any]:
        """``{label: state}`` of every stateful term (empty when no term has state)."""
        return {label: term.state_dict() for label, term in self._stateful_terms()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = [label for label, _ in self._stateful_terms() if label not in state]
        if missing:
            raise RunError(
                f"the checkpoint holds no state for the weighted-sum term(s) {', '.join(missing)}; it was written with other "
                "terms or labels -- resume with the spec that wrote it, or start over with --overwrite"
            )
        for label, term in self._stateful_terms():
            term.load_state_dict(state[label])
