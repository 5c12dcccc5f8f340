"""Whole runs through the CLI in a subprocess: offline BDHS combined with the external rejected answer
(avg-dpo), online BDHS, and POVID-style distortion with its loss, on the tiny random LLaVA."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BASE = {"name": "shapes-pairs", "config": {"n_pairs": 16, "mode": "swap"}}
FAST = {"embedder": {"name": "bag-of-words"}, "n_bdhs": 2, "max_new_tokens": 12, "max_new_tokens_full": 16}
TRAIN = {"steps": 2, "batch_size": 4, "log_every": 1}


def test_avg_dpo_online_and_povid_runs(tmp_path: Path, mmalign_cache: Path) -> None:
    spec = {
        "name": "bdhs-e2e",
        "seed": 0,
        "device": "cpu",
        "model": {"name": "tiny-llava", "config": {"cache_dir": str(mmalign_cache / "tiny")}},
        "stages": [
            {"type": "align", "name": "offline-avg", "data": {"name": "bdhs", "config": {"base": BASE, **FAST, "combine": "extra"}},
             "loss": {"name": "avg-dpo", "config": {"gamma": 0.5}}, "train": TRAIN},
            {"type": "align", "name": "online", "data": {"name": "bdhs-online", "config": {"base": BASE, **FAST, "variant": "noise"}},
             "loss": {"name": "dpo"}, "train": TRAIN},
            {"type": "align", "name": "povid", "data": {"name": "povid-distortion", "config": {"base": BASE}},
             "loss": {"name": "povid-dpo"}, "train": TRAIN},
        ],
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "MMALIGN_CACHE": str(mmalign_cache), "MMALIGN_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "mmalign_core.cli", "run", str(path), "--output-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    stages = {s["name"]: s for s in manifest["stages"]}
    offline = stages["offline-avg"]["data"]
    assert offline["source"] == "bdhs:bdhs" and offline["n_examples"] == 16
    assert {"nonsimilar_after_1", "nonsimilar_after_2", "iterations_mean", "dataset"} <= set(offline["stats"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    avg = [r for r in rows if r["stage"] == "offline-avg"]
    assert len(avg) == 2 and all("rewards/extra_margin" in r and "loss/extra_rejected" in r for r in avg)
    online = [r for r in rows if r["stage"] == "online"]
    assert all("online/nonsimilar_after_1" in r and "online/iterations_mean" in r for r in online)
    povid = [r for r in rows if r["stage"] == "povid"]
    assert all("loss/distorted" in r and "rewards/distorted_margin" in r for r in povid)
    # the offline dataset is in the canonical format: the datasets plugin's 'local' source reads it back
    dataset = Path(offline["stats"]["dataset"])
    first = json.loads(dataset.read_text().splitlines()[0])
    assert set(first) >= {"id", "prompt", "chosen", "rejected", "images", "extra_rejected", "meta"} and len(first["extra_rejected"]) == 1
    assert (dataset.parent / first["images"][0]).is_file()
