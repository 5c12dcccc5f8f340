"""The runner hands each step's batch to an online source together with the current policy."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from mmalign_core.protocols import Context
from mmalign_core.runner.training import StageData, run_training
from mmalign_core.spec_models import TrainSettings
from mmalign_core.types import ImageRef, PreferencePair
from mmalign_losses.config import DPOConfig
from mmalign_losses.dpo import DPOLoss


class SelfRanking:
    """A toy online source: the current policy orders two fixed answers (the one it prefers less is rejected)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, bool, bool]] = []

    def prepare_batch(self, pairs, model, ctx, step):
        from mmalign_core.types import GenerationRequest

        self.calls.append((step, len(pairs), model.module.training, torch.is_grad_enabled()))
        reqs = [GenerationRequest(p.prompt, p.images) for p in pairs]
        a = model.continuation_logprobs(reqs, [p.chosen for p in pairs])
        b = model.continuation_logprobs(reqs, [p.rejected for p in pairs])
        out = []
        for p, x, y in zip(pairs, a, b):
            if step == 1 and p.id.endswith("0"):
                continue  # dropped, e.g. a tie
            hi, lo = (p.chosen, p.rejected) if x >= y else (p.rejected, p.chosen)
            out.append(PreferencePair(id=p.id, prompt=p.prompt, chosen=lo, rejected=hi, images=p.images))
        return out, {"generated": len(pairs), "kept": len(out)}


def _train_online(model, src, tmp_path: Path, lr: float) -> list[dict]:
    """Three online-DPO steps of batch 4 over 8 pairs; the metrics rows."""
    import json

    img = ImageRef(Image.new("RGB", (48, 48), (10, 200, 30)), key="g")
    pairs = [PreferencePair(id=f"p{i}", prompt="Describe the image.", chosen="a green circle.", rejected="a red square.", images=[img])
             for i in range(8)]
    metrics = tmp_path / "m.jsonl"
    run_training(model=model, data=StageData(pairs, "pairs", online=src, online_ctx=Context()),
                 loss_fn=DPOLoss(DPOConfig()), loss_requires=frozenset({"reference", "rejected"}),
                 settings=TrainSettings(steps=3, batch_size=4, lr=lr, log_every=1, warmup_ratio=0.0),
                 stage_name="online", stage_dir=tmp_path, metrics_path=metrics, seed=0,
                 progress=lambda it, **k: it, log=lambda s: None, on_metrics=lambda *a: None)
    return [json.loads(x) for x in metrics.read_text().splitlines()]


def test_online_source_sees_current_policy_and_can_drop_pairs(tiny_model, tmp_path: Path) -> None:
    src = SelfRanking()
    rows = _train_online(tiny_model, src, tmp_path, lr=1e-3)
    assert [c[0] for c in src.calls] == [0, 1, 2]
    assert all(n == 4 and not training and not grad for _, n, training, grad in src.calls)
    assert [r["online/kept"] for r in rows] == [4, 3, 4]
    assert all(r["online/generated"] == 4 for r in rows)


class DropsStepOne(SelfRanking):
    def prepare_batch(self, pairs, model, ctx, step):
        out, stats = super().prepare_batch(pairs, model, ctx, step)
        if step == 1:
            return [], {"generated": len(pairs), "kept": 0}
        return out, stats


def test_a_step_with_no_pairs_makes_no_update_but_is_logged(tiny_model, tmp_path: Path) -> None:
    seen_weights = []
    src = DropsStepOne()
    original = src.prepare_batch

    def spy(batch, model, ctx, step):
        trainable = [p for p in model.module.parameters() if p.requires_grad]
        seen_weights.append(trainable[0].detach().clone())
        return original(batch, model, ctx, step)

    src.prepare_batch = spy
    rows = _train_online(tiny_model, src, tmp_path, lr=1e-2)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[1]["online/kept"] == 0 and rows[1]["skipped_steps"] == 1 and "loss" not in rows[1]
    assert "loss" in rows[0] and "loss" in rows[2]
    # A trainable weight moved at step 0, not at the skipped step 1.
    assert not torch.equal(seen_weights[0], seen_weights[1])
    assert torch.equal(seen_weights[1], seen_weights[2])
