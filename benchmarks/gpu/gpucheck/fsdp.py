"""Part ``fsdp``: ``mmalign run`` under ``accelerate launch`` with the shipped FSDP config, one process.

A DPO stage on a ~1B-shaped tiny-llava (sizes from the profile), with a checkpoint every
``checkpoint_every`` steps. The first launch ends hard right after step ``crash_after`` (a checkpoint
precedes it); the second launch resumes with ``--resume`` and must continue from that checkpoint, re-run
the steps logged after it with the same losses, and finish the stage. ``fsdp_entry.py`` records what
accelerate set up (distributed type, world size, FSDP version) and whether the training loop wraps the
model at all. On CPU (the dry run) accelerate reports MULTI_CPU: only the launch, checkpoint and resume
are checked there.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .paths import REPO
from .record import Recorder
from .sizes import Profile

CONFIG = REPO / "examples" / "accelerate" / "fsdp-gpus.yaml"
ENTRY = Path(__file__).resolve().parents[1] / "fsdp_entry.py"
STAGE = "align"
LOSS_RTOL = 1e-3


def spec(profile: Profile, cache: Path) -> dict[str, Any]:
    s = profile.fsdp
    return {
        "name": "gpu-check-fsdp",
        "seed": 0,
        "device": "cuda" if profile.device.startswith("cuda") else "cpu",
        "dtype": s.dtype,
        "model": {"name": "tiny-llava", "config": {
            "hidden_size": s.hidden, "num_layers": s.layers, "num_heads": s.heads, "num_kv_heads": s.kv_heads,
            "intermediate_size": s.intermediate, "vocab_size": s.vocab, "cache_dir": str(cache)}},
        "stages": [{
            "type": "align",
            "data": {"name": "shapes-pairs", "config": {"n_pairs": max(16, s.batch * s.steps)}},
            "loss": {"name": "dpo", "config": {"beta": 0.1}},
            "train": {"steps": s.steps, "batch_size": s.batch, "lr": 1e-5, "log_every": 1, "checkpoint_every": s.checkpoint_every},
        }],
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_command(facts: Path, cli: list[str], crash_after: int = 0) -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG), "--num_processes", "1",
           "--main_process_port", str(_free_port()), str(ENTRY), "--facts", str(facts)]
    if crash_after:
        cmd += ["--crash-after", str(crash_after)]
    return cmd + ["--", *cli]


def launch(cmd: list[str], log: Path, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    t = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc = None
    text = log.read_text(errors="replace")
    return {"returncode": rc, "timed_out": rc is None, "seconds": round(time.perf_counter() - t, 2), "output_tail": text[-3000:],
            "_text": text}


def rows(run_dir: Path) -> dict[int, dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if row.get("stage") == STAGE:
                out[int(row["step"])] = row
    return out


def _facts(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run(profile: Profile, rec: Recorder, scratch: Path) -> None:
    s = profile.fsdp
    root = scratch / "fsdp"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    run_dir, cache = root / "run", root / "cache"
    spec_path = root / "spec.json"
    spec_path.write_text(json.dumps(spec(profile, cache), indent=1))
    env = {**os.environ, "MMALIGN_CACHE": str(cache), "MMALIGN_PROGRESS": "0", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    stage_dir = run_dir / "stages" / f"0-{STAGE}"
    state: dict[str, Any] = {}
    gpu = profile.device.startswith("cuda")
    if not CONFIG.is_file():
        raise FileNotFoundError(f"the shipped accelerate config {CONFIG} is missing")

    def build() -> dict[str, Any]:
        """The model folder, built here once (both launches then load it from the cache): its cost shows apart."""
        from mmalign_tiny.config import TinyLlavaConfig
        from mmalign_tiny.model import ensure_built

        cfg = TinyLlavaConfig.model_validate(spec(profile, cache)["model"]["config"])
        folder = ensure_built(cfg)
        return {"folder": str(folder), "mib": round(_size(folder) / 2**20, 1)}

    def first() -> dict[str, Any]:
        cmd = launch_command(root / "facts-1.json", ["run", str(spec_path), "--output-dir", str(run_dir)], s.crash_after)
        res = launch(cmd, root / "launch-1.log", rec.time_left() * 0.6, env)
        facts = _facts(root / "facts-1.json")
        state["before"] = rows(run_dir)
        ckpts = sorted(p.name for p in (stage_dir / "checkpoints").glob("step-*")) if (stage_dir / "checkpoints").is_dir() else []
        res.pop("_text")
        res.update(facts=facts, steps_logged=sorted(state["before"]), checkpoints=ckpts,
                   checkpoint_mib=round(_size(stage_dir / "checkpoints") / 2**20, 1), command=cmd)
        for key in ("distributed_type", "num_processes", "fsdp_version", "mixed_precision", "loop_wraps_model"):
            rec.figure(key, facts.get(key))
        rec.figure("peak_gib_first_launch", facts.get("peak_gib"))
        rec.check("fsdp: the first launch stopped right after its crash step", facts.get("crashed_at_step") == s.crash_after
                  and not (stage_dir / "done.json").exists(), crashed_at_step=facts.get("crashed_at_step"), returncode=res["returncode"])
        rec.check("fsdp: a checkpoint was saved before the crash", bool(ckpts), checkpoints=ckpts)
        if gpu:
            rec.check("fsdp: accelerate set up FSDP", facts.get("distributed_type") == "FSDP", distributed_type=facts.get("distributed_type"),
                      fsdp_version=facts.get("fsdp_version"))
            rec.check("fsdp: the training loop shards the model (world size 1)", bool(facts.get("loop_wraps_model")),
                      wrapped_type=facts.get("wrapped_type"),
                      note="Dist.prepare leaves the model unwrapped when there is one process")
        return res

    def resume() -> dict[str, Any]:
        cmd = launch_command(root / "facts-2.json", ["run", str(spec_path), "--output-dir", str(run_dir), "--resume"])
        res = launch(cmd, root / "launch-2.log", rec.time_left() - 2, env)
        text = res.pop("_text")
        facts = _facts(root / "facts-2.json")
        after = rows(run_dir)
        found = re.search(r"resuming from step-(\d+)", text)
        resumed_from = int(found.group(1)) if found else None
        before = state.get("before", {})
        overlap = sorted(k for k in before if resumed_from is not None and k > resumed_from and k in after)
        diffs = {k: abs(before[k]["loss"] - after[k]["loss"]) / max(abs(before[k]["loss"]), 1e-12) for k in overlap}
        equal = bool(overlap) and all(d <= LOSS_RTOL for d in diffs.values())
        done = (stage_dir / "done.json").is_file()
        res.update(facts=facts, resumed_from_step=resumed_from, steps_logged=sorted(after), loss_rel_diff=diffs, done=done,
                   final_model=(stage_dir / "model").is_dir(), command=cmd)
        rec.figure("resumed_from_step", resumed_from)
        rec.figure("resume_loss_equal", equal if overlap else None)
        rec.figure("peak_gib_resume", facts.get("peak_gib"))
        last = after.get(s.steps, {})
        rec.figure("examples_per_s", last.get("examples_per_s"))
        rec.check("fsdp: the second launch resumed from the checkpoint", res["returncode"] == 0 and resumed_from is not None,
                  returncode=res["returncode"], resumed_from=resumed_from)
        rec.check("fsdp: steps after the checkpoint repeat with the same loss", equal, loss_rel_diff=diffs, tolerance=LOSS_RTOL)
        rec.check("fsdp: the resumed stage finished and saved its model", done and sorted(after) == list(range(1, s.steps + 1)),
                  steps_logged=sorted(after), done=done)
        return res

    if rec.step("build model", build) is None:
        return
    if rec.step("crash after a checkpoint", first) is None:
        return
    rec.step("resume", resume)
