"""Two CPU processes (gloo, launched by torchrun; accelerate underneath) train like one process on the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _failure(stderr: str) -> str:
    """What a failed torchrun printed: each rank's error lines first (the launcher's own traceback is long)."""
    errors = [line for line in stderr.splitlines() if "Error" in line or "error:" in line]
    return "\n".join(errors[:40]) + "\n---- tail ----\n" + stderr[-3000:]


def _torchrun(args: list[str], env: dict, out_dir: Path) -> subprocess.CompletedProcess:
    """``mmalign run`` under torchrun with two processes on a free port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", _free_port(),
           "-m", "mmalign_core.cli", "run", *args, "--output-dir", str(out_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _free_port() -> str:
    """A TCP port nobody listens on now (a fixed one can be held by a lingering process)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _spec() -> dict:
    return {
        "name": "ddp",
        "seed": 5,
        "device": "cpu",
        "model": {"name": "tiny-llava"},
        "stages": [
            {"type": "sft", "data": {"name": "shapes-sft", "config": {"n_examples": 64}},
             "train": {"steps": 2, "batch_size": 8, "micro_batch_size": 2, "lr": 1e-3, "log_every": 1, "group_by_length": True}},
            {"type": "align", "data": {"name": "shapes-pairs", "config": {"n_pairs": 32}},
             "loss": {"name": "dpo", "config": {"beta": 0.1}},
             "train": {"steps": 3, "batch_size": 4, "micro_batch_size": 1, "lr": 1e-3, "log_every": 1}},
        ],
    }


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path: Path, mmalign_cache: Path) -> None:
    from safetensors.torch import load_file

    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(_spec()))
    env = {**os.environ, "MMALIGN_CACHE": str(mmalign_cache), "OMP_NUM_THREADS": "1", "MMALIGN_PROGRESS": "0"}
    one = subprocess.run([sys.executable, "-m", "mmalign_core.cli", "run", str(spec), "--output-dir", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _torchrun([str(spec)], env, tmp_path / "two")
    assert two.returncode == 0, _failure(two.stderr)
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["processes"] == 2
    for stage in ("0-sft", "1-align"):
        a = load_file(str(tmp_path / "one" / "stages" / stage / "model" / "model.safetensors"))
        b = load_file(str(tmp_path / "two" / "stages" / stage / "model" / "model.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            # Summation order differs between one and two processes; Adam magnifies that float noise on
            # parameters with near-zero gradients, so weights agree to 1e-4 (one step moves them ~1e-3).
            diff = (a[k] - b[k]).abs().max().item()
            assert diff < 1e-4, f"{stage}: {k} differs by {diff:.3g}"
    rows_one = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    rows_two = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows_one) == len(rows_two) == 5  # metrics written once, by the main process
    for r1, r2 in zip(rows_one, rows_two):
        assert r1["loss"] == pytest.approx(r2["loss"], abs=1e-5)
        # Adam hides a wrong gradient scale from the weights; the synced gradient norm does not.
        assert r1["grad_norm"] == pytest.approx(r2["grad_norm"], rel=1e-4), (r1, r2)


@pytest.mark.slow
def test_offline_bdhs_is_generated_once_under_two_processes(tmp_path: Path, mmalign_cache: Path) -> None:
    """The main process generates (and caches) the offline BDHS answers; the other process reads them
    instead of generating and appending the same rows concurrently."""
    spec = {
        "name": "ddp-bdhs", "seed": 3, "device": "cpu", "model": {"name": "tiny-llava"},
        "stages": [{"type": "align", "loss": {"name": "dpo"},
                    "data": {"name": "bdhs", "config": {"base": {"name": "shapes-pairs", "config": {"n_pairs": 12}},
                                                        "embedder": {"name": "bag-of-words"}, "max_new_tokens": 8,
                                                        "max_new_tokens_full": 8, "chunk_pairs": 4}},
                    "train": {"steps": 1, "batch_size": 4, "lr": 1e-4, "log_every": 1}}],
    }
    path = tmp_path / "s.json"
    path.write_text(json.dumps(spec))
    # A fresh cache, so the BDHS answers are generated in this run.
    env = {**os.environ, "MMALIGN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "MMALIGN_PROGRESS": "0"}
    done = _torchrun([str(path)], env, tmp_path / "out")
    assert done.returncode == 0, _failure(done.stderr)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    stats = manifest["stages"][0]["data"]["stats"]
    rows = [json.loads(x) for x in Path(stats["dataset"]).read_text().splitlines()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == stats["pairs"] and 0 < len(ids) <= 12
    assert stats["generated_this_run"] == 12  # one generation pass, not one per process
