"""Tests of margin-dpo: the kit's contract checks, then the formula itself."""
import math

import pytest
import torch

from mmalign_core.protocols import LossInputs, PairLogps
from mmalign_core.testing import check_loss, check_plugin

import mmalign_example_loss.plugin
from mmalign_example_loss.config import MarginDPOConfig
from mmalign_example_loss.loss import MarginDPOLoss


def test_plugin_entries() -> None:
    check_plugin(mmalign_example_loss.plugin, name="example-loss")


def test_loss_contract(register_plugin) -> None:
    plugins = register_plugin(mmalign_example_loss.plugin, name="example-loss")
    entry = plugins.resolve("loss", "margin-dpo")
    check_loss(entry)
    check_loss(entry, {"margin": 0.0, "reduction": "mean"})


def pairs(policy_chosen, policy_rejected, ref_chosen, ref_rejected) -> LossInputs:
    def side(chosen, rejected, grad):
        c = torch.tensor(chosen, requires_grad=grad)
        r = torch.tensor(rejected, requires_grad=grad)
        n = torch.full((len(chosen),), 5)
        return PairLogps(chosen=c, rejected=r, chosen_tokens=n, rejected_tokens=n)

    return LossInputs(
        policy=side(policy_chosen, policy_rejected, True),
        reference=side(ref_chosen, ref_rejected, False),
        pairs=[],
    )


@pytest.mark.parametrize("margin", [0.0, 0.5, 2.0])
def test_formula(margin: float) -> None:
    beta = 0.1
    inputs = pairs([-10.0, -4.0], [-12.0, -3.0], [-11.0, -4.5], [-11.0, -2.0])
    out = MarginDPOLoss(MarginDPOConfig(beta=beta, margin=margin))(inputs)
    rewards = [beta * ((-10.0 + 11.0) - (-12.0 + 11.0)), beta * ((-4.0 + 4.5) - (-3.0 + 2.0))]
    expected = sum(math.log1p(math.exp(-(r - margin))) for r in rewards) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.metrics["margin/satisfied"] == sum(r > margin for r in rewards) / 2


def test_a_larger_margin_pushes_harder() -> None:
    grads = []
    for margin in (0.0, 3.0):
        inputs = pairs([-10.0], [-12.0], [-11.0], [-11.0])
        MarginDPOLoss(MarginDPOConfig(margin=margin))(inputs).loss.backward()
        grads.append(-inputs.policy.chosen.grad.item())
    assert grads[1] > grads[0] > 0
