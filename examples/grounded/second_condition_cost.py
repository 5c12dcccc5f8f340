"""What the second (corrupted) image condition costs per training step on the tiny LLaVA (CPU).

Trains the same pairs for a few steps with dpo, mdpo (naive: chosen under m'), mdpo (consistent: chosen and
rejected under m') and tpo (per-token, chosen and rejected under m', no prefix sharing), and prints the
median seconds per optimizer step (first step left out); the cases run in rotation ``--repeats`` times and
the smallest median counts, which damps other processes' load on a shared machine. Usage::

    OMP_NUM_THREADS=1 .venv/bin/python examples/grounded/second_condition_cost.py [--steps 8] [--batch 4] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mmalign_core.manager import get_plugins
from mmalign_core.runner.training import StageData, run_training
from mmalign_core.spec_models import TrainSettings
from mmalign_core.testing import make_pairs
from mmalign_tiny.config import TinyLlavaConfig
from mmalign_tiny.model import ensure_built, load_tiny_llava

CASES = [
    ("dpo", {}),
    ("mdpo", {"variant": "naive"}),
    ("mdpo", {"variant": "consistent"}),
    ("tpo", {}),
]


def step_seconds(name: str, config: dict, steps: int, batch: int, image_size: int) -> float:
    plugins = get_plugins()
    entry = plugins.resolve("loss", name)
    torch.manual_seed(0)
    model = load_tiny_llava(ensure_built(TinyLlavaConfig()))
    loss = entry.build(config)
    times: list[float] = []
    last = [time.perf_counter()]

    def on_metrics(step: int, row: dict) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    with tempfile.TemporaryDirectory() as tmp:
        settings = TrainSettings(steps=steps, batch_size=batch, lr=1e-4, warmup_ratio=0.0, log_every=1)
        last[0] = time.perf_counter()
        run_training(model=model, data=StageData(make_pairs(batch * steps, image_size=image_size), "pairs"), loss_fn=loss,
                     loss_requires=entry.requires, settings=settings, stage_name="cost", stage_dir=Path(tmp),
                     metrics_path=Path(tmp) / "m.jsonl", seed=0, progress=lambda it, **k: it, log=lambda s: None,
                     on_metrics=on_metrics)
    return statistics.median(times[1:])  # the first step includes warm-up


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    best = [math.inf] * len(CASES)
    for _ in range(args.repeats):
        for k, (name, config) in enumerate(CASES):
            s = step_seconds(name, config, args.steps, args.batch, args.image_size)
            best[k] = min(best[k], s)
            print(json.dumps({"loss": name, **config, "median_s_per_step": round(s, 4)}), flush=True)
    rows = [{"loss": name, **config, "s_per_step": round(b, 4)} for (name, config), b in zip(CASES, best)]
    base = rows[0]["s_per_step"]
    for r in rows:
        print(f"{r['loss']:5s} {r.get('variant', ''):10s} {r['s_per_step']:.4f} s/step  x{r['s_per_step'] / base:.2f} of dpo")


if __name__ == "__main__":
    main()
