"""Kill and resume: metrics.jsonl is the uninterrupted run's, row for row, as are the weights (issue 14, part 4).

The logging window (log_every 3) does not line up with the checkpoints (every 4 steps), so the
first row after a resume averages steps from before and after the kill: it matches only when the
partial window travels in the checkpoint.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS, EVERY, LOG = 11, 4, 3


def _spec() -> dict[str, Any]:
    return {
        "name": "window", "seed": 5, "deterministic": True, "model": {"name": "tiny-llava"},
        "stages": [{"type": "align", "data": {"name": "shapes-pairs", "config": {"n_pairs": 24}}, "loss": {"name": "dpo"},
                    "train": {"steps": STEPS, "batch_size": 4, "micro_batch_size": 2, "lr": 1e-3, "log_every": LOG,
                              "checkpoint_every": EVERY}}],
    }


def _rows(run: Path) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if k != "examples_per_s"} for r in rows]  # wall-clock speed differs by nature


@pytest.mark.slow
def test_sigkill_between_log_rows_resumes_to_identical_metrics_and_weights(tmp_path: Path, mmalign_cache: Path) -> None:
    from safetensors.torch import load_file

    env = {**os.environ, "MMALIGN_CACHE": str(mmalign_cache), "MMALIGN_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(_spec()))
    cmd = [sys.executable, "-m", "mmalign_core.cli", "run", str(spec), "--output-dir"]
    straight = tmp_path / "straight"
    ok = subprocess.run([*cmd, str(straight)], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    marker = killed / "stages" / "0-align" / "checkpoints" / f"step-{EVERY:07d}" / "trainer_state.pt"
    deadline = time.time() + 300
    while not marker.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.is_file(), "the run never reached its first checkpoint"
    assert not (killed / "stages" / "0-align" / "done.json").exists(), "the run finished before it could be killed"

    resumed = subprocess.run([*cmd, str(killed), "--resume"], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step-" in resumed.stdout
    expected = _rows(straight)
    assert [r["step"] for r in expected] == [3, 6, 9, 11]
    assert _rows(killed) == expected  # exact floats: the row after the kill averages steps on both sides of it
    a, b = load_file(str(straight / "stages" / "0-align" / "model" / "model.safetensors")), load_file(
        str(killed / "stages" / "0-align" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert len(json.loads((killed / "manifest.json").read_text())["resumed"]) == 1
