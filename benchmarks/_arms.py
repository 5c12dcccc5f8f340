"""Shared helper of the benchmark scripts: run one arm in its own process (so peak RSS is its own)."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def run_arm(script: str, arm: str, threads: int) -> dict:
    """Re-run ``script`` with ``--arm ARM`` and this process's arguments; return the JSON it prints last."""
    cmd = [sys.executable, script, "--arm", arm] + [a for a in sys.argv[1:] if a != "--arm"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MMALIGN_PROGRESS": "0", "TQDM_DISABLE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"arm {arm} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
