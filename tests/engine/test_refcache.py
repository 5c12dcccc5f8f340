"""Reference log-probs cached on disk: same training, no reference model on a hit."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmalign_core.runner.training import StageData, run_training
from mmalign_core.spec_models import LoraSettings, TrainSettings
from mmalign_core.types import ImageRef, PreferencePair
from mmalign_losses.config import DPOConfig
from mmalign_losses.dpo import DPOLoss


def _pairs(n: int = 12) -> list[PreferencePair]:
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    return [
        PreferencePair(
            id=f"p{i}", prompt="Describe the image.", chosen=f"a {['red', 'green', 'blue'][i % 3]} circle.",
            rejected=f"a {['red', 'green', 'blue'][i % 3]} circle and a yellow square{'s' * (i % 2)}.",
            images=[ImageRef(Image.new("RGB", (48, 48), colours[i % 3]), key=f"c{i % 3}")],
        )
        for i in range(n)
    ]


def _train(model, tmp: Path, cache: bool, lora: bool = False, steps: int = 3) -> list[dict]:
    torch.manual_seed(0)
    settings = TrainSettings(steps=steps, batch_size=4, micro_batch_size=2, lr=1e-3, warmup_ratio=0.0, log_every=1,
                             cache_reference=cache, lora=LoraSettings(r=4, alpha=8, dropout=0.0) if lora else None)
    metrics = tmp / f"m-{cache}-{lora}.jsonl"
    metrics.unlink(missing_ok=True)
    run_training(model=model, data=StageData(_pairs(), "pairs"), loss_fn=DPOLoss(DPOConfig(beta=0.1)),
                 loss_requires=frozenset({"reference", "rejected"}), settings=settings, stage_name="t", stage_dir=tmp,
                 metrics_path=metrics, seed=0, progress=lambda it, **k: it, log=lambda s: None,
                 on_metrics=lambda *a: None, data_fingerprint="fixture-v1", cache_dir=tmp / "cache")
    return [json.loads(x) for x in metrics.read_text().splitlines()]


@pytest.mark.parametrize("lora", [False, True])
def test_cached_reference_trains_like_live_reference(tiny_dir: Path, tmp_path: Path, lora: bool) -> None:
    from mmalign_tiny.model import load_tiny_llava

    live = _train(load_tiny_llava(tiny_dir), tmp_path, cache=False, lora=lora)
    cached = _train(load_tiny_llava(tiny_dir), tmp_path, cache=True, lora=lora)
    assert len(live) == len(cached) == 3
    for a, b in zip(live, cached):
        for k in ("loss", "rewards/margin", "rewards/chosen", "rewards/rejected"):
            assert a[k] == pytest.approx(b[k], abs=1e-5), k
    assert list((tmp_path / "cache" / "ref-logps").glob("*.pt"))


def test_cache_hit_never_builds_the_reference(tiny_dir: Path, tmp_path: Path) -> None:
    from mmalign_tiny.model import load_tiny_llava

    first = _train(load_tiny_llava(tiny_dir), tmp_path, cache=True)
    model = load_tiny_llava(tiny_dir)

    def forbidden():
        raise AssertionError("the reference must not be built on a cache hit")

    model.frozen_reference = forbidden
    again = _train(model, tmp_path, cache=True)
    assert [r["loss"] for r in again] == pytest.approx([r["loss"] for r in first], abs=1e-7)


def test_cache_key_follows_weights_and_data(tiny_dir: Path) -> None:
    from mmalign_core.runner.refcache import cache_key
    from mmalign_tiny.model import load_tiny_llava

    m = load_tiny_llava(tiny_dir)
    pairs = _pairs()
    k = cache_key(m.fingerprint(), "d1", pairs, True)
    assert k == cache_key(m.fingerprint(), "d1", pairs, True)
    assert k != cache_key(m.fingerprint(), "d2", pairs, True)
    assert k != cache_key(m.fingerprint(), "d1", pairs[:-1], True)
    with torch.no_grad():
        next(m.model.parameters()).add_(1e-3)
    assert k != cache_key(m.fingerprint(), "d1", pairs, True)
