"""Configs of the losses (no torch import).

Every preference loss shares three settings through :class:`PreferenceConfig`:
``beta``, ``reduction`` (sum or per-token mean of the response-token
log-probs) and ``nll_alpha`` (weight of an added token-mean NLL of the chosen
answers). :class:`WeightedSumConfig` resolves its terms through the plugin
registry while it validates, so a typo in a term's name is a spec error, not a
training-time crash.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, model_validator

from mmalign_core import ComponentConfig, NestedComponent

Reduction = Literal["sum", "mean"]
Parametrisation = Literal["gpo", "trl"]


class PreferenceConfig(ComponentConfig):
    """Settings every preference loss has: h(y) = log pi(y|x) - log pi_ref(y|x), rho = h(y+) - h(y-)."""

    beta: float = Field(0.1, gt=0, allow_inf_nan=False, description="Inverse temperature beta applied to rho.")
    reduction: Reduction = Field(
        "sum", description="How token log-probs become a sequence log-prob: 'sum' (DPO/TRL default) or per-token 'mean'."
    )
    nll_alpha: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="Weight alpha of an added NLL term: loss += alpha * token-mean NLL of the chosen answers (0 disables it).",
    )


class DPOConfig(PreferenceConfig):
    """Direct Preference Optimization: -log sigmoid(beta * (h(y+) - h(y-))), h = log pi - log pi_ref."""

    beta: float = Field(0.1, gt=0, allow_inf_nan=False, description="Inverse temperature beta; the paper's grid is {0.05, 0.1, 0.2, 0.5}.")


class IPOConfig(PreferenceConfig):
    """Identity Preference Optimization, in the GPO form (beta*rho - 1)^2 or TRL's (rho_mean - 1/(2 beta))^2."""

    beta: float = Field(0.9, gt=0, allow_inf_nan=False, description="Beta; the paper's IPO grid is {0.8, 0.9, 1.0}.")
    parametrisation: Parametrisation = Field(
        "gpo",
        description="'gpo': (beta*rho - 1)^2 (Tang et al. 2024); 'trl': TRL's loss_type='ipo', (rho - 1/(2*beta))^2.",
    )
    reduction: Optional[Reduction] = Field(  # type: ignore[assignment]
        None,
        description="'sum' or 'mean' of token log-probs; null: 'sum' for parametrisation 'gpo', 'mean' for 'trl' (as TRL does).",
    )

    def resolved_reduction(self) -> Reduction:
        """The reduction in effect (``null`` resolved by the parametrisation)."""
        if self.reduction is not None:
            return self.reduction
        return "mean" if self.parametrisation == "trl" else "sum"


class SLiCConfig(PreferenceConfig):
    """SLiC (calibration hinge): max(0, 1 - beta*rho)."""

    beta: float = Field(0.1, gt=0, allow_inf_nan=False, description="Beta; the paper's SLiC grid is {0.02, 0.1, 0.2}.")
    parametrisation: Parametrisation = Field(
        "gpo",
        description="'gpo': max(0, 1 - beta*rho); 'trl': TRL's loss_type='hinge', relu(1 - beta*rho) -- the same function.",
    )


class RobustDPOConfig(PreferenceConfig):
    """DPO with label smoothing eps for noisy preferences: conservative (cDPO) or unbiased robust (rDPO) form."""

    beta: float = Field(0.1, gt=0, allow_inf_nan=False, description="Inverse temperature beta.")
    label_smoothing: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="eps, the assumed probability that a pair's labels are flipped; 0 gives plain DPO.",
    )
    form: Literal["conservative", "robust"] = Field(
        "conservative",
        description=(
            "'conservative' (cDPO): (1-eps)*(-log s(beta*rho)) + eps*(-log s(-beta*rho)); "
            "'robust' (rDPO, TRL loss_type='robust'): [(1-eps)*(-log s(beta*rho)) - eps*(-log s(-beta*rho))] / (1-2*eps)."
        ),
    )


class AvgDPOConfig(PreferenceConfig):
    """The paper's Eq. 5: gamma*DPO(y+, y-) + (1-gamma)*DPO(y+, y~-), y~- from PreferencePair.extra_rejected."""

    beta: float = Field(0.1, gt=0, allow_inf_nan=False, description="Inverse temperature beta of both DPO terms.")
    gamma: float = Field(
        0.5, ge=0, le=1, description="Weight of the DPO term on 'rejected' (y-); 1-gamma weighs the extra rejected answer(s). Paper: 0.5."
    )
    missing_extra: Literal["error", "dpo"] = Field(
        "error",
        description=(
            "A batch whose pairs carry no extra rejected answer: 'error' raises; "
            "'dpo' trains plain DPO on (chosen, rejected) for that batch."
        ),
    )


