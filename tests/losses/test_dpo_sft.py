"""The losses against independent evaluations of their formulas."""
from __future__ import annotations

import math

import pytest
import torch

from mmalign_core.protocols import LossInputs, PairLogps
from mmalign_losses.config import DPOConfig, SFTConfig
from mmalign_losses.dpo import DPOLoss
from mmalign_losses.sft import SFTLoss


def _inputs(pc, pr, rc, rr, tc=(4, 5), tr=(6, 2)) -> LossInputs:
    t = lambda v: torch.tensor(v, dtype=torch.float64, requires_grad=True)  # noqa: E731
    pol = PairLogps(chosen=t(pc), rejected=t(pr), chosen_tokens=torch.tensor(tc), rejected_tokens=torch.tensor(tr))
    ref = PairLogps(chosen=torch.tensor(rc, dtype=torch.float64), rejected=torch.tensor(rr, dtype=torch.float64),
                    chosen_tokens=torch.tensor(tc), rejected_tokens=torch.tensor(tr))
    return LossInputs(policy=pol, reference=ref, pairs=[])


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5])
def test_dpo_matches_formula(beta: float) -> None:
    pc, pr, rc, rr = [-10.0, -3.5], [-12.0, -2.0], [-11.0, -3.0], [-11.5, -2.5]
    out = DPOLoss(DPOConfig(beta=beta))(_inputs(pc, pr, rc, rr))
    expected = []
    for i in range(2):
        rho = (pc[i] - rc[i]) - (pr[i] - rr[i])
        expected.append(-_log_sigmoid(beta * rho))
    assert out.loss.item() == pytest.approx(sum(expected) / 2, rel=1e-12)
    margins = [beta * ((pc[i] - rc[i]) - (pr[i] - rr[i])) for i in range(2)]
    assert out.metrics["rewards/margin"] == pytest.approx(sum(margins) / 2)
    assert out.metrics["rewards/accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 2)
    assert out.metrics["rewards/chosen"] == pytest.approx(beta * ((pc[0] - rc[0]) + (pc[1] - rc[1])) / 2)


def test_dpo_mean_reduction_divides_by_tokens() -> None:
    pc, pr, rc, rr = [-10.0, -3.5], [-12.0, -2.0], [-11.0, -3.0], [-11.5, -2.5]
    tc, tr = (4, 5), (6, 2)
    out = DPOLoss(DPOConfig(beta=0.1, reduction="mean"))(_inputs(pc, pr, rc, rr, tc, tr))
    exp = 0.0
    for i in range(2):
        rho = (pc[i] / tc[i] - rc[i] / tc[i]) - (pr[i] / tr[i] - rr[i] / tr[i])
        exp += -_log_sigmoid(0.1 * rho) / 2
    assert out.loss.item() == pytest.approx(exp, rel=1e-12)


def test_dpo_gradient_sign() -> None:
    inp = _inputs([-10.0], [-10.0], [-10.0], [-10.0], (3,), (3,))
    out = DPOLoss(DPOConfig(beta=0.1))(inp)
    out.loss.backward()
    # Raising the chosen log-prob lowers the loss; raising the rejected one raises it.
    assert inp.policy.chosen.grad.item() < 0 < inp.policy.rejected.grad.item()
    assert out.loss.item() == pytest.approx(math.log(2))


def test_dpo_requires_reference() -> None:
    inp = _inputs([-1.0], [-2.0], [-1.0], [-2.0], (1,), (1,))
    inp.reference = None
    with pytest.raises(ValueError, match="reference"):
        DPOLoss(DPOConfig())(inp)


def test_sft_token_and_sequence_average() -> None:
    pol = PairLogps(chosen=torch.tensor([-8.0, -2.0]), rejected=None, chosen_tokens=torch.tensor([4, 1]), rejected_tokens=None)
    tok = SFTLoss(SFTConfig())(LossInputs(policy=pol, reference=None, pairs=[]))
    seq = SFTLoss(SFTConfig(average="sequence"))(LossInputs(policy=pol, reference=None, pairs=[]))
    assert tok.loss.item() == pytest.approx(10.0 / 5)
    assert seq.loss.item() == pytest.approx(5.0)
