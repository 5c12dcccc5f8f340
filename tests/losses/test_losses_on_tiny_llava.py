"""The losses on real log-probs: the tiny LLaVA scores chosen, rejected and extra rejected answers in one pass."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from mmalign_core.protocols import LossInputs
from mmalign_core.testing import make_pairs
from mmalign_losses.config import AvgDPOConfig, DPOConfig, WeightedSumConfig
from mmalign_losses.dpo import AvgDPOLoss, DPOLoss
from mmalign_losses.weighted import WeightedSumLoss


@pytest.fixture()
def models(tiny_model):
    reference = tiny_model.frozen_reference()
    torch.manual_seed(1)
    with torch.no_grad():  # move the policy away from the reference
        for p in tiny_model.module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tiny_model.module.eval()
    return tiny_model, reference


def _inputs(policy, reference, pairs) -> LossInputs:
    with torch.no_grad():
        ref = reference.pair_logps(pairs)
    return LossInputs(policy=policy.pair_logps(pairs), reference=ref, pairs=pairs)


def test_avg_dpo_is_the_weighted_mean_of_two_dpo_losses(models) -> None:
    policy, reference = models
    pairs = [dataclasses.replace(p, extra_rejected=[f"A hazy {p.rejected[2:]}"]) for p in make_pairs(3, image_size=32)]
    swapped = [dataclasses.replace(p, rejected=p.extra_rejected[0], extra_rejected=[]) for p in pairs]
    inputs = _inputs(policy, reference, pairs)
    assert len(inputs.policy.extra_rejected) == 1 and len(inputs.reference.extra_rejected) == 1
    out = AvgDPOLoss(AvgDPOConfig(beta=0.5, gamma=0.3))(inputs)
    on_rejected = DPOLoss(DPOConfig(beta=0.5))(_inputs(policy, reference, [dataclasses.replace(p, extra_rejected=[]) for p in pairs]))
    on_extra = DPOLoss(DPOConfig(beta=0.5))(_inputs(policy, reference, swapped))
    expected = 0.3 * on_rejected.loss.item() + 0.7 * on_extra.loss.item()
    assert out.loss.item() == pytest.approx(expected, abs=1e-5)
    out.loss.backward()
    grads = [p.grad for p in policy.module.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_weighted_sum_trains_through_the_model(models) -> None:
    policy, reference = models
    pairs = make_pairs(2, image_size=32)
    cfg = WeightedSumConfig.model_validate(
        {"terms": [{"loss": {"name": "ipo"}, "weight": 0.5}, {"loss": {"name": "sft"}, "weight": 0.5}]}
    )
    out = WeightedSumLoss(cfg)(_inputs(policy, reference, pairs))
    out.loss.backward()
    assert out.loss.item() == pytest.approx(0.5 * out.metrics["ipo/loss"] + 0.5 * out.metrics["sft/loss"], rel=1e-6)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.module.parameters())
