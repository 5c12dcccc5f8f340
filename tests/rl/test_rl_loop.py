"""The shared RL loop with GRPO, RLOO and PPO on the tiny LLaVA: it trains, logs, and resumes exactly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmalign_rl.algorithms import GRPO, PPO, RLOO
from mmalign_rl.config import GRPOConfig, PPOConfig, RLOOConfig
from rl_helpers import lora_state, stage


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_grpo_trains_logs_rollouts_and_metrics(tiny_model, tmp_path: Path) -> None:
    st = stage(tiny_model, tmp_path, steps=2)
    out = GRPO(GRPOConfig(beta=0.04)).train(st)
    assert out["steps"] == 2 and out["examples_seen"] == 16
    after = lora_state(tiny_model)
    assert any(float(v.abs().sum()) > 0 for k, v in after.items() if "lora_B" in k)  # the adapters moved from zero
    metrics = _rows(tmp_path / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    for key in ("reward/mean", "reward/std", "kl", "entropy", "clip_fraction", "response_length", "loss", "kl_term", "lr"):
        assert key in metrics[0], key
    rows = _rows(tmp_path / "data" / "rl" / "rollouts.jsonl")
    assert len(rows) == 16 and {r["step"] for r in rows} == {0, 1}
    # The logged advantages are the group-normalised logged rewards.
    for step in (0, 1):
        for g in (0, 1):
            grp = [r for r in rows if r["step"] == step and r["group"] == g]
            rewards = torch.tensor([r["reward"] for r in grp])
            want = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
            assert [r["advantage"] for r in grp] == pytest.approx(want.tolist(), abs=1e-5)
            # The logged ids are the tokens each response was trained as (the sampled ones where they are remembered).
            assert all(tiny_model.answer_tokens(r["response"]) == r["response_ids"] for r in grp)
    assert sum(len(r["response_ids"]) <= 6 for r in rows) >= len(rows) // 2
    pairs = _rows(tmp_path / "data" / "rl" / "pairs.jsonl")
    assert pairs and all(p["meta"]["chosen_reward"] > p["meta"]["rejected_reward"] for p in pairs)


def test_rloo_and_ppo_run_and_log_their_metrics(tiny_model, tmp_path: Path) -> None:
    out = RLOO(RLOOConfig()).train(stage(tiny_model, tmp_path / "rloo", steps=1))
    assert out["steps"] == 1
    m = _rows(tmp_path / "rloo" / "metrics.jsonl")[0]
    assert "rloo/reward_with_kl" in m and "kl" in m
    from mmalign_tiny.model import load_tiny_llava

    ppo = PPO(PPOConfig(epochs=2))
    model = load_tiny_llava(Path(tiny_model.name_or_path)) if Path(str(tiny_model.name_or_path)).is_dir() else tiny_model
    ppo.train(stage(model, tmp_path / "ppo", steps=2, batch_size=4))
    m = _rows(tmp_path / "ppo" / "metrics.jsonl")
    assert all("value_loss" in r and "kl_coef" in r and "value_clip_fraction" in r for r in m)
    assert m[1]["kl_coef"] != m[0]["kl_coef"]  # the adaptive controller moved
    assert ppo.head is not None and float(ppo.head.linear.bias.detach().abs()) > 0  # the value head trained


class Crash(RuntimeError):
    pass


class CrashingGRPO(GRPO):
    """GRPO that raises after step ``at`` was logged and applied but before it was checkpointed."""

    def __init__(self, config, at: int):
        super().__init__(config)
        self.at, self.count = at, 0

    def after_step(self, batch, metrics):
        out = super().after_step(batch, metrics)
        self.count += 1
        if self.count == self.at + 1:
            raise Crash("simulated crash")
        return out


@pytest.mark.parametrize("norm", ["running"])
def test_resume_after_a_crash_replays_logged_rollouts_and_matches_an_uninterrupted_run(tiny_dir: Path, tmp_path: Path, norm) -> None:
    from mmalign_tiny.model import load_tiny_llava

    cfg = GRPOConfig(beta=0.1, epochs=2, normalization={"mode": norm})
    torch.manual_seed(0)
    straight = load_tiny_llava(tiny_dir)
    GRPO(cfg).train(stage(straight, tmp_path / "straight", steps=5, every=2, batch_size=4))
    want = lora_state(straight)

    torch.manual_seed(0)
    first = load_tiny_llava(tiny_dir)
    with pytest.raises(Crash):
        CrashingGRPO(cfg, at=3).train(stage(first, tmp_path / "killed", steps=5, every=2, batch_size=4))
    log = tmp_path / "killed" / "data" / "rl" / "rollouts.jsonl"
    assert sorted({r["step"] for r in _rows(log)}) == [0, 1, 2, 3]
    torch.manual_seed(123)  # a resumed process starts from another RNG state; the checkpoint restores it
    resumed = load_tiny_llava(tiny_dir)
    algo = GRPO(cfg)
    calls = []
    import mmalign_rl.loop as loop

    real = loop.sample
    loop.sample = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        algo.train(stage(resumed, tmp_path / "killed", steps=5, every=2, batch_size=4))
    finally:
        loop.sample = real
    assert len(calls) == 1  # steps 2 and 3 came from the log, only step 4 was sampled
    metrics = _rows(tmp_path / "killed" / "metrics.jsonl")
    assert {m["step"]: m["reused"] for m in metrics if m["step"] > 2} == {3: 1.0, 4: 1.0, 5: 0.0}
    got = lora_state(resumed)
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    straight_metrics = {m["step"]: m for m in _rows(tmp_path / "straight" / "metrics.jsonl")}
    resumed_metrics = {m["step"]: m for m in metrics}  # the last row of each step wins (the runner truncates; this test does not)
    for step in range(1, 6):
        for key in ("reward/mean", "kl", "loss", "clip_fraction"):
            assert resumed_metrics[step][key] == pytest.approx(straight_metrics[step][key], abs=1e-6), (step, key)