class BCOPairConfig(PreferenceConfig):
    """BCO-pair: -log s(beta*h(y+) - delta) - log s(-(beta*h(y-) - delta)), delta a running mean of the rewards."""

    beta: float = Field(0.1, gt=0, allow_inf_nan=False, description="Inverse temperature beta of the rewards beta*h(y).")


class SFTConfig(ComponentConfig):
    """Negative log-likelihood of the response tokens."""

    average: Literal["token", "sequence"] = Field(
        "token", description="'token': mean NLL over all response tokens of the batch; 'sequence': mean of per-sequence summed NLL."
    )


# ------------------------------------------------------------------------ weighted sum
class LossTermRef(NestedComponent):
    """A registered loss and its config, checked against that loss's config class when validated."""

    kind: ClassVar[str] = "loss"

    name: str = Field(description="A registered loss name, or 'plugin:name' to pick one provider; stored qualified.")
    config: dict[str, Any] = Field(
        default_factory=dict, description="Settings of that loss (validated by its config class; defaults are filled in)."
    )

    @classmethod
    def check_entry(cls, entry: Any) -> None:
        unknown = sorted(set(entry.requires) - {"reference", "rejected"})
        if unknown:
            raise ValueError(f"loss {entry.qualified_name!r} requires {', '.join(unknown)}, which a weighted sum cannot provide")


class WeightedTerm(ComponentConfig):
    """One term of a weighted sum: weight * loss."""

    loss: LossTermRef = Field(description="The loss of this term: {'name': ..., 'config': {...}}.")
    weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="Non-negative, finite weight of this term.")
    label: Optional[str] = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Prefix of this term's metrics ('<label>/<metric>'); default: the loss's bare name, numbered when repeated.",
    )


def term_labels(terms: list[WeightedTerm]) -> list[str]:
    """Metric prefixes of the terms: the explicit label, else the bare loss name (``dpo-1``, ``dpo-2`` when repeated)."""
    bare = [t.loss.name.rpartition(":")[2] for t in terms]
    repeated = Counter(b for t, b in zip(terms, bare) if t.label is None)
    seen: Counter[str] = Counter()
    labels = []
    for term, name in zip(terms, bare):
        if term.label is not None:
            labels.append(term.label)
        elif repeated[name] > 1:
            seen[name] += 1
            labels.append(f"{name}-{seen[name]}")
        else:
            labels.append(name)
    return labels


def _default_terms() -> list[dict[str, Any]]:
    return [
        {"loss": {"name": "losses:dpo"}, "weight": 1.0},
        {"loss": {"name": "losses:sft"}, "weight": 1.0},
    ]


class WeightedSumConfig(ComponentConfig):
    """A weighted sum of registered losses (MPO-style mixtures): sum_i w_i * L_i."""

    terms: list[WeightedTerm] = Field(
        default_factory=_default_terms,
        validate_default=True,
        min_length=1,
        description="The terms [{'loss': {'name': ..., 'config': {...}}, 'weight': w, 'label': optional}]; default DPO + SFT, weight 1 each.",
    )

    @model_validator(mode="after")
    def _check_terms(self) -> "WeightedSumConfig":
        if not any(t.weight > 0 for t in self.terms):
            raise ValueError("at least one term needs a positive weight")
        if not all(math.isfinite(t.weight) for t in self.terms):  # pragma: no cover - the field forbids it already
            raise ValueError("weights must be finite")
        labels = term_labels(self.terms)
        clashes = sorted(label for label, n in Counter(labels).items() if n > 1)
        if clashes:
            raise ValueError(f"metric labels must be unique; repeated: {', '.join(clashes)} (set 'label' on the terms)")
        return self


def _mpo_terms() -> list[dict[str, Any]]:
    return [
        {"loss": {"name": "losses:dpo", "config": {"beta": 0.1}}, "weight": 0.8, "label": "dpo"},
        {"loss": {"name": "losses:bco-pair", "config": {"beta": 0.1}}, "weight": 0.2, "label": "bco"},
        {"loss": {"name": "losses:sft"}, "weight": 1.0, "label": "sft"},
    ]


class MPOConfig(WeightedSumConfig):
    """The MPO recipe (InternVL, arXiv 2411.10442): 0.8 DPO + 0.2 BCO-pair (running shift) + 1.0 SFT, beta 0.1."""

    terms: list[WeightedTerm] = Field(
        default_factory=_mpo_terms,
        validate_default=True,
        min_length=1,
        description="The weighted-sum terms; default MPO's 0.8*dpo + 0.2*bco-pair + 1.0*sft (labels dpo, bco, sft).",
    )
