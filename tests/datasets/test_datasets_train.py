"""Pairs from a published layout train: `mmalign run` with tiny-llava, the rlaif-v loader and DPO (a subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_fixtures import rlaif_v_file


@pytest.mark.slow
def test_rlaif_v_pairs_train_through_the_runner(tmp_path: Path, mmalign_cache: Path) -> None:
    data = rlaif_v_file(tmp_path / "RLAIF-V-Dataset_000.parquet", n=8)
    spec = {
        "name": "rlaif-v-tiny",
        "device": "cpu",
        "model": {"name": "tiny-llava"},
        "stages": [
            {
                "type": "align",
                "data": {"name": "rlaif-v", "config": {"path": str(data), "n_pairs": 6, "seed": 0}},
                "loss": {"name": "dpo"},
                "train": {"steps": 2, "batch_size": 2, "log_every": 1},
            }
        ],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "MMALIGN_CACHE": str(mmalign_cache), "MMALIGN_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "mmalign_core.cli", "run", str(tmp_path / "spec.json"), "--output-dir", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped rows by reason: {'bad_image': 1, 'empty_response': 1, 'identical': 1, 'missing_image': 1}" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    (stage,) = manifest["stages"]
    assert stage["status"] == "complete" and stage["steps"] == 2
    info = stage["data"]
    assert info["source"] == "datasets:rlaif-v" and info["n_examples"] == 6 and len(info["fingerprint"]) == 16
    stats = info["stats"]
    assert (stats["seed"], stats["n_pairs"], stats["pairs"], stats["pairs_available"], stats["records"]) == (0, 6, 6, 8, 12)
    assert stats["files"][0]["file"] == "RLAIF-V-Dataset_000.parquet" and stats["files"][0]["size"] == data.stat().st_size
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] == r["loss"] for r in rows)  # finite
