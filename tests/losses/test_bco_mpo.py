"""BCO-pair against its formula with a running shift, the MPO preset, and its exact resume."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mmalign_core.protocols import LossInputs, PairLogps
from mmalign_core.runner.training import StageData, component_states, run_training
from mmalign_core.spec_models import TrainSettings
from mmalign_core.testing import make_pairs
from mmalign_losses.bco import BCOPairLoss
from mmalign_losses.config import BCOPairConfig, MPOConfig, WeightedSumConfig
from mmalign_losses.weighted import WeightedSumLoss


def _inputs(pc, pr, rc, rr) -> LossInputs:
    n = torch.ones(len(pc))
    pol = PairLogps(chosen=torch.tensor(pc), rejected=torch.tensor(pr), chosen_tokens=n, rejected_tokens=n)
    ref = PairLogps(chosen=torch.tensor(rc), rejected=torch.tensor(rr), chosen_tokens=n, rejected_tokens=n)
    return LossInputs(policy=pol, reference=ref, pairs=[])


BATCHES = [([-1.0, -2.0], [-3.0, -2.5], [-1.5, -2.2], [-2.0, -2.4]),
           ([-0.5, -4.0], [-1.0, -3.0], [-0.9, -3.1], [-1.8, -2.0]),
           ([-2.0, -1.0], [-2.0, -6.0], [-2.5, -1.1], [-1.0, -5.0])]


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_bco_pair_shifts_rewards_by_the_running_mean_of_batch_means() -> None:
    beta = 0.5
    loss = BCOPairLoss(BCOPairConfig(beta=beta))
    means: list[float] = []
    for pc, pr, rc, rr in BATCHES:
        out = loss(_inputs(pc, pr, rc, rr))
        r_c = [beta * (a - b) for a, b in zip(pc, rc)]
        r_r = [beta * (a - b) for a, b in zip(pr, rr)]
        means.append(sum(r_c + r_r) / 4)
        delta = sum(means) / len(means)
        expected = sum(-math.log(_sig(c - delta)) - math.log(_sig(-(r - delta))) for c, r in zip(r_c, r_r)) / 2
        assert out.loss.item() == pytest.approx(expected, rel=1e-6)
        assert out.metrics["delta"] == pytest.approx(delta, abs=1e-6)  # float32 rewards


def test_bco_state_round_trips() -> None:
    a = BCOPairLoss(BCOPairConfig())
    for batch in BATCHES[:2]:
        a(_inputs(*batch))
    b = BCOPairLoss(BCOPairConfig())
    b.load_state_dict(a.state_dict())
    assert a(_inputs(*BATCHES[2])).loss.item() == b(_inputs(*BATCHES[2])).loss.item()


def test_mpo_is_the_weighted_sum_of_dpo_bco_and_sft() -> None:
    cfg = MPOConfig()
    assert [(t.loss.name, t.weight) for t in cfg.terms] == [("losses:dpo", 0.8), ("losses:bco-pair", 0.2), ("losses:sft", 1.0)]
    out = WeightedSumLoss(cfg)(_inputs(*BATCHES[0]))
    expected = 0.8 * out.metrics["dpo/loss"] + 0.2 * out.metrics["bco/loss"] + out.metrics["sft/loss"]
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert "bco/delta" in out.metrics


def test_a_weighted_sum_forwards_its_stateful_terms() -> None:
    mpo = WeightedSumLoss(MPOConfig())
    mpo(_inputs(*BATCHES[0]))
    state = component_states({"loss": mpo})["loss"]
    assert set(state) == {"bco"} and state["bco"]["count"] == 1
    fresh = WeightedSumLoss(MPOConfig())
    fresh.load_state_dict(state)
    assert fresh(_inputs(*BATCHES[1])).metrics["bco/delta"] == mpo(_inputs(*BATCHES[1])).metrics["bco/delta"]
    plain = WeightedSumLoss(WeightedSumConfig())
    assert plain.state_dict() == {}
    with pytest.raises(Exception, match="bco"):
        WeightedSumLoss(MPOConfig()).load_state_dict({})


class _Interrupt(Exception):
    pass


def _train(model, loss, stage: Path, stop_after: int | None = None) -> None:
    calls = {"n": 0}

    def loss_fn(inputs):
        calls["n"] += 1
        if stop_after is not None and calls["n"] > stop_after:
            raise _Interrupt()
        return loss(inputs)

    settings = TrainSettings(steps=6, batch_size=4, micro_batch_size=2, lr=1e-3, warmup_ratio=0.0, log_every=1, checkpoint_every=3)
    run_training(model=model, data=StageData(make_pairs(12, image_size=32), "pairs"), loss_fn=loss_fn,
                 loss_requires=frozenset({"reference", "rejected"}), settings=settings, stage_name="mpo", stage_dir=stage,
                 metrics_path=stage / "metrics.jsonl", seed=0, progress=lambda it, **k: it, log=lambda s: None,
                 on_metrics=lambda *a: None, stateful={"loss": loss})


@pytest.mark.slow
def test_mpo_resumes_with_the_running_shift_exactly(tiny_dir: Path, tmp_path: Path) -> None:
    from mmalign_tiny.model import load_tiny_llava

    torch.manual_seed(0)
    straight = tmp_path / "straight"
    model_a = load_tiny_llava(tiny_dir)
    _train(model_a, WeightedSumLoss(MPOConfig()), straight)
    broken = tmp_path / "broken"
    torch.manual_seed(0)
    with pytest.raises(_Interrupt):
        _train(load_tiny_llava(tiny_dir), WeightedSumLoss(MPOConfig()), broken, stop_after=7)  # dies in step 4 (2 micro-batches a step)
    torch.manual_seed(0)
    model_b = load_tiny_llava(tiny_dir)
    _train(model_b, WeightedSumLoss(MPOConfig()), broken)

    def deltas(stage: Path) -> dict[int, float]:
        return {r["step"]: r["bco/delta"] for r in map(json.loads, (stage / "metrics.jsonl").read_text().splitlines())}

    assert deltas(broken) == deltas(straight) and len(deltas(straight)) == 6
    for (name, a), b in zip(model_a.module.state_dict().items(), model_b.module.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after the resume"


def test_without_the_shift_in_the_checkpoint_the_resume_would_differ(tiny_dir: Path, tmp_path: Path) -> None:
    """The check above can fail: a resumed BCO whose running mean restarts at zero logs other deltas."""
    loss = WeightedSumLoss(MPOConfig())
    loss(_inputs(*BATCHES[0]))
    restarted = WeightedSumLoss(MPOConfig())
    assert loss(_inputs(*BATCHES[1])).metrics["bco/delta"] != restarted(_inputs(*BATCHES[1])).metrics["bco/delta"]
