"""IPO, SLiC, robust DPO, Avg-DPO and the shared options (reduction, NLL term) against their formulas.

Every expected value is computed here with plain Python ``math`` from the
same numbers the loss receives, never with the plugin's own helpers.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import pytest
import torch

from mmalign_core.errors import RunError
from mmalign_core.protocols import LossInputs, PairLogps
from mmalign_core.testing import check_loss, check_plugin, make_loss_inputs
from mmalign_losses.config import AvgDPOConfig, DPOConfig, IPOConfig, RobustDPOConfig, SLiCConfig
from mmalign_losses.dpo import AvgDPOLoss, DPOLoss, RobustDPOLoss
from mmalign_losses.gpo import IPOLoss, SLiCLoss
from mmalign_losses.plugin import PREFERENCE_METRICS

# Two pairs: policy chosen/rejected, reference chosen/rejected (summed log-probs), token counts.
PC, PR, RC, RR = [-10.0, -3.5], [-12.0, -2.0], [-11.0, -3.0], [-11.5, -2.5]
TC, TR = (4, 5), (6, 2)


def _t(values, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def _inputs(pc=PC, pr=PR, rc=RC, rr=RR, tc=TC, tr=TR, extra=None, ref_extra=None, extra_tokens=None) -> LossInputs:
    """LossInputs from plain lists; ``extra``/``ref_extra``: lists of per-answer value lists."""
    extra = extra or []
    ref_extra = ref_extra if ref_extra is not None else []
    extra_tokens = extra_tokens or [tr] * len(extra)
    pol = PairLogps(
        chosen=_t(pc, True), rejected=_t(pr, True), chosen_tokens=torch.tensor(tc), rejected_tokens=torch.tensor(tr),
        extra_rejected=[_t(x, True) for x in extra], extra_rejected_tokens=[torch.tensor(t) for t in extra_tokens],
    )
    ref = PairLogps(
        chosen=_t(rc), rejected=_t(rr), chosen_tokens=torch.tensor(tc), rejected_tokens=torch.tensor(tr),
        extra_rejected=[_t(x) for x in ref_extra], extra_rejected_tokens=[torch.tensor(t) for t in extra_tokens[: len(ref_extra)]],
    )
    return LossInputs(policy=pol, reference=ref, pairs=[])


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _rho(i: int, mean: bool = False, pc=PC, pr=PR, rc=RC, rr=RR, tc=TC, tr=TR) -> float:
    """rho_i = (log pi(y+) - log ref(y+)) - (log pi(y-) - log ref(y-)), optionally on per-token means."""
    a, b = (tc[i], tr[i]) if mean else (1, 1)
    return (pc[i] / a - rc[i] / a) - (pr[i] / b - rr[i] / b)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# ----------------------------------------------------------------------------------- IPO
@pytest.mark.parametrize("beta", [0.8, 0.9, 1.0])
def test_ipo_gpo_form(beta: float) -> None:
    out = IPOLoss(IPOConfig(beta=beta))(_inputs())
    expected = _mean((beta * _rho(i) - 1) ** 2 for i in range(2))
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    assert out.metrics["rewards/margin"] == pytest.approx(_mean(beta * _rho(i) for i in range(2)))


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_ipo_trl_form_uses_mean_log_probs(beta: float) -> None:
    out = IPOLoss(IPOConfig(beta=beta, parametrisation="trl"))(_inputs())
    expected = _mean((_rho(i, mean=True) - 1 / (2 * beta)) ** 2 for i in range(2))
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    # rewards are beta * h on the same (per-token mean) scale
    assert out.metrics["rewards/chosen"] == pytest.approx(_mean(beta * (PC[i] - RC[i]) / TC[i] for i in range(2)))


def test_ipo_explicit_reduction_overrides_the_parametrisation() -> None:
    trl_sum = IPOLoss(IPOConfig(beta=0.5, parametrisation="trl", reduction="sum"))(_inputs())
    assert trl_sum.loss.item() == pytest.approx(_mean((_rho(i) - 1.0) ** 2 for i in range(2)), rel=1e-12)
    gpo_mean = IPOLoss(IPOConfig(beta=0.5, reduction="mean"))(_inputs())
    assert gpo_mean.loss.item() == pytest.approx(_mean((0.5 * _rho(i, mean=True) - 1) ** 2 for i in range(2)), rel=1e-12)
    assert IPOConfig().resolved_reduction() == "sum" and IPOConfig(parametrisation="trl").resolved_reduction() == "mean"


def test_ipo_pulls_the_margin_to_its_target_from_both_sides() -> None:
    beta = 0.9
    target = 1 / beta  # (beta*rho - 1)^2 is minimal at rho = 1/beta
    for rho, sign in [(target, 0), (target - 2.0, -1), (target + 2.0, +1)]:
        inp = _inputs([rho], [0.0], [0.0], [0.0], (3,), (3,))
        IPOLoss(IPOConfig(beta=beta))(inp).loss.backward()
        g = inp.policy.chosen.grad.item()
        assert (g == pytest.approx(0.0, abs=1e-12)) if sign == 0 else (math.copysign(1, g) == sign)
        assert inp.policy.rejected.grad.item() == pytest.approx(-g)


# ---------------------------------------------------------------------------------- SLiC
@pytest.mark.parametrize("parametrisation", ["gpo", "trl"])
@pytest.mark.parametrize("beta", [0.02, 0.1, 0.2])
def test_slic_hinge(beta: float, parametrisation: str) -> None:
    out = SLiCLoss(SLiCConfig(beta=beta, parametrisation=parametrisation))(_inputs())
    expected = _mean(max(0.0, 1 - beta * _rho(i)) for i in range(2))
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)


def test_slic_is_flat_beyond_the_margin() -> None:
    # pair 0: beta*rho = 2 > 1 (no loss, no gradient); pair 1: rho = 0 (loss 1, gradient)
    inp = _inputs([20.0, -5.0], [0.0, -5.0], [0.0, -5.0], [0.0, -5.0], (3, 3), (3, 3))
    out = SLiCLoss(SLiCConfig(beta=0.1))(inp)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(0.5)
    assert inp.policy.chosen.grad.tolist() == pytest.approx([0.0, -0.05])
    assert inp.policy.rejected.grad.tolist() == pytest.approx([0.0, 0.05])


# ---------------------------------------------------------------------------- robust DPO
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_robust_dpo_conservative_form(eps: float) -> None:
    beta = 0.1
    out = RobustDPOLoss(RobustDPOConfig(beta=beta, label_smoothing=eps))(_inputs())
    expected = _mean(
        (1 - eps) * -_log_sigmoid(beta * _rho(i)) + eps * -_log_sigmoid(-beta * _rho(i)) for i in range(2)
    )
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_robust_dpo_unbiased_form(eps: float) -> None:
    beta = 0.2
    out = RobustDPOLoss(RobustDPOConfig(beta=beta, label_smoothing=eps, form="robust"))(_inputs())
    expected = _mean(
        ((1 - eps) * -_log_sigmoid(beta * _rho(i)) - eps * -_log_sigmoid(-beta * _rho(i))) / (1 - 2 * eps) for i in range(2)
    )
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)


def test_robust_dpo_without_smoothing_is_dpo() -> None:
    dpo = DPOLoss(DPOConfig(beta=0.1))(_inputs()).loss.item()
    for form in ("conservative", "robust"):
        assert RobustDPOLoss(RobustDPOConfig(beta=0.1, label_smoothing=0.0, form=form))(_inputs()).loss.item() == pytest.approx(dpo, rel=1e-12)


def test_robust_dpo_gradient_directions() -> None:
    beta, eps = 1.0, 0.1
    stop = math.log((1 - eps) / eps)  # the conservative loss is minimal at beta*rho = log((1-eps)/eps)
    for rho in (0.0, stop - 1.0, stop + 1.0):
        for form in ("conservative", "robust"):
            inp = _inputs([rho], [0.0], [0.0], [0.0], (2,), (2,))
            RobustDPOLoss(RobustDPOConfig(beta=beta, label_smoothing=eps, form=form))(inp).loss.backward()
            g = inp.policy.chosen.grad.item()
            if form == "robust" or beta * rho < stop:
                assert g < 0 < inp.policy.rejected.grad.item(), (form, rho)  # widen the margin
            else:
                assert g > 0 > inp.policy.rejected.grad.item(), (form, rho)  # cDPO stops short of certainty


def test_robust_dpo_rejects_half_or_more_smoothing() -> None:
    with pytest.raises(ValueError):
        RobustDPOConfig(label_smoothing=0.5)


# ------------------------------------------------------------------------------- Avg-DPO
EX, REX = [-9.0, -4.0], [-10.0, -3.0]  # policy / reference log-probs of the extra rejected answer


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.8, 1.0])
def test_avg_dpo_matches_eq5(gamma: float) -> None:
    beta = 0.1
    out = AvgDPOLoss(AvgDPOConfig(beta=beta, gamma=gamma))(_inputs(extra=[EX], ref_extra=[REX]))
    expected = 0.0
    for i in range(2):
        h_c = PC[i] - RC[i]
        on_rejected = -_log_sigmoid(beta * (h_c - (PR[i] - RR[i])))
        on_extra = -_log_sigmoid(beta * (h_c - (EX[i] - REX[i])))
        expected += (gamma * on_rejected + (1 - gamma) * on_extra) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    assert out.metrics["rewards/extra_rejected"] == pytest.approx(_mean(beta * (EX[i] - REX[i]) for i in range(2)))
    assert out.metrics["rewards/rejected"] == pytest.approx(_mean(beta * (PR[i] - RR[i]) for i in range(2)))


def test_avg_dpo_with_gamma_one_is_dpo_and_its_gradients() -> None:
    inp = _inputs(extra=[EX], ref_extra=[REX])
    out = AvgDPOLoss(AvgDPOConfig(gamma=1.0))(inp)
    assert out.loss.item() == pytest.approx(DPOLoss(DPOConfig())(_inputs()).loss.item(), rel=1e-12)
    inp = _inputs(extra=[EX], ref_extra=[REX])
    AvgDPOLoss(AvgDPOConfig(gamma=0.5))(inp).loss.backward()
    assert (inp.policy.chosen.grad < 0).all()
    assert (inp.policy.rejected.grad > 0).all() and (inp.policy.extra_rejected[0].grad > 0).all()


def test_avg_dpo_mean_reduction_divides_each_answer_by_its_tokens() -> None:
    beta, etok = 0.1, (3, 7)
    out = AvgDPOLoss(AvgDPOConfig(beta=beta, reduction="mean"))(_inputs(extra=[EX], ref_extra=[REX], extra_tokens=[etok]))
    expected = 0.0
    for i in range(2):
        h_c = (PC[i] - RC[i]) / TC[i]
        expected += 0.5 * -_log_sigmoid(beta * (h_c - (PR[i] - RR[i]) / TR[i])) / 2
        expected += 0.5 * -_log_sigmoid(beta * (h_c - (EX[i] - REX[i]) / etok[i])) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)


def test_avg_dpo_averages_several_extra_answers() -> None:
    beta, ex2, rex2 = 0.1, [-2.0, -8.0], [-3.0, -7.5]
    out = AvgDPOLoss(AvgDPOConfig(beta=beta, gamma=0.25))(_inputs(extra=[EX, ex2], ref_extra=[REX, rex2]))
    expected = 0.0
    for i in range(2):
        h_c = PC[i] - RC[i]
        main = -_log_sigmoid(beta * (h_c - (PR[i] - RR[i])))
        extra = (-_log_sigmoid(beta * (h_c - (EX[i] - REX[i]))) - _log_sigmoid(beta * (h_c - (ex2[i] - rex2[i])))) / 2
        expected += (0.25 * main + 0.75 * extra) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)


def test_avg_dpo_without_an_extra_rejected_answer_fails_loudly() -> None:
    with pytest.raises(ValueError, match="extra_rejected") as info:
        AvgDPOLoss(AvgDPOConfig())(_inputs())
    assert "missing_extra='dpo'" in str(info.value)
    assert isinstance(info.value, RunError)  # the CLI prints it as a message, without a traceback


def test_avg_dpo_explicit_fallback_is_plain_dpo() -> None:
    out = AvgDPOLoss(AvgDPOConfig(beta=0.2, missing_extra="dpo"))(_inputs())
    assert out.loss.item() == pytest.approx(DPOLoss(DPOConfig(beta=0.2))(_inputs()).loss.item(), rel=1e-12)
    assert "rewards/extra_rejected" not in out.metrics


def test_avg_dpo_needs_the_reference_of_the_extra_answer() -> None:
    with pytest.raises(ValueError, match="reference has 0"):
        AvgDPOLoss(AvgDPOConfig())(_inputs(extra=[EX], ref_extra=[]))


# ------------------------------------------------------------------ shared: NLL, reduction
LOSSES: dict[str, tuple[Callable[..., Any], Callable[..., Any], Callable[[float, float, float], float]]] = {
    # name: (loss class, config class, per-pair formula f(rho, rho_mean, beta) with default settings)
    "dpo": (DPOLoss, DPOConfig, lambda r, rm, b: -_log_sigmoid(b * r)),
    "ipo": (IPOLoss, IPOConfig, lambda r, rm, b: (b * r - 1) ** 2),
    "ipo-trl": (IPOLoss, lambda **kw: IPOConfig(parametrisation="trl", **kw), lambda r, rm, b: (rm - 1 / (2 * b)) ** 2),
    "slic": (SLiCLoss, SLiCConfig, lambda r, rm, b: max(0.0, 1 - b * r)),
    "robust-dpo": (RobustDPOLoss, RobustDPOConfig,
                   lambda r, rm, b: 0.9 * -_log_sigmoid(b * r) + 0.1 * -_log_sigmoid(-b * r)),
    "avg-dpo": (AvgDPOLoss, lambda **kw: AvgDPOConfig(missing_extra="dpo", **kw), lambda r, rm, b: -_log_sigmoid(b * r)),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_nll_term_adds_alpha_times_token_mean_nll(name: str) -> None:
    loss_cls, cfg_cls, formula = LOSSES[name]
    alpha = 0.5
    beta = cfg_cls().beta
    base = _mean(formula(_rho(i), _rho(i, mean=True), beta) for i in range(2))
    nll = -sum(PC) / sum(TC)
    plain = loss_cls(cfg_cls())(_inputs())
    assert plain.loss.item() == pytest.approx(base, rel=1e-12)
    assert plain.metrics["nll"] == pytest.approx(nll)
    inp = _inputs()
    out = loss_cls(cfg_cls(nll_alpha=alpha))(inp)
    assert out.loss.item() == pytest.approx(base + alpha * nll, rel=1e-12)
    assert out.metrics["loss"] == pytest.approx(base + alpha * nll)
    # the NLL term's gradient on every chosen sequence is -alpha / (total chosen tokens)
    out.loss.backward()
    ref = _inputs()
    loss_cls(cfg_cls())(ref).loss.backward()
    assert (inp.policy.chosen.grad - ref.policy.chosen.grad).tolist() == pytest.approx([-alpha / sum(TC)] * 2)
    assert inp.policy.rejected.grad.tolist() == pytest.approx(ref.policy.rejected.grad.tolist())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_mean_reduction_equals_sum_on_per_token_means(name: str) -> None:
    loss_cls, cfg_cls, _ = LOSSES[name]
    mean = loss_cls(cfg_cls(reduction="mean"))(_inputs()).loss.item()
    divided = _inputs(
        [PC[i] / TC[i] for i in range(2)], [PR[i] / TR[i] for i in range(2)],
        [RC[i] / TC[i] for i in range(2)], [RR[i] / TR[i] for i in range(2)], (1, 1), (1, 1),
    )
    assert mean == pytest.approx(loss_cls(cfg_cls(reduction="sum"))(divided).loss.item(), rel=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_direction_at_zero_margin(name: str) -> None:
    loss_cls, cfg_cls, _ = LOSSES[name]
    inp = _inputs([-10.0], [-10.0], [-10.0], [-10.0], (3,), (3,))
    loss_cls(cfg_cls())(inp).loss.backward()
    # raising the chosen log-prob lowers the loss; raising the rejected one raises it
    assert inp.policy.chosen.grad.item() < 0 < inp.policy.rejected.grad.item()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_metrics_are_the_declared_ones(name: str) -> None:
    loss_cls, cfg_cls, _ = LOSSES[name]
    out = loss_cls(cfg_cls())(_inputs())
    assert set(PREFERENCE_METRICS) <= set(out.metrics)
    beta = cfg_cls().beta
    margins = [beta * _rho(i, mean=(name == "ipo-trl")) for i in range(2)]
    assert out.metrics["rewards/margin"] == pytest.approx(_mean(margins))
    assert out.metrics["rewards/accuracy"] == pytest.approx(_mean(m > 0 for m in margins))
    assert out.metrics["logps/chosen"] == pytest.approx(_mean(PC)) and out.metrics["logps/rejected"] == pytest.approx(_mean(PR))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_preference_loss_needs_a_reference(name: str) -> None:
    loss_cls, cfg_cls, _ = LOSSES[name]
    inp = _inputs()
    inp.reference = None
    with pytest.raises(ValueError, match="reference"):
        loss_cls(cfg_cls())(inp)


def test_defaults_follow_the_method_spec() -> None:
    assert DPOConfig().beta == 0.1 and IPOConfig().beta == 0.9 and SLiCConfig().beta == 0.1
    assert AvgDPOConfig().gamma == 0.5 and AvgDPOConfig().missing_extra == "error"
    assert IPOConfig().parametrisation == "gpo" and SLiCConfig().parametrisation == "gpo"
    for cfg in (DPOConfig(), SLiCConfig(), RobustDPOConfig(), AvgDPOConfig()):
        assert cfg.reduction == "sum" and cfg.nll_alpha == 0.0
    with pytest.raises(ValueError):
        DPOConfig(nll_alpha=float("nan"))
    with pytest.raises(ValueError):
        DPOConfig(nll_alpha=-1.0)


# ------------------------------------------------------------------------ kit contracts
@pytest.fixture(scope="module")
def losses():
    return check_plugin("mmalign_losses.plugin", name="losses")


CONTRACT_CONFIGS = [
    ("dpo", None), ("dpo", {"nll_alpha": 0.3, "reduction": "mean"}),
    ("ipo", None), ("ipo", {"parametrisation": "trl"}), ("ipo", {"beta": 0.8, "reduction": "sum", "nll_alpha": 1.0}),
    ("slic", None), ("slic", {"parametrisation": "trl", "beta": 0.02}),
    ("robust-dpo", None), ("robust-dpo", {"form": "robust", "label_smoothing": 0.2}),
    ("avg-dpo", {"missing_extra": "dpo"}), ("avg-dpo", {"missing_extra": "dpo", "gamma": 0.3, "nll_alpha": 0.1}),
    ("weighted-sum", None),
    ("weighted-sum", {"terms": [{"loss": {"name": "ipo", "config": {"parametrisation": "trl"}}, "weight": 0.8},
                                {"loss": {"name": "slic"}, "weight": 0.2}, {"loss": {"name": "sft"}, "weight": 1.0}]}),
    ("bco-pair", None), ("bco-pair", {"beta": 0.2, "reduction": "mean", "nll_alpha": 0.5}),
    ("mpo", None),
    ("sft", None),
]


@pytest.mark.parametrize("name,config", CONTRACT_CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONTRACT_CONFIGS)])
def test_check_loss_contract(losses, name: str, config) -> None:
    entry = losses.resolve("loss", name)
    out = check_loss(entry, config)
    assert set(entry.metrics) <= set(out.metrics)
    if name != "sft":
        assert entry.requires == {"reference", "rejected"}


def test_every_registered_loss_is_contract_checked(losses) -> None:
    assert {e.name for e in losses.entries("loss")} == {n for n, _ in CONTRACT_CONFIGS}


def test_avg_dpo_contract_with_extra_rejected_answers(losses) -> None:
    """check_loss's synthetic inputs carry no extra answers; add one, as the engine does for extra_rejected pairs."""
    inputs = make_loss_inputs(4, seed=3)
    gen = torch.Generator().manual_seed(1)
    extra = -(torch.rand(4, generator=gen) * 30 + 1)
    tokens = torch.randint(1, 24, (4,), generator=gen)
    inputs.policy.extra_rejected = [extra.clone().requires_grad_(True)]
    inputs.policy.extra_rejected_tokens = [tokens]
    inputs.reference.extra_rejected = [extra + torch.randn(4, generator=gen)]
    inputs.reference.extra_rejected_tokens = [tokens.clone()]
    out = losses.resolve("loss", "avg-dpo").build()(inputs)
    out.loss.backward()
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert inputs.policy.extra_rejected[0].grad is not None and (inputs.policy.extra_rejected[0].grad > 0).all()
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.metrics.values())
    with pytest.raises(ValueError, match="extra_rejected"):
        losses.resolve("loss", "avg-dpo").build()(make_loss_inputs(2))
